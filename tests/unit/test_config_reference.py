"""The one configuration table and everything derived from it: the docs'
reference (docs/configuration.md), the deploy state's defaults.yaml, the
example config, the sandbox's."""

import pathlib
import re

import pytest
import yaml

from saltcd import config, rollout, vocabulary
from saltcd.config import container_spec
from saltcd.config import reference as config_reference
from saltcd.ingress import registry_events
from sandbox import layout

ROOT = pathlib.Path(__file__).parents[2]
FIX = "run `.venv/bin/python -m saltcd.config.reference` and commit the result"


def test_docs_table_is_generated_from_the_table():
    page = (ROOT / config_reference.PAGE).read_text()
    assert config_reference.page_with_table(page) == page, FIX


def test_docs_table_check_compares_the_table():
    """A row edited by hand (or a key added to KEYS without regenerating) is caught."""
    page = (ROOT / config_reference.PAGE).read_text()
    first_key = f"| `{config.KEYS[0].path}` |"
    assert first_key in page
    edited = page.replace(first_key, "| `renamed_by_hand` |", 1)
    assert config_reference.page_with_table(edited) != edited


def test_state_defaults_are_generated_from_the_table():
    assert (ROOT / config_reference.STATE_DEFAULTS).read_text() == config_reference.defaults_yaml(), FIX


def test_state_defaults_are_what_an_app_without_those_keys_deploys(raw_config):
    """The hand-applied state and a rollout agree on every default the state reads."""
    raw_config["apps"]["api"]["environments"]["prod"] = {"target": "p*"}
    digest = "sha256:" + "1" * 64
    for env in ("dev", "prod"):
        pillar = config.load(raw_config).deployment("api", env).pillar(digest)["saltcd"]
        # A rollout's containers carry the spec's label; a hand-applied state's none.
        assert pillar["options"] == container_spec.with_label({}, pillar["spec"])
        pillar["options"] = {}
        assert {k: pillar[k] for k in config.STATE_KEYS} == config_reference.state_defaults()


def _example(opened):
    text = (ROOT / "config.example.yaml").read_text()
    if opened:  # `# key: value` lines are keys the example shows switched off
        text = re.sub(r"(?m)^(\s*)# (\s*[a-z0-9_.-]+:(?: |$))", r"\1\2", text)
    return text, yaml.safe_load(text)["saltcd"]


def _covered(node, parts):
    if not parts:
        return True
    if not isinstance(node, dict):
        return False
    head, rest = parts[0], parts[1:]
    if head.startswith("<"):
        return any(_covered(child, rest) for child in node.values())
    return head in node and _covered(node[head], rest)


@pytest.mark.parametrize("opened", [False, True])
def test_example_config_is_valid(opened):
    assert config.load(_example(opened)[1]).deployments()


def test_example_config_shows_every_key():
    _, raw = _example(opened=True)
    missing = [k.path for k in config.KEYS if not _covered(raw, k.path.split("."))]
    assert not missing, f"config.example.yaml lacks {missing} (set, or as `# key: value`)"


def test_choices_listed_in_the_example_are_the_table_s():
    text, _ = _example(opened=False)
    for key in config.KEYS:
        choices = getattr(key.check, "choices", None)
        listed = re.search(rf"(?m)^\s*{key.name}: .*# (\w[\w-]*(?: \| \w[\w-]*)+)", text)
        if choices and listed:
            assert listed.group(1).split(" | ") == list(choices), key.path


def test_formats_and_failure_policies_come_from_their_registries(raw_config):
    """The names config accepts (vocabulary) are exactly the formats the ingress
    parses (registry_events.PARSERS) and the policies a rollout runs
    (rollout.FAILURE_POLICIES)."""
    raw_config["sources"]["registry"]["format"] = "gitlab"
    with pytest.raises(config.ConfigError,
                       match=r"sources:registry:format: must be one of \('distribution', 'dockerhub'\)"):
        config.load(raw_config)
    raw_config["sources"]["registry"]["format"] = "distribution"
    raw_config["apps"]["web"]["environments"]["dev"]["on_failure"] = "retry"
    with pytest.raises(config.ConfigError,
                       match=r"environments:dev:on_failure: must be one of \('rollback', 'pause', 'continue'\)"):
        config.load(raw_config)
    assert list(registry_events.PARSERS) == list(vocabulary.REGISTRY_EVENT_FORMATS) == ["distribution", "dockerhub"]
    assert list(rollout.FAILURE_POLICIES) == list(vocabulary.FAILURE_POLICIES) == ["rollback", "pause", "continue"]


def test_every_key_has_a_check_and_a_meaning():
    for key in config.KEYS:
        assert callable(key.check) and key.meaning, key.path
    assert len({k.path for k in config.KEYS}) == len(config.KEYS)


def test_sandbox_configs_validate():
    """The lab and the sandbox build their configs through sandbox/layout.py."""
    apps = {"web": layout.app_config("127.0.0.1:5000/saltcd/web", 18080, on_failure="pause"),
            **layout.bench_apps("127.0.0.1:5000", ["dev-1", "dev-2", "dev-3"])}
    raw = layout.saltcd_config("127.0.0.1:5000", apps, "t" * 32, push_secret="p" * 32)
    settings = config.load(raw)
    assert settings.deployment("web", "qa").on_failure == "pause"
    assert settings.registry("127.0.0.1:5000").scheme == "http"

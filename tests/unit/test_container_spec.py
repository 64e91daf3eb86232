"""The whole container spec (issue 24): `options:` checked with dockermod's own
translation table when the config loads, and a release that is digest + spec:
a changed spec rolls out through the gated batches, a failed one rolls back to
the digest and spec before, and a re-push of both restarts nothing."""

import pathlib
import re

import pytest

from saltcd import config
from saltcd.config import container_spec
from saltcd.queue.controller import Controller
from saltcd.store import Store

from .fakes import FakeClock, FakeFleet, MemoryCache, Recorder
from .test_controller import FakeRegistry

DIGEST = "sha256:" + "5" * 64
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("options, key, message", [
    ({"mem_limt": "1g"}, "mem_limt", "not an option of docker_container.running"),
    ({"port_bindings": ["1:1"]}, "port_bindings", "use the app's `ports`"),
    ({"env": {"A": "b"}}, "env", "use the app's `environment`"),
    ({"image": "evil"}, "image", "set by saltcd"),
    ({"force": True}, "force", "decides how saltcd runs the state"),
    ({"extra_hosts": ["nocolon"]}, "extra_hosts", "dockermod refuses its value"),
    ({"networks": 5}, "networks", "network names"),
    ({"labels": {"io.saltcd.spec": "x"}}, "labels", "saltcd's own label"),
])
def test_options_are_checked_when_the_config_loads(raw_config, options, key, message):
    raw_config["apps"]["web"]["options"] = options
    with pytest.raises(config.ConfigError, match=rf"saltcd:apps:web:options:{key}: .*{re.escape(message)}"):
        config.load(raw_config)


def test_the_options_operators_write_for_docker_container_running_are_taken(raw_config):
    written = {"binds": ["/srv/web/uploads:/uploads:rw"], "volumes": ["/cache"], "command": "serve --port 8080",
               "entrypoint": "/bin/sh", "user": "app", "working_dir": "/app", "labels": ["team=web"],
               "mem_limit": "256m", "log_driver": "json-file", "log_opt": {"max-size": "10m"},
               "extra_hosts": ["db:10.0.0.5"], "cap_add": ["NET_ADMIN"], "cap_drop": ["ALL"], "read_only": True,
               "tmpfs": [{"/run": "size=1m"}], "sysctls": {"net.core.somaxconn": "1024"}, "dns": ["10.0.0.53"],
               "networks": [{"backend": {"aliases": ["web"]}}]}
    raw_config["apps"]["web"]["options"] = written
    raw_config["apps"]["web"]["environments"]["qa"]["options"] = {"mem_limit": "1g"}
    settings = config.load(raw_config)
    dev, qa = settings.deployment("web", "dev"), settings.deployment("web", "qa")
    assert dev.options == {**written, "labels": {"team": "web"}}
    assert qa.options == {**dev.options, "mem_limit": "1g"}           # merged option by option
    pillar = dev.pillar(DIGEST)["saltcd"]
    assert pillar["options"]["labels"] == {"team": "web", "io.saltcd.spec": dev.spec_id}
    assert pillar["spec"] == dev.spec_id != qa.spec_id


def test_every_part_of_the_spec_changes_its_fingerprint(raw_config):
    base = config.load(raw_config).deployment("web", "dev").spec_id
    for change in ({"environment": {"GREETING": "hi"}}, {"ports": ["8081:8080"]}, {"restart_policy": "always"},
                   {"stop_timeout": 3}, {"options": {"mem_limit": "1g"}}):
        raw = {**raw_config, "apps": {**raw_config["apps"], "web": {**raw_config["apps"]["web"], **change}}}
        assert config.load(raw).deployment("web", "dev").spec_id != base, change
    # What does not define the container (batching, health) does not.
    raw_config["apps"]["web"]["batch"] = "50%"
    assert config.load(raw_config).deployment("web", "dev").spec_id == base


def test_what_changed_names_keys_never_values():
    old = {"environment": {"FOO": "1", "TOKEN": "s3cret"}, "options": {"mem_limit": "1g"}, "ports": ["1:1"]}
    new = {"environment": {"FOO": "2", "TOKEN": "s3cret"}, "options": {"mem_limit": "2g"}, "ports": ["1:1"]}
    assert container_spec.changes(old, new) == ["environment.FOO", "mem_limit"]
    assert container_spec.changes(None, new) == ["(the previous spec is not known)"]


def test_the_minion_side_names_the_same_label():
    for path in ("salt/_utils/saltcd_minion.py", "salt/_utils/saltcd_release.py"):
        assert f'SPEC_LABEL = "{container_spec.SPEC_LABEL}"' in (ROOT / path).read_text(), path


def _controller(raw_config, tmp_path, fleet):
    return Controller(config.load(raw_config), Store(MemoryCache()), fleet, Recorder(), str(tmp_path),
                      resolve=FakeRegistry(DIGEST), clock=FakeClock())


def _with_environment(raw_config, value):
    raw_config["apps"]["web"]["environment"] = {"GREETING": value}
    return raw_config


def test_a_spec_change_rolls_out_in_batches_and_a_repush_restarts_nothing(raw_config, tmp_path):
    fleet = FakeFleet({"dev-1": None, "dev-2": None})
    first = _controller(raw_config, tmp_path, fleet)
    first.request("web", "dev")
    assert first.run_queue("web", "dev")["rollouts"][-1]["status"] == "succeeded"
    old_spec = first.settings.deployment("web", "dev").spec_id
    changed = _controller(_with_environment(raw_config, "hi"), tmp_path, fleet)
    changed.records = first.records                                   # the same store, a new config
    changed.records.configure(first.records.limits)
    plan = changed.plan("web", "dev")["plan"]
    assert [m["why"] for step in plan for m in step["minions"].values()] == ["spec changed: environment.GREETING"] * 2
    fleet.applied.clear()
    changed.request("web", "dev")
    record = changed.run_queue("web", "dev")["rollouts"][-1]
    assert record["status"] == "succeeded" and record["to_digest"] == DIGEST
    assert record["from_specs"] == {"dev-1": old_spec, "dev-2": old_spec} and record["to_spec"] != old_spec
    assert fleet.applied == [(["dev-1"], DIGEST), (["dev-2"], DIGEST)]  # gated batches, digest unchanged
    fleet.applied.clear()
    changed.request("web", "dev")
    assert changed.run_queue("web", "dev")["rollouts"][-1]["status"] == "unchanged" and fleet.applied == []


def test_a_failed_spec_rolls_back_to_the_spec_before(raw_config, tmp_path):
    fleet = FakeFleet({"dev-1": None, "dev-2": None})
    first = _controller(raw_config, tmp_path, fleet)
    first.request("web", "dev")
    first.run_queue("web", "dev")
    old_spec = fleet.specs["dev-1"]
    broken = _controller(_with_environment(raw_config, "crashes"), tmp_path, fleet)
    broken.records = first.records
    fleet.bad.add(broken.settings.deployment("web", "dev").spec_id)     # this spec never gets healthy
    broken.request("web", "dev")
    record = broken.run_queue("web", "dev")["rollouts"][-1]
    assert record["status"] == "rolled_back"
    assert fleet.specs == {"dev-1": old_spec, "dev-2": old_spec} and set(fleet.running.values()) == {DIGEST}
    assert [b["kind"] for b in record["batches"]] == ["batch", "rollback"]
    assert record["rolled_back_to"] == {"dev-1": {"digest": DIGEST, "spec": old_spec}}


def test_a_plan_says_per_minion_why_it_changes(raw_config, tmp_path):
    from saltcd.present import views

    fleet = FakeFleet({"dev-1": None, "dev-2": None})
    first = _controller(raw_config, tmp_path, fleet)
    first.request("web", "dev")
    first.run_queue("web", "dev")
    fleet.running["dev-2"] = "sha256:" + "6" * 64                       # dev-2 runs another digest
    changed = _controller(_with_environment(raw_config, "hi"), tmp_path, fleet)
    changed.records = first.records
    text = views.rollout_text(changed.plan("web", "dev"))
    assert "dev-1: sha256:555555555555 -> sha256:555555555555 (spec changed: environment.GREETING)" in text
    assert "dev-2: sha256:666666666666 -> sha256:555555555555 (new digest)" in text

import pytest

from saltcd import config


def test_environment_overrides_and_defaults(settings):
    prod = settings.deployment("web", "prod")
    assert prod.batch == [1, "100%"]
    assert prod.health.settle == 5 and prod.health.timeout == 20  # env over app over default
    assert prod.on_failure == "pause" and prod.max_failures == 1
    dev = settings.deployment("web", "dev")
    assert dev.batch == 1 and dev.on_failure == "rollback" and dev.max_failures == 0
    api = settings.deployment("api", "dev")
    assert api.container == "api" and api.tgt_type == "compound" and api.health.port == 8080


def test_pillar_pins_the_digest(settings):
    digest = "sha256:" + "1" * 64
    pillar = settings.deployment("web", "dev").pillar(digest)["saltcd"]
    assert pillar["image"] == f"127.0.0.1:5000/saltcd/web@{digest}"
    assert pillar["ports"] == ["8080:8080"] and pillar["environment"] == {"GREETING": "hello"}


def test_mine_refresh_is_off_unless_the_app_asks(settings, raw_config):
    digest = "sha256:" + "1" * 64
    assert settings.deployment("web", "dev").pillar(digest)["docker.update_mine"] is False
    raw_config["apps"]["web"]["update_mine"] = True
    assert config.load(raw_config).deployment("web", "dev").pillar(digest)["docker.update_mine"] is True
    raw_config["apps"]["web"]["update_mine"] = "yes"
    with pytest.raises(config.ConfigError, match="saltcd:apps:web:update_mine: must be true or false"):
        config.load(raw_config)


def test_tag_mapping_default_and_custom(settings, raw_config):
    assert settings.env_for_tag("qa") == "qa" and settings.env_for_tag("latest") is None
    raw_config["tag_environments"] = {"main": "dev", "release": "prod"}
    raw_config["apps"]["web"]["environments"].pop("qa")
    custom = config.load(raw_config)
    assert custom.env_for_tag("main") == "dev" and custom.env_for_tag("dev") is None


def test_lookup_errors_name_what_is_missing(settings):
    with pytest.raises(KeyError, match="unknown app 'nope'"):
        settings.deployment("nope", "dev")
    with pytest.raises(KeyError, match="has no environment 'qa'"):
        settings.deployment("api", "qa")


def test_registry_defaults_to_https(settings):
    assert settings.registry("127.0.0.1:5000").scheme == "http"
    assert settings.registry("registry.example.com").scheme == "https"


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["apps"]["web"]["health"].update(port=70000), "saltcd:apps:web:health:port"),
    (lambda c: c["apps"]["web"].update(batch="150%"), "saltcd:apps:web:batch"),
    (lambda c: c["apps"]["web"]["environments"]["qa"].update(batch=0), "saltcd:apps:web:environments:qa:batch"),
    (lambda c: c["apps"]["web"].update(repository="Bad Repo"), "saltcd:apps:web:repository"),
    (lambda c: c["apps"]["web"].update(ports=["80:x"]), "saltcd:apps:web:ports:0"),
    (lambda c: c["apps"]["web"].update(environment={"1BAD": "x"}), "saltcd:apps:web:environment:1BAD"),
    (lambda c: c["apps"]["web"]["environments"].update(staging={"target": "s*"}), "saltcd:apps:web:environments:staging"),
    (lambda c: c["apps"]["web"]["environments"]["dev"].pop("target"), "saltcd:apps:web:environments:dev:target"),
    (lambda c: c["apps"]["web"]["environments"]["dev"].update(tgt_type="magic"), "saltcd:apps:web:environments:dev:tgt_type"),
    (lambda c: c["apps"]["web"].update(colour="blue"), "saltcd:apps:web"),
    (lambda c: c["apps"]["api"].update(repository="127.0.0.1:5000/saltcd/web"), "saltcd:apps:api:repository"),
    (lambda c: c["apps"]["web"].update(on_failure="panic"), "saltcd:apps:web:on_failure"),
    (lambda c: c["registries"].update({"127.0.0.1:5000": {"scheme": "ftp"}}), "saltcd:registries:127.0.0.1:5000:scheme"),
    (lambda c: c.update(tag_environments={"dev": "Dev!"}), "saltcd:tag_environments:dev"),
    (lambda c: c["apps"].update({"Web App": {}}), "saltcd:apps:Web App"),
])
def test_invalid_config_names_the_key(raw_config, mutate, key):
    mutate(raw_config)
    with pytest.raises(config.ConfigError) as error:
        config.load(raw_config)
    assert str(error.value).startswith(key + ":")


def test_missing_section():
    with pytest.raises(config.ConfigError, match="saltcd: must be a mapping"):
        config.load(None)


def test_example_config_is_valid():
    import pathlib
    import yaml
    example = pathlib.Path(__file__).parents[2] / "config.example.yaml"
    settings = config.load(yaml.safe_load(example.read_text())["saltcd"])
    assert settings.deployments()

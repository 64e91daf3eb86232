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
    with pytest.raises(config.NotFound, match="unknown app 'nope'"):
        settings.deployment("nope", "dev")
    with pytest.raises(config.NotFound, match="has no environment 'qa'"):
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
    (lambda c: c["apps"]["web"]["environments"].update(staging={"target": "s*"}),
     "saltcd:apps:web:environments:staging"),
    (lambda c: c["apps"]["web"]["environments"]["dev"].pop("target"), "saltcd:apps:web:environments:dev:target"),
    (lambda c: c["apps"]["web"]["environments"]["dev"].update(tgt_type="magic"),
     "saltcd:apps:web:environments:dev:tgt_type"),
    (lambda c: c["apps"]["web"].update(colour="blue"), "saltcd:apps:web"),
    (lambda c: c["apps"]["api"].update(repository="127.0.0.1:5000/saltcd/web"), "saltcd:apps:api:repository"),
    (lambda c: c["apps"]["web"].update(on_failure="panic"), "saltcd:apps:web:on_failure"),
    (lambda c: c["registries"].update({"127.0.0.1:5000": {"scheme": "ftp"}}),
     "saltcd:registries:127.0.0.1:5000:scheme"),
    (lambda c: c.update(tag_environments={"dev": "Dev!"}), "saltcd:tag_environments:dev"),
    (lambda c: c["apps"].update({"Web App": {}}), "saltcd:apps:Web App"),
    (lambda c: c["apps"]["web"]["environments"]["prod"]["health"].update(status=1000),
     "saltcd:apps:web:environments:prod:health:status"),
    (lambda c: c["apps"]["web"]["environments"]["prod"]["health"].update(colour=1),
     "saltcd:apps:web:environments:prod:health"),
    (lambda c: c["apps"]["web"]["environments"]["prod"].update(container="x"),
     "saltcd:apps:web:environments:prod"),
    (lambda c: c["apps"]["web"]["environments"]["dev"].update(mode="sometimes"),
     "saltcd:apps:web:environments:dev:mode"),
    (lambda c: c["apps"]["web"].pop("repository"), "saltcd:apps:web:repository"),
    (lambda c: c["apps"]["api"].pop("environments"), "saltcd:apps:api:environments"),
    (lambda c: c["registries"]["127.0.0.1:5000"].update(username="u"), "saltcd:registries:127.0.0.1:5000"),
    (lambda c: c["registries"]["127.0.0.1:5000"].update(client_cert="/c.pem"), "saltcd:registries:127.0.0.1:5000"),
    (lambda c: c["registries"]["127.0.0.1:5000"].update(ca_file="ca.pem"), "saltcd:registries:127.0.0.1:5000:ca_file"),
    (lambda c: c["sources"]["registry"].pop("token"), "saltcd:sources:registry"),
    (lambda c: c.update(push_secret="short"), "saltcd:push_secret"),
    (lambda c: c.update(apps={}), "saltcd:apps"),
    (lambda c: c.update(colour="blue"), "saltcd"),
])
def test_invalid_config_names_the_key(raw_config, mutate, key):
    mutate(raw_config)
    with pytest.raises(config.ConfigError) as error:
        config.load(raw_config)
    assert str(error.value).startswith(key + ":")


def test_missing_section():
    with pytest.raises(config.ConfigError, match="saltcd: must be a mapping"):
        config.load(None)




def test_defaults_are_the_table_s_in_every_environment(raw_config):
    """No environment has hidden defaults of its own (prod's settle used to be 5 in
    the state's defaults.yaml and 0 here); only `mode` depends on the environment."""
    raw_config["apps"]["api"]["environments"].update(qa={"target": "q*"}, prod={"target": "p*"})
    settings = config.load(raw_config)
    table = {k.name: k.default for k in config.keys_under(config.APP + ".health").values()}
    for env in ("dev", "qa", "prod"):
        dep = settings.deployment("api", env)
        assert vars(dep.health) == table
        assert (dep.batch, dep.state_timeout, dep.on_failure, dep.max_failures) == (1, 300, "rollback", 0)
        assert dep.mode == ("manual" if env == "prod" else "auto")


def test_app_settings_apply_where_an_environment_leaves_them(raw_config):
    raw_config["apps"]["web"].update(on_failure="continue", mode="manual")
    raw_config["apps"]["web"]["environments"]["dev"]["environment"] = {"EXTRA": 1}
    settings = config.load(raw_config)
    dev, prod = settings.deployment("web", "dev"), settings.deployment("web", "prod")
    assert dev.on_failure == "continue" and prod.on_failure == "pause"
    assert dev.mode == "manual" and prod.mode == "auto"
    assert dev.environment == {"GREETING": "hello", "EXTRA": "1"}


def test_registry_settings_and_secrets(raw_config):
    raw_config["registries"]["registry.example.com"] = {
        "username": "deploy", "password": "sdb://vault/pw", "ca_file": "/etc/ca.pem",
        "client_cert": "/etc/c.pem", "client_key": "/etc/c.key"}
    raw_config["push_secret"] = "sdb://vault/push"
    secrets = {"sdb://vault/pw": "hunter2", "sdb://vault/push": "p" * 20}
    settings = config.load(raw_config, resolve_secret=lambda v: secrets.get(v, v))
    registry = settings.registry("registry.example.com")
    assert (registry.scheme, registry.username, registry.password) == ("https", "deploy", "hunter2")
    assert (registry.ca_file, registry.client_cert, registry.client_key) == ("/etc/ca.pem", "/etc/c.pem", "/etc/c.key")
    assert settings.push_secret == "p" * 20
    assert "hunter2" not in repr(registry)
    raw_config.pop("push_secret")
    with pytest.raises(config.ConfigError, match="registry.example.com:password: must be a non-empty string"):
        config.load(raw_config, resolve_secret=lambda v: None if v.startswith("sdb://") else v)


def test_sources_get_their_defaults(settings):
    source = settings.sources["registry"]
    assert (source.format, source.token_header, source.signature_header) == (
        "distribution", "Authorization", "X-Hub-Signature-256")
    assert settings.sources["hub"].format == "dockerhub" and settings.sources["hub"].token is None


def test_not_found_is_a_saltcd_error_not_a_key_error(settings):
    with pytest.raises(config.NotFound) as error:
        settings.deployment("nope", "dev")
    assert not isinstance(error.value, KeyError)

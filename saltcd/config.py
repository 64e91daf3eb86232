"""The `saltcd:` section of the master configuration, validated once.

Operators write the apps once, on the master; minions never need to know about
them. Every error names the key it is about, e.g. `saltcd:apps:web:health:port`.
"""

import re
from dataclasses import dataclass, field

from saltcd import batches, references

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CONTAINER_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PORT_BINDING_RE = re.compile(r"^(?:(\d{1,5}):)?(\d{1,5})(?:/(tcp|udp))?$")
TGT_TYPES = ("glob", "pcre", "list", "grain", "grain_pcre", "pillar", "compound", "nodegroup")
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
ON_FAILURE = ("rollback", "pause", "continue")
MODES = ("auto", "manual")
SOURCE_FORMATS = ("distribution", "dockerhub")
DEFAULT_TAG_ENVIRONMENTS = {"dev": "dev", "qa": "qa", "prod": "prod"}

DEFAULT_HEALTH = {
    "path": "/health",
    "port": 8080,
    "host": "127.0.0.1",
    "timeout": 30,
    "interval": 1,
    "settle": 0,
    "status": 200,
}
DEFAULT_POLICY = {
    "batch": 1,
    "state_timeout": 300,
    "on_failure": "rollback",
    "max_failures": 0,
}
DEFAULT_STOP_TIMEOUT = 10


class ConfigError(ValueError):
    """The saltcd configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class Health:
    """How a minion decides that its container is healthy."""

    path: str
    port: int
    host: str
    timeout: float
    interval: float
    settle: float
    status: int


@dataclass(frozen=True)
class Deployment:
    """One app in one environment, with every default and override resolved."""

    app: str
    env: str
    repository: references.Repository
    container: str
    ports: tuple
    environment: dict
    restart_policy: str
    stop_timeout: float
    health: Health
    target: str
    tgt_type: str
    batch: object
    state_timeout: float
    on_failure: str
    max_failures: object
    mode: str = "auto"
    update_mine: bool = False

    def pillar(self, digest):
        """The pillar the deploy SLS reads: everything it needs, nothing else."""
        return {
            # dockermod sends `docker.ps` to the Salt mine after every container
            # call: five master round trips per replace, about 1.7 s a minion on
            # the sandbox. Off unless the app asks for it (or the minion's own
            # config sets docker.update_mine, which wins over pillar).
            "docker.update_mine": self.update_mine,
            "saltcd": {
                "app": self.app,
                "env": self.env,
                "image": self.repository.pinned(digest),
                "digest": digest,
                "container": self.container,
                "ports": list(self.ports),
                "environment": dict(self.environment),
                "restart_policy": self.restart_policy,
                "stop_timeout": self.stop_timeout,
                "health": {
                    "path": self.health.path,
                    "port": self.health.port,
                    "host": self.health.host,
                    "timeout": self.health.timeout,
                    "interval": self.health.interval,
                    "settle": self.health.settle,
                    "status": self.health.status,
                },
            }
        }


@dataclass(frozen=True)
class Registry:
    """How to reach one registry host (the digest lookup; minions pull with their own
    Docker credentials, see the README)."""

    scheme: str = "https"
    username: str = None
    password: str = field(default=None, repr=False)
    timeout: float = 10
    # A PEM bundle that verifies the registry's (and its token realm's) certificate
    # instead of the system store; a client certificate and key for mutual TLS.
    ca_file: str = None
    client_cert: str = None
    client_key: str = None


@dataclass(frozen=True)
class Source:
    """A webhook source (`salt/engines/hook/saltcd/<name>`) and how it proves itself."""

    name: str
    format: str = "distribution"
    token: str = field(default=None, repr=False)
    token_header: str = "Authorization"
    hmac_secret: str = field(default=None, repr=False)
    signature_header: str = "X-Hub-Signature-256"


@dataclass(frozen=True)
class Settings:
    """The whole validated `saltcd:` configuration."""

    apps: dict
    tag_environments: dict
    registries: dict
    sources: dict = field(default_factory=dict)
    ci_minions: tuple = ()
    push_secret: str = field(default=None, repr=False)
    _deployments: dict = field(default_factory=dict, repr=False)

    def ci_allowed(self, minion, app):
        """May `minion` trigger rollouts of `app` with `saltcd/push` events?"""
        return minion in self.ci_minions or minion in self.apps[app]["ci_minions"]

    def deployment(self, app, env):
        """The Deployment of `app` in `env`; KeyError with a reason if there is none."""
        if app not in self.apps:
            raise KeyError(f"unknown app {app!r}")
        if (app, env) not in self._deployments:
            raise KeyError(f"app {app!r} has no environment {env!r}")
        return self._deployments[(app, env)]

    def deployments(self):
        """Every configured (app, env) pair, sorted."""
        return [self._deployments[key] for key in sorted(self._deployments)]

    def app_for_repository(self, repository):
        """The name of the app deployed from `repository` (a Repository), or None."""
        for name, app in self.apps.items():
            if app["repository"] == repository:
                return name
        return None

    def env_for_tag(self, tag):
        """The environment an image tag deploys to, or None when the tag maps to none."""
        return self.tag_environments.get(tag)

    def registry(self, host):
        """Connection settings for a registry host (https unless configured)."""
        return self.registries.get(host, Registry())


def _need(cond, key, message):
    if not cond:
        raise ConfigError(f"{key}: {message}")


def _number(value, key, minimum=0):
    _need(
        isinstance(value, (int, float)) and not isinstance(value, bool) and value >= minimum,
        key,
        f"must be a number >= {minimum}, got {value!r}",
    )
    return value


def _port(value, key):
    _need(
        isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536,
        key,
        f"must be a port number 1-65535, got {value!r}",
    )
    return value


def _health(raw, key):
    _need(isinstance(raw, dict), key, "must be a mapping")
    unknown = set(raw) - set(DEFAULT_HEALTH)
    _need(not unknown, key, f"unknown keys {sorted(unknown)}")
    merged = {**DEFAULT_HEALTH, **raw}
    path = merged["path"]
    _need(
        isinstance(path, str) and path.startswith("/") and " " not in path,
        f"{key}:path",
        f"must be an absolute URL path, got {path!r}",
    )
    _need(
        isinstance(merged["host"], str) and re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", merged["host"]),
        f"{key}:host",
        f"must be a host name or address, got {merged['host']!r}",
    )
    return Health(
        path=path,
        port=_port(merged["port"], f"{key}:port"),
        host=merged["host"],
        timeout=_number(merged["timeout"], f"{key}:timeout", 1),
        interval=_number(merged["interval"], f"{key}:interval", 0.1),
        settle=_number(merged["settle"], f"{key}:settle", 0),
        status=_port(merged["status"], f"{key}:status"),
    )


def _ports(raw, key):
    _need(isinstance(raw, list), key, "must be a list of 'host:container' port bindings")
    for index, binding in enumerate(raw):
        text = str(binding)
        match = PORT_BINDING_RE.fullmatch(text)
        _need(match, f"{key}:{index}", f"invalid port binding {text!r}")
        for number in (match.group(1), match.group(2)):
            if number is not None:
                _port(int(number), f"{key}:{index}")
    return tuple(str(binding) for binding in raw)


def _environment_vars(raw, key):
    _need(isinstance(raw, dict), key, "must be a mapping of variable name to value")
    for name, value in raw.items():
        _need(ENV_VAR_RE.fullmatch(str(name)), f"{key}:{name}", "invalid variable name")
        _need(
            isinstance(value, (str, int, float)) and not isinstance(value, bool),
            f"{key}:{name}",
            "value must be a string or a number",
        )
    return {str(name): str(value) for name, value in raw.items()}


def _policy(raw, key):
    """Validate the rollout policy keys present in `raw` (app level or env level)."""
    out = {}
    if "batch" in raw:
        try:
            out["batch"] = batches.validate_spec(raw["batch"])
        except batches.BatchSpecError as exc:
            raise ConfigError(f"{key}:batch: {exc}") from None
    if "state_timeout" in raw:
        out["state_timeout"] = _number(raw["state_timeout"], f"{key}:state_timeout", 1)
    if "on_failure" in raw:
        _need(raw["on_failure"] in ON_FAILURE, f"{key}:on_failure", f"must be one of {ON_FAILURE}")
        out["on_failure"] = raw["on_failure"]
    if "mode" in raw:
        _need(raw["mode"] in MODES, f"{key}:mode", f"must be one of {MODES}")
        out["mode"] = raw["mode"]
    if "max_failures" in raw:
        value = raw["max_failures"]
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
            isinstance(value, str) and re.fullmatch(r"\d{1,3}%", value) and int(value[:-1]) <= 100
        )
        _need(ok, f"{key}:max_failures", f"must be a count >= 0 or a percentage, got {value!r}")
        out["max_failures"] = value
    return out


_APP_KEYS = {
    "repository", "container", "ports", "environment", "restart_policy", "stop_timeout", "health",
    "environments", "batch", "state_timeout", "on_failure", "max_failures", "mode", "ci_minions",
    "update_mine",
}
_ENV_KEYS = {"target", "tgt_type", "health", "environment", "batch", "state_timeout",
             "on_failure", "max_failures", "mode"}


def _deployment(app, env, raw_app, raw_env, key):
    _need(isinstance(raw_env, dict), key, "must be a mapping with at least `target`")
    unknown = set(raw_env) - _ENV_KEYS
    _need(not unknown, key, f"unknown keys {sorted(unknown)}")
    _need(isinstance(raw_env.get("target"), str) and raw_env["target"], f"{key}:target",
          "must be a Salt target string")
    tgt_type = raw_env.get("tgt_type", "glob")
    _need(tgt_type in TGT_TYPES, f"{key}:tgt_type", f"must be one of {TGT_TYPES}")
    # Production waits for a person unless configured otherwise.
    defaults = {**DEFAULT_POLICY, "mode": "manual" if env == "prod" else "auto"}
    policy = {**defaults, **_policy(raw_app, f"saltcd:apps:{app}"), **_policy(raw_env, key)}
    health = _health({**raw_app.get("health", {}), **raw_env.get("health", {})},
                     f"{key}:health" if "health" in raw_env else f"saltcd:apps:{app}:health")
    variables = {**raw_app.get("environment", {}), **raw_env.get("environment", {})}
    return Deployment(
        app=app,
        env=env,
        repository=raw_app["repository"],
        container=raw_app["container"],
        ports=raw_app["ports"],
        environment=_environment_vars(variables, f"{key}:environment"),
        restart_policy=raw_app["restart_policy"],
        stop_timeout=raw_app["stop_timeout"],
        update_mine=raw_app["update_mine"],
        health=health,
        target=raw_env["target"],
        tgt_type=tgt_type,
        **policy,
    )


def _app(name, raw, environments):
    key = f"saltcd:apps:{name}"
    _need(NAME_RE.fullmatch(str(name)), key, "app names are lowercase letters, digits, '-' and '_'")
    _need(isinstance(raw, dict), key, "must be a mapping")
    unknown = set(raw) - _APP_KEYS
    _need(not unknown, key, f"unknown keys {sorted(unknown)}")
    _need("repository" in raw, f"{key}:repository", "is required")
    try:
        repository = references.parse_repository(raw["repository"])
    except references.ReferenceError as exc:
        raise ConfigError(f"{key}:repository: {exc}") from None
    container = raw.get("container", name)
    _need(isinstance(container, str) and CONTAINER_RE.fullmatch(container), f"{key}:container",
          f"invalid container name {container!r}")
    restart = raw.get("restart_policy", "unless-stopped")
    _need(restart in RESTART_POLICIES, f"{key}:restart_policy", f"must be one of {RESTART_POLICIES}")
    app = {
        "repository": repository,
        "container": container,
        "ports": _ports(raw.get("ports", []), f"{key}:ports"),
        "environment": _environment_vars(raw.get("environment", {}), f"{key}:environment"),
        "restart_policy": restart,
        "stop_timeout": _number(raw.get("stop_timeout", DEFAULT_STOP_TIMEOUT), f"{key}:stop_timeout"),
        "health": raw.get("health", {}),
        "ci_minions": _minion_ids(raw.get("ci_minions", []), f"{key}:ci_minions"),
        "update_mine": raw.get("update_mine", False),
    }
    _need(isinstance(app["update_mine"], bool), f"{key}:update_mine", "must be true or false")
    _health(app["health"], f"{key}:health")
    envs = raw.get("environments")
    _need(isinstance(envs, dict) and envs, f"{key}:environments",
          "must map at least one environment to a target")
    deployments = {}
    for env, raw_env in envs.items():
        env_key = f"{key}:environments:{env}"
        _need(env in environments, env_key,
              f"unknown environment; tag_environments maps to {sorted(environments)}")
        deployments[(name, env)] = _deployment(name, env, {**raw, **app}, raw_env, env_key)
    return app, deployments


def _registries(raw, resolve_secret):
    _need(isinstance(raw, dict), "saltcd:registries", "must map registry host to settings")
    out = {}
    for host, conf in raw.items():
        key = f"saltcd:registries:{host}"
        _need(references.DOMAIN_RE.fullmatch(str(host)), key, "invalid registry host")
        _need(isinstance(conf, dict), key, "must be a mapping")
        unknown = set(conf) - {"scheme", "username", "password", "timeout", "ca_file",
                               "client_cert", "client_key"}
        _need(not unknown, key, f"unknown keys {sorted(unknown)}")
        scheme = conf.get("scheme", "https")
        _need(scheme in ("http", "https"), f"{key}:scheme", "must be http or https")
        _need(("username" in conf) == ("password" in conf), key,
              "`username` and `password` go together")
        password = None
        if "password" in conf:
            password = resolve_secret(conf["password"])
            _need(isinstance(password, str) and password, f"{key}:password",
                  "must be a non-empty string (or an sdb:// URI that resolves to one)")
        files = {}
        for name in ("ca_file", "client_cert", "client_key"):
            if conf.get(name) is not None:
                _need(isinstance(conf[name], str) and conf[name].startswith("/"), f"{key}:{name}",
                      "must be an absolute file path")
                files[name] = conf[name]
        _need(("client_cert" in files) == ("client_key" in files), key,
              "`client_cert` and `client_key` go together")
        out[host] = Registry(
            scheme=scheme,
            username=conf.get("username"),
            password=password,
            timeout=_number(conf.get("timeout", 10), f"{key}:timeout", 0.1),
            **files,
        )
    return out


def _minion_ids(raw, key):
    _need(isinstance(raw, list) and all(isinstance(m, str) and m for m in raw), key,
          "must be a list of minion ids")
    return tuple(raw)


def _sources(raw, resolve_secret):
    _need(isinstance(raw, dict), "saltcd:sources", "must map webhook source names to settings")
    out = {}
    for name, conf in raw.items():
        key = f"saltcd:sources:{name}"
        _need(NAME_RE.fullmatch(str(name)), key, "source names are lowercase letters, digits, '-', '_'")
        _need(isinstance(conf, dict), key, "must be a mapping")
        unknown = set(conf) - {"format", "token", "token_header", "hmac_secret", "signature_header"}
        _need(not unknown, key, f"unknown keys {sorted(unknown)}")
        _need(conf.get("format", "distribution") in SOURCE_FORMATS, f"{key}:format",
              f"must be one of {SOURCE_FORMATS}")
        # An unauthenticated webhook would let anyone deploy anything.
        _need(conf.get("token") or conf.get("hmac_secret"), key, "needs `token` or `hmac_secret`")
        secrets = {}
        for secret in ("token", "hmac_secret"):
            if conf.get(secret) is not None:
                value = resolve_secret(conf[secret])
                _need(isinstance(value, str) and value, f"{key}:{secret}",
                      "must be a non-empty string (or an sdb:// URI that resolves to one)")
                secrets[secret] = value
        out[name] = Source(
            name=name,
            format=conf.get("format", "distribution"),
            token_header=str(conf.get("token_header", "Authorization")),
            signature_header=str(conf.get("signature_header", "X-Hub-Signature-256")),
            **secrets,
        )
    return out


def _push_secret(raw, resolve_secret):
    if raw is None:
        return None
    value = resolve_secret(raw)
    _need(isinstance(value, str) and len(value) >= 16, "saltcd:push_secret",
          "must be a string of at least 16 characters (or an sdb:// URI that resolves to one)")
    return value


def load(raw, resolve_secret=lambda value: value):
    """Validate the `saltcd:` mapping of the master config into Settings.

    `resolve_secret` turns a configured secret (e.g. `sdb://vault/saltcd/token`)
    into its value; the runner passes Salt's sdb lookup.
    """
    _need(isinstance(raw, dict), "saltcd", "must be a mapping (is the saltcd: section missing?)")
    unknown = set(raw) - {"apps", "tag_environments", "registries", "sources", "ci_minions",
                          "push_secret"}
    _need(not unknown, "saltcd", f"unknown keys {sorted(unknown)}")
    tag_envs = raw.get("tag_environments", DEFAULT_TAG_ENVIRONMENTS)
    _need(isinstance(tag_envs, dict) and tag_envs, "saltcd:tag_environments",
          "must map image tags to environment names")
    for tag, env in tag_envs.items():
        try:
            references.parse_tag(str(tag))
        except references.ReferenceError as exc:
            raise ConfigError(f"saltcd:tag_environments:{tag}: {exc}") from None
        _need(isinstance(env, str) and NAME_RE.fullmatch(env), f"saltcd:tag_environments:{tag}",
              f"invalid environment name {env!r}")
    environments = set(tag_envs.values())
    apps_raw = raw.get("apps")
    _need(isinstance(apps_raw, dict) and apps_raw, "saltcd:apps", "must define at least one app")
    apps, deployments = {}, {}
    for name, app_raw in apps_raw.items():
        apps[name], app_deployments = _app(name, app_raw, environments)
        deployments.update(app_deployments)
    seen = {}
    for name, app in apps.items():
        other = seen.setdefault(app["repository"], name)
        _need(other == name, f"saltcd:apps:{name}:repository",
              f"already used by app {other!r}: a push must map to one app")
    return Settings(
        apps=apps,
        tag_environments={str(tag): env for tag, env in tag_envs.items()},
        registries=_registries(raw.get("registries", {}), resolve_secret),
        sources=_sources(raw.get("sources", {}), resolve_secret),
        ci_minions=_minion_ids(raw.get("ci_minions", []), "saltcd:ci_minions"),
        push_secret=_push_secret(raw.get("push_secret"), resolve_secret),
        _deployments=deployments,
    )

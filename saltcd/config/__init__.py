"""The `saltcd:` section of the master configuration, validated once.

Operators write the apps once, on the master; minions never need to know about
them. Every key, its default and its check are one entry of `KEYS` below: the
loader reads them from there, and the configuration reference (docs/configuration.md) and the
deploy state's `defaults.yaml` are generated from there (see
`saltcd.config.reference`). Every error names the key it is about, e.g.
`saltcd:apps:web:health:port`.
"""

import dataclasses
import functools
import ipaddress
import re
import types
from dataclasses import dataclass, field

import salt.utils.minions

from saltcd import vocabulary
from saltcd.config import batches, container_spec, deploy_windows, notify_targets, references
from saltcd.errors import NotFound, SaltcdError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CONTAINER_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PORT_BINDING_RE = re.compile(r"^(?:(\d{1,5}):)?(\d{1,5})(?:/(tcp|udp))?$")
HOST_RE = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")
TGT_TYPES = ("glob", "pcre", "list", "grain", "grain_pcre", "pillar", "compound", "nodegroup")
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
MODES = ("auto", "manual")
# What reconcile does with a tag that moved at the registry without a
# notification saltcd trusted (see Controller.reconcile).
DRIFT = ("deploy", "record", "ignore")
# Targets a minion can match itself into: grains (and the IP addresses of
# `S@`) are what the minion reports about itself, so a minion that sets its own
# grain would join the environment and receive its deploy data and secrets.
MINION_CHOSEN_TGT_TYPES = ("grain", "grain_pcre")
# Compound engines that match on what the minion reports (grains, grain PCRE,
# its IP addresses, and 3008's resources, which the minion filters itself).
MINION_CHOSEN_ENGINES = ("G", "P", "S", "T")
COMPOUND_OPERATORS = ("and", "or", "not")
# How a minion replaces its container (see salt/_utils/saltcd_release.py).
STRATEGIES = ("stop-first", "start-first")
# How a container's health is probed (salt/_utils/saltcd_minion.py: health_probe).
HEALTH_CHECKS = ("http", "tcp", "command", "docker", "running")

class ConfigError(SaltcdError, ValueError):
    """The saltcd configuration is invalid; the message names the key."""


# ---------------------------------------------------------------------------
# Checks: check(value, key) -> the value to use, or raise ConfigError naming `key`.


def _need(cond, key, message):
    if not cond:
        raise ConfigError(f"{key}: {message}")


def _number(minimum):
    def check(value, key):
        _need(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= minimum,
              key, f"must be a number >= {minimum}, got {value!r}")
        return value
    return check


def _integer_between(low, high, what):
    def check(value, key):
        _need(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
              key, f"must be {what} {low}-{high}, got {value!r}")
        return value
    return check


_port = _integer_between(1, 65535, "a port number")


def _one_of(choices):
    """A check against `choices`, read when it runs: a registry (a dict) stays the list."""
    def check(value, key):
        _need(value in choices, key, f"must be one of {tuple(choices)}, got {value!r}")
        return value
    check.choices = choices
    return check


def _boolean(value, key):
    _need(isinstance(value, bool), key, "must be true or false")
    return value


def _text(value, key):
    _need(isinstance(value, str) and value, key, "must be a non-empty string")
    return value


def _secret(value, key):
    _need(isinstance(value, str) and value, key,
          "must be a non-empty string (or an sdb:// URI that resolves to one)")
    return value


def _push_secret(value, key):
    _need(isinstance(value, str) and len(value) >= 16, key,
          "must be a string of at least 16 characters (or an sdb:// URI that resolves to one)")
    return value


def _absolute_path(value, key):
    _need(isinstance(value, str) and value.startswith("/"), key, "must be an absolute file path")
    return value


def _minion_ids(value, key):
    _need(isinstance(value, list) and all(isinstance(m, str) and m for m in value), key,
          "must be a list of minion ids")
    return tuple(value)


def _mapping(value, key):
    _need(isinstance(value, dict), key, "must be a mapping")
    return value


STORE_DRIVERS = ("local", "etcd")
ETCD_ENDPOINT_RE = re.compile(r"^(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})$")


def _etcd_endpoints(value, key):
    _need(isinstance(value, list) and all(isinstance(v, str) and ETCD_ENDPOINT_RE.fullmatch(v) for v in value),
          key, "must be a list of `http://host:port` (or https) client URLs")
    return tuple(value)


def _etcd_prefix(value, key):
    _need(isinstance(value, str) and re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", value), key,
          "must be a key path like `/saltcd` (no trailing slash)")
    return value


def _tag_environments(value, key):
    _need(isinstance(value, dict) and value, key, "must map image tags to environment names")
    for tag, env in value.items():
        try:
            references.parse_tag(str(tag))
        except references.ReferenceError as exc:
            raise ConfigError(f"{key}:{tag}: {exc}") from None
        _need(isinstance(env, str) and NAME_RE.fullmatch(env), f"{key}:{tag}",
              f"invalid environment name {env!r}")
    return {str(tag): env for tag, env in value.items()}


def _repository(value, key):
    try:
        return references.parse_repository(value)
    except references.ReferenceError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _networks(value, key):
    """A non-empty list of CIDRs (IPv4 or IPv6; a bare address is its /32 or /128)."""
    _need(isinstance(value, list) and value, key,
          "must be a non-empty list of networks (CIDR), e.g. [10.0.0.0/8, \"2001:db8::/32\"]; "
          "leave it out to allow any address")
    networks = []
    for index, text in enumerate(value):
        _need(isinstance(text, str), f"{key}:{index}", f"must be a network as text, got {text!r}")
        try:
            networks.append(ipaddress.ip_network(text))
        except ValueError as exc:  # a typo, or host bits set (10.0.0.1/8): say so, guess nothing
            raise ConfigError(f"{key}:{index}: {exc}") from None
    return tuple(networks)


def _repositories(value, key):
    """A non-empty list of repository references, parsed like an app's."""
    _need(isinstance(value, list) and value, key,
          "must be a non-empty list of repositories; leave it out to allow any app's")
    return frozenset(_repository(name, f"{key}:{index}") for index, name in enumerate(value))


def _container(value, key):
    _need(isinstance(value, str) and CONTAINER_RE.fullmatch(value), key,
          f"invalid container name {value!r}")
    return value


def _ports(value, key):
    _need(isinstance(value, list), key, "must be a list of 'host:container' port bindings")
    for index, binding in enumerate(value):
        text = str(binding)
        match = PORT_BINDING_RE.fullmatch(text)
        _need(match, f"{key}:{index}", f"invalid port binding {text!r}")
        for number in (match.group(1), match.group(2)):
            if number is not None:
                _port(int(number), f"{key}:{index}")
    return tuple(str(binding) for binding in value)


def _environment_vars(value, key):
    _need(isinstance(value, dict), key, "must be a mapping of variable name to value")
    for name, item in value.items():
        _need(ENV_VAR_RE.fullmatch(str(name)), f"{key}:{name}", "invalid variable name")
        _need(isinstance(item, (str, int, float)) and not isinstance(item, bool), f"{key}:{name}",
              "value must be a string or a number")
    return {str(name): str(item) for name, item in value.items()}


def _health_path(value, key):
    _need(isinstance(value, str) and value.startswith("/") and " " not in value, key,
          f"must be an absolute URL path, got {value!r}")
    return value


def _command(value, key):
    """A command (a health check's, a hook's): a string, or a list of arguments (kept as a list)."""
    if isinstance(value, str) and value.strip():
        return value
    _need(isinstance(value, list) and value and all(isinstance(a, str) and a for a in value), key,
          "must be a command string or a non-empty list of arguments")
    return list(value)


def _host(value, key):
    _need(isinstance(value, str) and HOST_RE.fullmatch(value), key,
          f"must be a host name or address, got {value!r}")
    return value


def _batch(value, key):
    try:
        return batches.validate_spec(value)
    except batches.BatchSpecError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _max_failures(value, key):
    ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
        isinstance(value, str) and re.fullmatch(r"\d{1,3}%", value) and int(value[:-1]) <= 100
    )
    _need(ok, key, f"must be a count >= 0 or a percentage, got {value!r}")
    return value


def _windows(value, key):
    _need(isinstance(value, list), key, "must be a list of windows like 'Mon-Fri 09:00-17:00 Europe/Berlin'")
    parsed = []
    for index, text in enumerate(value):
        try:
            parsed.append(deploy_windows.parse(text))
        except deploy_windows.WindowError as exc:
            raise ConfigError(f"{key}:{index}: {exc}") from None
    return tuple(parsed)


def _notify(value, key):
    """`notify:` endpoints (saltcd.present.outgoing checks them; secrets stay sdb:// until the engine reads them)."""
    try:
        notify_targets.targets(value, key)
    except notify_targets.NotifyConfigError as exc:
        raise ConfigError(str(exc)) from None
    return value


def _container_options(value, key):
    """`options:`: docker_container.running's own options, checked with dockermod's table."""
    try:
        return container_spec.checked(value)
    except container_spec.SpecError as exc:
        raise ConfigError(f"{key}:{exc.option}: {exc}" if exc.option else f"{key}: {exc}") from None


def _target(value, key):
    _need(isinstance(value, str) and value, key, "must be a Salt target string")
    return value


def minion_chosen(target, tgt_type):
    """Why a minion could match `target` by what it says about itself, or None."""
    if tgt_type in MINION_CHOSEN_TGT_TYPES:
        return f"tgt_type {tgt_type} matches on grains, which each minion sets for itself"
    if tgt_type != "compound":
        return None
    # Word by word as Salt's compound matcher reads them, each parsed by Salt's
    # own parse_target (which also knows delimiters: `G|@role|web` is a grain match).
    for word in target.split():
        word = word.lstrip("(").rstrip(")")
        if not word or word in COMPOUND_OPERATORS:
            continue
        engine = salt.utils.minions.parse_target(word).get("engine")
        if engine in MINION_CHOSEN_ENGINES:
            return (f"compound target uses {engine}@, which matches on what each minion "
                    "reports about itself (grains, its addresses, its resources)")
    return None


# ---------------------------------------------------------------------------
# The table.

class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()  # the default of a key that has none: it must be set


@dataclass(frozen=True)
class Derived:
    """A default computed from where the key is used: fn(app, env) -> value."""

    text: str
    fn: object


@dataclass(frozen=True)
class Key:
    """One configuration key: where it lives, its default, its check, what it means.

    `path` is dotted, with `<placeholders>` for names the operator chooses; a
    key with children (`apps.<app>.health`) is a mapping checked key by key.
    `per_env`: also accepted under `apps.<app>.environments.<env>`, which wins.
    `per_role`: also accepted under `apps.<app>.roles.<role>`, which wins there.
    `secret`: resolved through the secret lookup (sdb://) before the check.
    `shown`: the default as the reference states it, when the value says too little.
    """

    path: str
    meaning: str
    default: object = None
    check: object = None
    per_env: bool = False
    secret: bool = False
    shown: str = None
    per_role: bool = False

    @property
    def name(self):
        return self.path.rsplit(".", 1)[-1]


APP = "apps.<app>"
ENV = "apps.<app>.environments.<env>"
ROLE = "apps.<app>.roles.<role>"

# Every key of `saltcd:`, in the reference's order. A new key is one entry here
# (and the code that uses it); then `make config-reference` regenerates the
# reference's table (docs/configuration.md) and the deploy state's defaults.yaml, and config.example.yaml
# must show it (a unit test says so). Rules tying keys together (`username` with
# `password`, a source's `token` or `hmac_secret`) live in the loader below.
KEYS = (
    Key("tag_environments", "image tag -> environment", {"dev": "dev", "qa": "qa", "prod": "prod"},
        _tag_environments),
    Key("sources", "webhook sources by name; each posts to the saltcd_webhook engine at `/saltcd/<source>`",
        {}, _mapping,
        shown="none: every webhook is rejected"),
    Key("sources.<source>.format", "payload format", "distribution",
        _one_of(vocabulary.REGISTRY_EVENT_FORMATS)),
    Key("sources.<source>.token", "bearer token the source sends (sdb:// allowed); "
        "`token` or `hmac_secret` is required", None, _secret, secret=True),
    Key("sources.<source>.token_header", "header carrying `Bearer <token>`", "Authorization", _text),
    Key("sources.<source>.hmac_secret", "key of the body's HMAC-SHA256, `sha256=<hex>` "
        "(sdb:// allowed)", None, _secret, secret=True),
    Key("sources.<source>.signature_header", "header carrying the HMAC", "X-Hub-Signature-256", _text),
    Key("sources.<source>.timestamp_header", "header carrying the send time (Unix seconds), for "
        "senders that sign it: the HMAC then covers `<timestamp>.<body>`, and a request older than "
        "`push_window` is a replay", None, _text),
    Key("sources.<source>.allow_from", "networks (CIDR, IPv4/IPv6) a post may come from; the "
        "saltcd_webhook engine answers any other sender 403 before reading its body", None, _networks,
        shown="any address"),
    Key("sources.<source>.repositories", "repositories the source may announce; a post with a "
        "tagged manifest push of any other is refused and counted at the door (answered 200: a registry "
        "holds back every later notification while it retries a refused one)", None, _repositories,
        shown="any app's (a push no app deploys is ignored)"),
    Key("max_body_bytes", "largest webhook body accepted; a larger one is refused before it is "
        "decoded or stored", 1048576, _integer_between(1024, 64 * 1048576, "a byte count")),
    Key("ci_minions", "minion ids allowed to fire `saltcd/push`", [], _minion_ids),
    Key("push_secret", "HMAC key every `saltcd/push` event must be signed with "
        "(≥ 16 characters; sdb:// allowed)", None, _push_secret, secret=True,
        shown="none: every `saltcd/push` is rejected"),
    Key("push_window", "seconds a signed `saltcd/push` (or a timestamped webhook) stays valid; "
        "older, or a nonce seen before, is a replay", 300, _number(10)),
    Key("history_keep", "rollout records kept per app and environment (newest)", 200,
        _integer_between(10, 100000, "a count")),
    Key("history_days", "days a rollout record is kept (the newest 10 always are)", 90, _number(1)),
    Key("rejections_keep", "rejected events kept in full (newest); older ones only as counts "
        "per source, reason and minute", 100, _integer_between(10, 100000, "a count")),
    Key("rejections_days", "days rejection records and counts are kept", 30, _number(1)),
    Key("notify", "rollout notifications, sent by the `saltcd_notify` engine: a list of "
        "`{url, format: json|slack, events: [started, failed, rolled_back, finished], secret, timeout, "
        "retries}`; `secret` (sdb:// allowed) is sent as `Authorization: Bearer <secret>` and needs an "
        "`https://` URL (or a numeric loopback address); redirects are never followed; "
        "defaults: format `json`, every event, timeout 5 s, 2 retries", [], _notify),
    Key("store", "where requests, the queue, the history, approvals and nonces live: the master's "
        "own cache (one master), or an etcd v3 cluster that several masters share (docs/ha.md)", {},
        _mapping, shown="local"),
    Key("store.driver", "`local` (Salt's cache on this master) or `etcd`", "local", _one_of(STORE_DRIVERS)),
    Key("store.endpoints", "etcd client URLs, `http://host:port`; every member, so a dead one is "
        "passed over", [], _etcd_endpoints),
    Key("store.prefix", "etcd key prefix of everything saltcd keeps", "/saltcd", _etcd_prefix),
    Key("store.lease_ttl", "seconds a master's lock on an app/env outlives its last renewal: another "
        "master takes a dead master's rollout over after this", 15, _number(2)),
    Key("store.lease_renew", "seconds between renewals (less than `lease_ttl`); a master that has not "
        "renewed for `lease_ttl` starts no new step", 5, _number(0.5)),
    Key("store.timeout", "seconds one etcd request may take", 5, _number(0.1)),
    Key("store.ca_file", "PEM bundle that verifies etcd's TLS certificate (https endpoints)", None,
        _absolute_path),
    Key("store.client_cert", "client certificate saltcd shows etcd (with `client_key`): whoever can "
        "write to the store can deploy, so etcd should take only its masters", None, _absolute_path),
    Key("store.client_key", "its private key", None, _absolute_path),
    Key("registries", "how to reach each registry host (the digest lookup)", {}, _mapping,
        shown="https, anonymous"),
    Key("registries.<host>.scheme", "`http` or `https`", "https", _one_of(("http", "https"))),
    Key("registries.<host>.username", "user for the registry (with `password`)", None, _text),
    Key("registries.<host>.password", "its password (sdb:// allowed)", None, _secret, secret=True),
    Key("registries.<host>.timeout", "seconds a registry request may take", 10, _number(0.1)),
    Key("registries.<host>.ca_file", "PEM bundle that verifies the registry's (and its token "
        "realm's) certificate instead of the system store", None, _absolute_path),
    Key("registries.<host>.client_cert", "client certificate for mutual TLS (with `client_key`)",
        None, _absolute_path),
    Key("registries.<host>.client_key", "its private key", None, _absolute_path),
    Key("apps", "the apps saltcd deploys, by name", REQUIRED, _mapping),
    Key(f"{APP}.repository", "`host[:port]/path`; pushes of it deploy this app", REQUIRED, _repository),
    Key(f"{APP}.container", "container name on the minions",
        Derived("the app name", lambda app, env: app), _container),
    Key(f"{APP}.ports", '`["host:container", …]`', [], _ports, per_role=True),
    Key(f"{APP}.environment", "container environment variables", {}, _environment_vars,
        per_env=True, per_role=True),
    Key(f"{APP}.options", "the rest of the container: `docker_container.running`'s own options "
        "(binds, volumes, networks with aliases, command, entrypoint, user, working_dir, labels, "
        "mem_limit, log_driver/log_opt, extra_hosts, cap_add, read_only, tmpfs, sysctls, dns, ...), "
        "checked with dockermod's translation table when the config loads; an environment's "
        "options are merged over the app's, option by option; a change rolls out like a new digest",
        {}, _container_options, per_env=True, per_role=True),
    Key(f"{APP}.restart_policy", "docker restart policy: " + ", ".join(f"`{p}`" for p in RESTART_POLICIES),
        "unless-stopped",
        _one_of(RESTART_POLICIES), per_role=True),
    Key(f"{APP}.stop_timeout", "seconds before docker kills the old container", 10, _number(0),
        per_role=True),
    Key(f"{APP}.strategy", "`stop-first` (the old container stops, then the new one takes the "
        "published port) or `start-first` (the new one starts beside it on a private port, passes "
        "the health gate, then the host's HAProxy switches to it and the old one drains and is "
        "stopped in the background; the app must have exactly one port; a role without ports is "
        "always stop-first)", "stop-first",
        _one_of(STRATEGIES), per_env=True, per_role=True),
    Key(f"{APP}.drain", "start-first: seconds the old container may go on serving the requests "
        "in flight after the switch (it stops as soon as its last connection closes)", 10,
        _number(0), per_env=True, per_role=True),
    Key(f"{APP}.prepull", "how many minions pull the pinned image at once when a rollout "
        "starts, ahead of their batch (nothing is stopped or changed by a pull); `0` turns it off",
        10, _integer_between(0, 1000, "a count"), per_env=True),
    Key(f"{APP}.update_mine", "let dockermod send `docker.ps` to the Salt mine after every "
        "container call during saltcd's state runs (costs ~1.7 s a minion on the sandbox; a "
        "minion's own `docker.update_mine` setting wins; on minions with `multiprocessing: False` "
        "dockermod caches the value per process, so saltcd's `false` also holds for later docker "
        "calls)", False, _boolean),
    Key(f"{APP}.roles", "several containers of the one image (e.g. `web` and `worker`), each a "
        "role with its own `container`, `ports`, `environment`, `options` (command, ...), `health`, "
        "`strategy` and optional `target`; each batch replaces them role by role in this order, "
        "each gated by its own health check, and fails if any role fails; a role's `environment`, "
        "`options` and `health` merge over the app's (and the environment's); with roles the app "
        "itself has no `ports`; a change to any role's spec replaces every role's container",
        {}, _mapping, shown="none: the app is one container"),
    Key(f"{ROLE}.container", "the role's container", Derived("`<container>-<role>`", None), _container),
    Key(f"{ROLE}.target", "runs only on the environment's minions that this Salt target also matches",
        None, _target, shown="every minion of the environment"),
    Key(f"{ROLE}.tgt_type", "how the role's `target` matches: " + ", ".join(f"`{t}`" for t in TGT_TYPES),
        "glob", _one_of(TGT_TYPES)),
    Key(f"{APP}.state", "the operator's own SLS (e.g. `myteam.web`), applied to each batch instead "
        "of `saltcd.deploy`; it reads the release (image, previous_image, roles, labels, ...) with "
        "`{% from \"saltcd/map.jinja\" import deploy, roles with context %}` (docs/own-state.md); "
        "saltcd still gates on health, counts failures and rolls back by applying it with the "
        "previous image", None, _text,
        shown="`saltcd.deploy`"),
    Key(f"{APP}.hooks", "release hooks: one-off containers of the new digest with the app's "
        "environment and options, on one minion of the environment", {}, _mapping, per_env=True),
    Key(f"{APP}.hooks.before", "command run once before batch 1 (a migration): exit 0, or the "
        "rollout ends `failed` with nothing replaced", None, _command),
    Key(f"{APP}.hooks.after", "command run once after the last batch (a smoke test): a failure "
        "applies `on_failure`", None, _command),
    Key(f"{APP}.hooks.timeout", "seconds a hook may run; then it is stopped and fails", 600, _number(1)),
    Key(f"{APP}.hooks.minion", "the minion that runs the hooks", None, _text,
        shown="the first minion of batch 1"),
    Key(f"{APP}.health", "how a minion decides its container is healthy (a role's health is "
        "merged over the app's; a role without ports is checked with `running` unless it says "
        "otherwise)", {}, _mapping, per_env=True, per_role=True),
    Key(f"{APP}.health.check", "how: `http` (GET `path` on `host`:`port`, expect `status`), `tcp` (a "
        "connection to `host`:`port` is accepted), `command` (`command` run in the container exits "
        "0), `docker` (the image's own HEALTHCHECK says healthy), `running` (the container runs and "
        "does not restart, for `settle`)", "http", _one_of(HEALTH_CHECKS)),
    Key(f"{APP}.health.command", "`check: command`: the command run in the container (`docker exec`), "
        "a string or a list of arguments", None, _command),
    Key(f"{APP}.health.path", "URL path probed", "/health", _health_path),
    Key(f"{APP}.health.port", "the published (host) port probed", 8080, _port),
    Key(f"{APP}.health.host", "address probed (a minion's grain `saltcd:health_host` wins)",
        "127.0.0.1", _host),
    Key(f"{APP}.health.status", "HTTP status that counts as healthy", 200,
        _integer_between(100, 599, "an HTTP status")),
    Key(f"{APP}.health.timeout", "seconds to become healthy", 30, _number(1)),
    Key(f"{APP}.health.interval", "seconds between probes (before the first answer the gate waits "
        "0.05 s, doubling up to this)", 1, _number(0.1)),
    Key(f"{APP}.health.settle", "seconds it must then stay healthy (Swarm's `monitor` is 5 s)", 5,
        _number(0)),
    Key(f"{APP}.batch", '`2`, `"25%"` (rounded up), or a ramp `[1, "50%", "100%"]`', 1, _batch,
        per_env=True),
    Key(f"{APP}.state_timeout", "seconds a batch's state run may take", 300, _number(1),
        per_env=True),
    Key(f"{APP}.batch_timeout", "wall-clock seconds a batch may take; a state run still going "
        "then is stopped on its minion (`saltutil.term_job`), which counts as failed",
        None, _number(1), per_env=True,
        shown="state_timeout + health timeout + settle + stop_timeout + drain"),
    Key(f"{APP}.watch", "seconds the whole environment is watched after the last batch: a "
        "container that exits, restarts or stops answering its health check then fails the "
        "rollout (and the failure policy applies)", None, _number(0), per_env=True,
        shown="the health settle"),
    Key(f"{APP}.on_failure", "when the failure budget is spent: "
        + ", ".join(f"`{name}`" for name in vocabulary.FAILURE_POLICIES), "rollback",
        _one_of(vocabulary.FAILURE_POLICIES), per_env=True),
    Key(f"{APP}.max_failures", 'failed minions tolerated (count or `"10%"`)', 0, _max_failures,
        per_env=True),
    Key(f"{APP}.mode", "`auto`, or `manual` (waits for `deploy.approve`)",
        Derived("manual for `prod`, else auto", lambda app, env: "manual" if env == "prod" else "auto"),
        _one_of(MODES), per_env=True),
    Key(f"{APP}.cooldown", "seconds a pushed digest must age (from its push; a newer push "
        "restarts the count) before an auto rollout starts", 0, _number(0), per_env=True),
    Key(f"{APP}.windows", "when auto rollouts may start, e.g. `[\"Mon-Fri 09:00-17:00 Europe/Berlin\"]` "
        "(days, local time range, IANA zone; UTC when left out)", [], _windows, per_env=True,
        shown="any time"),
    Key(f"{APP}.drift", "what `deploy.resume` does when the environment's tag moved at the registry "
        "without a notification saltcd trusted: `deploy` it, `record` it (a push waiting for "
        "`deploy.approve` and an `awaiting_approval` event) or `ignore` it",
        None, _one_of(DRIFT), per_env=True,
        shown="`record` for an app no webhook source may announce (see `sources.<source>.repositories`), "
              "else `deploy`"),
    Key(f"{APP}.ci_minions", "extra CI minion ids for this app", [], _minion_ids),
    Key(f"{APP}.push_secret", "this app's own HMAC key for `saltcd/push`, used instead of "
        "`push_secret`: a CI job given only this key can push only this app (≥ 16 characters; "
        "sdb:// allowed)", None, _push_secret, secret=True, shown="`push_secret`"),
    Key(f"{APP}.environments", "environment -> where it runs; at least one", REQUIRED, _mapping),
    Key(f"{ENV}.target", "Salt target of the environment's minions", REQUIRED, _target),
    Key(f"{ENV}.tgt_type", "how `target` matches: " + ", ".join(f"`{t}`" for t in TGT_TYPES), "glob",
        _one_of(TGT_TYPES)),
    Key(f"{ENV}.allow_minion_chosen_target", "allow a target a minion can match itself into "
        "(`grain`, `grain_pcre`, or `G@`/`P@`/`S@` in a compound): such a minion joins the "
        "environment and receives its deploy data and secrets", False, _boolean),
)


MISSING = object()


def _parent(path):
    return path.rsplit(".", 1)[0] if "." in path else ""


@functools.cache
def keys_under(prefix):
    """{name: Key} of the keys directly below `prefix` ("" for the top level); the
    environment level also takes the app keys it may override.

    Cached, read-only: the table is fixed, and a load asks this for every key of
    every app and environment (scanning the table each time made loading a
    23-app config take 33 ms, paid by every push the reactor hands on)."""
    found = {k.name: k for k in KEYS if _parent(k.path) == prefix}
    if prefix == ENV:
        found.update({k.name: k for k in keys_under(APP).values() if k.per_env})
    if prefix == ROLE:
        found.update({k.name: k for k in keys_under(APP).values() if k.per_role})
    return types.MappingProxyType(found)


def default(spec, app=None, env=None):
    """The default of one Key where it is used, children's defaults included."""
    if isinstance(spec.default, Derived):
        return spec.default.fn(app, env)
    children = keys_under(spec.path) if spec.path.startswith(APP) else {}
    if children:
        return {name: default(child, app, env) for name, child in children.items()}
    # A fresh copy: a default is shared by every load.
    return type(spec.default)(spec.default) if isinstance(spec.default, (dict, list)) else spec.default


def _checked(raw, prefix, key, resolve_secret, skip=()):
    """The keys present in mapping `raw`, each checked; unknown keys refused. A key
    with children of its own (health) is checked the same way, one level down."""
    _need(isinstance(raw, dict), key, "must be a mapping")
    known = keys_under(prefix)
    unknown = set(raw) - set(known)
    _need(not unknown, key, f"unknown keys {sorted(unknown, key=str)}")
    out = {}
    for name, value in raw.items():
        spec, where = known[name], f"{key}:{name}"
        if name in skip or (value is None and spec.default is None):
            continue  # handled by the caller / an optional key left empty
        if spec.secret:
            try:
                value = resolve_secret(value)
            except ConfigError as exc:  # an sdb:// that does not resolve: name the key
                raise ConfigError(f"{where}: {exc}") from None
        value = spec.check(value, where)
        if prefix.startswith(APP) and keys_under(spec.path):
            value = _checked(value, spec.path, where, resolve_secret)
        out[name] = value
    return out


def _completed(present, prefix, key, app=None, env=None, only=None):
    """`present` with the default of every missing key (of `only`, if given);
    a missing required key is an error."""
    out = dict(present)
    for name, spec in keys_under(prefix).items():
        if name in out or (only is not None and name not in only):
            continue
        _need(spec.default is not REQUIRED, f"{key}:{name}", "is required")
        out[name] = default(spec, app, env)
    return out


def _layered(spec, app_value, env_value, app, env):
    """An overridable key's value in one environment: env over app over default;
    mappings (health, environment) merge key by key."""
    base = default(spec, app, env)
    if isinstance(base, dict):
        merged = dict(base)
        for layer in (app_value, env_value):
            if layer is not MISSING:
                merged.update(layer)
        return merged
    for layer in (env_value, app_value):
        if layer is not MISSING:
            return layer
    return base


# ---------------------------------------------------------------------------
# What the loader builds.


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
    check: str
    command: object  # a string or a list of arguments (check: command)


@dataclass(frozen=True)
class Role:
    """One container of an app in one environment: a role (web, worker, ...), or
    the app itself (name None) when it has no roles."""

    name: str
    container: str
    ports: tuple
    environment: dict
    options: dict
    restart_policy: str
    stop_timeout: float
    strategy: str
    drain: float
    health: Health
    target: str = None  # None: every minion of the environment
    tgt_type: str = "glob"

    def spec(self):
        """What the container is, beside its image (an app without roles: as before roles existed,
        so that its fingerprint, and with it what runs, stays the same)."""
        spec = {"ports": list(self.ports), "environment": self.environment,
                "restart_policy": self.restart_policy, "stop_timeout": self.stop_timeout,
                "options": self.options}
        if self.name is None:
            return spec
        # Where it runs is part of the release: a rollback places a role as it was.
        where = {"target": self.target, "tgt_type": self.tgt_type} if self.target else {}
        return {"role": self.name, "container": self.container, **spec, **where}


@dataclass(frozen=True)
class Deployment:
    """One app in one environment, with every default and override resolved.
    No field has a default here: load() fills each from the key table (KEYS),
    the one place a default is written."""

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
    mode: str
    update_mine: bool
    cooldown: float
    windows: tuple
    strategy: str
    drain: float
    prepull: int
    # None: derived (the properties below), so one place says how.
    batch_timeout: float
    watch: float
    drift: str
    options: dict
    hooks: dict  # before, after, timeout, minion
    allow_minion_chosen_target: bool
    named_roles: tuple  # the app's `roles:`, in order (empty: the app is one container)
    state: str  # the operator's own SLS instead of saltcd.deploy

    @property
    def roles(self):
        """The containers, in the order a batch replaces them: the named roles, or
        the app itself as the one role (name None), made from the keys above."""
        return self.named_roles or (_own_role(self),)

    @property
    def has_roles(self):
        return bool(self.named_roles)

    def role(self, name):
        """The configured Role called `name` (None: the app's own), or None."""
        return next((role for role in self.roles if role.name == name), None)

    @property
    def containers(self):
        """Every container name of the app as configured: its own, then its roles'."""
        return list(dict.fromkeys([self.container, *(role.container for role in self.roles)]))

    @property
    def batch_deadline(self):
        """Wall-clock seconds one batch may take: `batch_timeout`, or everything a
        batch may legitimately wait for, added up."""
        if self.batch_timeout is not None:
            return self.batch_timeout
        drain = self.drain if self.strategy == "start-first" else 0
        return (self.state_timeout + self.health.timeout + self.health.settle
                + self.stop_timeout + drain)

    @property
    def watch_seconds(self):
        """Seconds the environment is watched after the last batch (default: the settle)."""
        return self.health.settle if self.watch is None else self.watch

    def spec(self):
        """What the containers are, beside their image: the release is digest + spec."""
        spec = self.roles[0].spec() if not self.has_roles else {"roles": [r.spec() for r in self.roles]}
        return {**spec, "state": self.state} if self.state else spec

    @property
    def spec_id(self):
        """The fingerprint of spec(), the label `io.saltcd.spec` on its containers."""
        return container_spec.fingerprint(self.spec())

    def pillar(self, digest, spec=None, placement=None, previous=None):
        """The pillar the deploy SLS reads: everything it needs, nothing else.

        `spec` (a spec() of before, to roll back to) replaces the app's own.
        `placement` ({role: [minions]}) limits a targeted role to its minions;
        `previous` ({minion: digest}) is what each ran before (the pillar
        contract's `previous_image`). Not published as is: SaltFleet.apply
        serves `saltcd` to the batch's minions through the `saltcd` ext_pillar
        (which gives each minion its own roles and previous image) and puts only
        its app, env and digest in the job (saltcd.rollout.deploy_pillar.split).
        """
        spec = spec or self.spec()
        spec_id = container_spec.fingerprint(spec)
        # The app-level container keys: the spec's for an app without roles, else
        # the app's own (what hooks run with: no role's command, no ports).
        own = spec if "roles" not in spec else {
            "ports": [], "environment": self.environment, "restart_policy": self.restart_policy,
            "stop_timeout": self.stop_timeout, "options": self.options}
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
                "ports": list(own["ports"]),
                "environment": dict(own["environment"]),
                "restart_policy": own["restart_policy"],
                "stop_timeout": own["stop_timeout"],
                "options": container_spec.with_label(own["options"], spec_id),
                "labels": {container_spec.SPEC_LABEL: spec_id},
                "roles": [self._role_entry(role_spec, spec_id, placement or {})
                          for role_spec in spec.get("roles") or [spec]],
                # What a minion may have to remove (the ext_pillar keeps those it
                # does not run): the app's containers, now and in `spec`.
                "app_containers": list(dict.fromkeys(self.containers + [
                    role_spec.get("container", self.container) for role_spec in spec.get("roles") or [spec]])),
                "previous_images": {minion: self.repository.pinned(before)
                                    for minion, before in (previous or {}).items() if before},
                "state": spec.get("state"),
                "hooks": {**{kind: self.hooks.get(kind) for kind in vocabulary.HOOK_KINDS},
                          "timeout": self.hooks.get("timeout")},
                "spec": spec_id,
                "strategy": self.strategy,
                "drain": self.drain,
                "health": _health_pillar(self.health),
            }
        }

    def _role_entry(self, role_spec, spec_id, placement):
        """One container of the pillar's `roles`: its spec (maybe an earlier one) with
        how it is replaced and checked, from the role of that name now configured."""
        name = role_spec.get("role")
        role = self.role(name)
        if role is None and name is None:  # the app before it had roles, rolled back to
            role = Role(name=None, container=self.container, ports=tuple(role_spec["ports"]), environment={},
                        options={}, restart_policy=self.restart_policy, stop_timeout=self.stop_timeout,
                        strategy=self.strategy if role_spec["ports"] else "stop-first", drain=self.drain,
                        health=self.health)
        elif role is None:  # a role since removed, rolled back to: checked as a worker would be
            role = Role(name=name, container=role_spec["container"], ports=(), environment={}, options={},
                        restart_policy=self.restart_policy, stop_timeout=self.stop_timeout,
                        strategy="stop-first", drain=self.drain,
                        health=dataclasses.replace(self.health, check="running"))
        entry = {
            "role": name,
            "container": role_spec.get("container", role.container),
            "ports": list(role_spec["ports"]),
            "environment": dict(role_spec["environment"]),
            "restart_policy": role_spec["restart_policy"],
            "stop_timeout": role_spec["stop_timeout"],
            "options": container_spec.with_label(role_spec["options"], spec_id),
            "strategy": role.strategy,
            "drain": role.drain,
            "health": _health_pillar(role.health),
        }
        if name in placement:
            entry["minions"] = sorted(placement[name])
        return entry


def _own_role(values):
    """The one Role of an app without roles: its own container keys (`values`: a
    Deployment, or the loader's mapping of the same names)."""
    get = values.get if isinstance(values, dict) else functools.partial(getattr, values)
    return Role(name=None, **{name: get(name) for name in Role.__dataclass_fields__
                              if name not in ("name", "target", "tgt_type")})


def _health_pillar(health):
    """A Health as the deploy state reads it."""
    return {name: getattr(health, name) for name in
            ("check", "command", "path", "port", "host", "timeout", "interval", "settle", "status")}


# The app keys the deploy state reads from the pillar above; its defaults.yaml
# holds their defaults (generated by saltcd.config.reference).
STATE_KEYS = ("ports", "environment", "options", "restart_policy", "stop_timeout", "strategy", "drain",
              "health")


@dataclass(frozen=True)
class Registry:
    """How to reach one registry host (the digest lookup; minions pull with their own
    Docker credentials, see docs/registries.md)."""

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
class StoreConfig:
    """Where saltcd keeps its records (`saltcd:store`): `local`, or an etcd cluster."""

    driver: str = "local"
    endpoints: tuple = ()
    prefix: str = "/saltcd"
    lease_ttl: float = 15
    lease_renew: float = 5
    timeout: float = 5
    ca_file: str = None
    client_cert: str = None
    client_key: str = None

    @property
    def shared(self):
        """True when several masters share the store (and coordinate through it)."""
        return self.driver == "etcd"


def store_config(raw):
    """The validated `store` of a `saltcd:` mapping (read alone by the ext_pillar,
    which must not fail on an app's error)."""
    key, prefix = "saltcd:store", "store"
    raw = (raw or {}).get("store") if isinstance(raw, dict) else None
    conf = _completed(_checked(raw or {}, prefix, key, lambda value: value), prefix, key)
    if conf["driver"] == "etcd":
        _need(conf["endpoints"], f"{key}:endpoints", "must name the etcd members (driver: etcd)")
    _need(conf["lease_renew"] < conf["lease_ttl"], f"{key}:lease_renew", "must be less than `lease_ttl`")
    _need((conf["client_cert"] is None) == (conf["client_key"] is None), key,
          "`client_cert` and `client_key` go together")
    return StoreConfig(**{**conf, "endpoints": tuple(conf["endpoints"])})


@dataclass(frozen=True)
class Source:
    """A webhook source (`/saltcd/<name>` on the saltcd_webhook engine) and how it proves itself."""

    name: str
    format: str = "distribution"
    token: str = field(default=None, repr=False)
    token_header: str = "Authorization"
    hmac_secret: str = field(default=None, repr=False)
    signature_header: str = "X-Hub-Signature-256"
    timestamp_header: str = None
    # None: any sender address / any repository (what no app deploys is ignored).
    allow_from: tuple = None
    repositories: frozenset = None

    def allows_sender(self, address):
        """May a post come from `address` (the connection's peer, text)?"""
        if self.allow_from is None:
            return True
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False  # not an IP peer (a Unix socket): not on any listed network
        if peer.version == 6 and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped  # a dual-stack socket's view of an IPv4 sender
        return any(peer in network for network in self.allow_from)

    def may_announce(self, repository):
        """May this source announce pushes of `repository` (a references.Repository)?"""
        return self.repositories is None or repository in self.repositories


@dataclass(frozen=True)
class Settings:
    """The whole validated `saltcd:` configuration."""

    apps: dict
    tag_environments: dict
    registries: dict
    # Their defaults are the KEYS table's: load() always passes them.
    push_window: float
    max_body_bytes: int
    history_keep: int
    history_days: float
    rejections_keep: int
    rejections_days: float
    sources: dict = field(default_factory=dict)
    store: StoreConfig = StoreConfig()
    ci_minions: tuple = ()
    push_secret: str = field(default=None, repr=False)
    # app -> its own push key (apps.<app>.push_secret), kept out of `apps` and of repr.
    app_push_secrets: dict = field(default_factory=dict, repr=False)
    _deployments: dict = field(default_factory=dict, repr=False)

    def ci_allowed(self, minion, app):
        """May `minion` trigger rollouts of `app` with `saltcd/push` events?"""
        return minion in self.ci_minions or minion in self.apps[app]["ci_minions"]

    def push_secret_for(self, repository):
        """The key a `saltcd/push` of `repository` (its text, as pushed) must be
        signed with: its app's own `push_secret`, else the global one. The
        signature covers the repository, so choosing the key by it is sound."""
        try:
            app = self.app_for_repository(references.parse_repository(str(repository)))
        except references.ReferenceError:
            app = None  # refused later for the reference; the global key checks the signature
        return self.app_push_secrets.get(app) or self.push_secret

    def deployment(self, app, env):
        """The Deployment of `app` in `env`; NotFound with a reason if there is none."""
        if app not in self.apps:
            raise NotFound(f"unknown app {app!r}")
        if (app, env) not in self._deployments:
            raise NotFound(f"app {app!r} has no environment {env!r}")
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


# ---------------------------------------------------------------------------
# The loader: the table's checks and defaults, plus the rules that tie keys together.


def _role(app, name, present, values, key):
    """One role in one environment: its own keys over the app's (and the environment's)."""
    ports = present.get("ports", ())
    health = {**values["health"], **present.get("health", {})}
    if not ports and "check" not in present.get("health", {}):
        health["check"] = "running"  # nothing to probe on a port: it must stay up
    role = Role(
        name=name, container=present.get("container", f"{values['container']}-{name}"), ports=ports,
        environment={**values["environment"], **present.get("environment", {})},
        options={**values["options"], **present.get("options", {})},
        restart_policy=present.get("restart_policy", values["restart_policy"]),
        stop_timeout=present.get("stop_timeout", values["stop_timeout"]),
        # A role no traffic reaches has nothing to switch over.
        strategy=present.get("strategy", values["strategy"] if ports else "stop-first"),
        drain=present.get("drain", values["drain"]),
        health=Health(**health), target=present.get("target"), tgt_type=present.get("tgt_type", "glob"))
    _check_role(role, key)
    return role


def _check_role(role, key):
    """The rules a container's own keys must keep together (an app's, or a role's)."""
    _need(role.health.check != "command" or role.health.command, f"{key}:health:command",
          "is required with `check: command`")
    # The host's proxy owns the published address; the container gets a private one.
    _need(role.strategy != "start-first" or (len(role.ports) == 1 and ":" in role.ports[0].split("/")[0]),
          f"{key}:strategy", "start-first needs exactly one port, `\"host:container\"`, for the "
          f"proxy to publish (it has {list(role.ports)})")


def _roles(app, values, present_roles, key):
    """The app's containers in one environment: its roles, or the app itself as the one."""
    if not present_roles:
        _check_role(_own_role({**values, "health": Health(**values["health"])}), key)
        return ()
    _need(not values["ports"], f"saltcd:apps:{app}:ports",
          "an app with roles publishes no ports itself: give them to the role that serves them")
    roles = tuple(_role(app, name, present, values, f"saltcd:apps:{app}:roles:{name}")
                  for name, present in present_roles.items())
    containers = [role.container for role in roles]
    _need(len(set(containers)) == len(containers), f"saltcd:apps:{app}:roles",
          f"two roles name the same container: {sorted(containers)}")
    return roles


def _deployment(app, env, app_present, app_settings, raw_env, key, resolve_secret, present_roles=None):
    _need(isinstance(raw_env, dict), key, "must be a mapping with at least `target`")
    env_present = _completed(_checked(raw_env, ENV, key, resolve_secret), ENV, key, app, env,
                             only=[k.name for k in KEYS if _parent(k.path) == ENV])
    values = {**app_settings, **env_present}
    for name, spec in keys_under(ENV).items():
        if spec.per_env:
            values[name] = _layered(spec, app_present.get(name, MISSING),
                                    env_present.get(name, MISSING), app, env)
    values["named_roles"] = _roles(app, values, present_roles or {}, key)
    values["health"] = Health(**values["health"])
    if not values["allow_minion_chosen_target"]:
        why = minion_chosen(values["target"], values["tgt_type"])
        _need(why is None, f"{key}:target", f"{why}: a minion could put itself into this environment "
              "and receive its deploy data; target by minion id, pillar or nodegroup, or set "
              "allow_minion_chosen_target: true")
        # A role's target narrows the environment, but a role's own environment
        # values (a secret of the scheduler's) reach only the minions it picks.
        for role in values["named_roles"]:
            why = role.target and minion_chosen(role.target, role.tgt_type)
            _need(not why, f"saltcd:apps:{app}:roles:{role.name}:target", f"{why}: a minion could put itself "
                  "into this role and receive its deploy data; target by minion id, pillar or nodegroup, or set "
                  "the environment's allow_minion_chosen_target: true")
    wanted = set(Deployment.__dataclass_fields__) - {"app", "env"}
    return Deployment(app=app, env=env, **{name: values[name] for name in wanted})


def _app(name, raw, environments, resolve_secret):
    key = f"saltcd:apps:{name}"
    _need(NAME_RE.fullmatch(str(name)), key, "app names are lowercase letters, digits, '-' and '_'")
    present = _checked(raw, APP, key, resolve_secret, skip=("environments", "roles"))
    present_roles = _checked_roles(raw.get("roles"), key, resolve_secret)
    # Overridable keys get their defaults per environment (mode's depends on it).
    app = _completed(present, APP, key, app=name,
                     only=[n for n, k in keys_under(APP).items() if not k.per_env and n != "environments"])
    envs = raw.get("environments")
    _need(isinstance(envs, dict) and envs, f"{key}:environments",
          "must map at least one environment to a target")
    deployments = {}
    for env, raw_env in envs.items():
        env_key = f"{key}:environments:{env}"
        _need(env in environments, env_key,
              f"unknown environment; tag_environments maps to {sorted(environments)}")
        deployments[(name, env)] = _deployment(name, env, present, app, raw_env, env_key,
                                               resolve_secret, present_roles)
    return app, deployments


def _checked_roles(raw, key, resolve_secret):
    """{role: its keys as written, each checked} of `apps.<app>.roles`."""
    if raw is None:
        return {}
    _need(isinstance(raw, dict), f"{key}:roles", "must map role names to their containers")
    out = {}
    for name, role_raw in raw.items():
        role_key = f"{key}:roles:{name}"
        _need(NAME_RE.fullmatch(str(name)), role_key, "role names are lowercase letters, digits, '-' and '_'")
        out[str(name)] = _checked(role_raw if role_raw is not None else {}, ROLE, role_key, resolve_secret)
    return out


def _registry(host, raw, resolve_secret):
    key = f"saltcd:registries:{host}"
    _need(references.DOMAIN_RE.fullmatch(str(host)), key, "invalid registry host")
    prefix = "registries.<host>"
    conf = _completed(_checked(raw, prefix, key, resolve_secret), prefix, key)
    _need((conf["username"] is None) == (conf["password"] is None), key,
          "`username` and `password` go together")
    _need((conf["client_cert"] is None) == (conf["client_key"] is None), key,
          "`client_cert` and `client_key` go together")
    return Registry(**conf)


def _registries(raw, resolve_secret):
    """Registry settings by canonical host: lookups use the canonical name, so
    Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`) are `docker.io`."""
    out = {}
    for host, conf in raw.items():
        canonical = references.canonical_registry(host)
        _need(canonical not in out, f"saltcd:registries:{host}",
              f"configured twice (as {canonical} and an alias of it)")
        out[canonical] = _registry(host, conf, resolve_secret)
    return out


def _source(name, raw, resolve_secret):
    key = f"saltcd:sources:{name}"
    _need(NAME_RE.fullmatch(str(name)), key, "source names are lowercase letters, digits, '-', '_'")
    prefix = "sources.<source>"
    conf = _completed(_checked(raw, prefix, key, resolve_secret), prefix, key)
    # An unauthenticated webhook would let anyone deploy anything.
    _need(conf["token"] or conf["hmac_secret"], key, "needs `token` or `hmac_secret`")
    # Only a signed time proves when a request was made; a bare header would
    # look like replay protection and be none.
    _need(conf["timestamp_header"] is None or conf["hmac_secret"], f"{key}:timestamp_header",
          "needs `hmac_secret` (the HMAC must cover the timestamp)")
    return Source(name=name, **conf)


def _default_drift(repository, sources):
    """An app no webhook source may announce is deployed by signed pushes and
    operators only: a moved tag then came from someone who could write to the
    registry but held no push key, so it is recorded for a person to approve.
    With a source that announces it, registry write access is deploy access
    anyway, and catching a lost notification up is what drift is for."""
    return "deploy" if any(source.may_announce(repository) for source in sources.values()) else "record"


def load(raw, resolve_secret=lambda value: value):
    """Validate the `saltcd:` mapping of the master config into Settings.

    `resolve_secret` turns a configured secret (e.g. `sdb://vault/saltcd/token`)
    into its value; the runner passes Salt's sdb lookup.
    """
    _need(isinstance(raw, dict), "saltcd", "must be a mapping (is the saltcd: section missing?)")
    top = _completed(_checked(raw, "", "saltcd", resolve_secret), "", "saltcd")
    _need(top["apps"], "saltcd:apps", "must define at least one app")
    environments = set(top["tag_environments"].values())
    apps, deployments, app_push_secrets = {}, {}, {}
    for name, app_raw in top["apps"].items():
        apps[name], app_deployments = _app(name, app_raw, environments, resolve_secret)
        deployments.update(app_deployments)
        secret = apps[name].pop("push_secret", None)
        if secret is not None:
            app_push_secrets[name] = secret
    sources = {name: _source(name, conf, resolve_secret) for name, conf in top["sources"].items()}
    for pair, dep in deployments.items():
        if dep.drift is None:
            deployments[pair] = dataclasses.replace(dep, drift=_default_drift(dep.repository, sources))
    seen = {}
    for name, app in apps.items():
        other = seen.setdefault(app["repository"], name)
        _need(other == name, f"saltcd:apps:{name}:repository",
              f"already used by app {other!r}: a push must map to one app")
    return Settings(
        apps=apps,
        tag_environments=top["tag_environments"],
        registries=_registries(top["registries"], resolve_secret),
        sources=sources,
        store=store_config(raw),
        ci_minions=top["ci_minions"],
        push_secret=top["push_secret"],
        app_push_secrets=app_push_secrets,
        **{name: top[name] for name in ("push_window", "max_body_bytes", "history_keep",
                                        "history_days", "rejections_keep", "rejections_days")},
        _deployments=deployments,
    )

"""An app's container spec: `docker_container.running`'s own options, and its fingerprint.

Operators write `options:` with the names and values they already write for
`docker_container.running` (binds, networks, command, mem_limit, labels, ...).
What saltcd sets itself (the name, the pinned image, ports, environment,
restart policy, stop timeout) keeps its own keys, and how the state runs
(force, start, skip_translate, ...) is saltcd's to decide. Every other option
must be one dockermod's translation table knows, with a value it translates:
both are checked when the configuration loads, with dockermod's own table
(salt.utils.dockermod.translate.container), not a list of our own.

A release is a digest plus a spec: the spec's fingerprint rides on the
container as the label `io.saltcd.spec`, so a container that runs the right
digest with an older spec is out of date and rolls like a new digest.
"""

import hashlib
import json

import salt.utils.dockermod
import salt.utils.dockermod.translate.container as translator
from salt.exceptions import CommandExecutionError

SPEC_LABEL = "io.saltcd.spec"
# The spec fields besides `options`, as Deployment names them.
FIELDS = ("ports", "environment", "restart_policy", "stop_timeout")
# Options saltcd sets from its own keys (aliases included): option -> the key to use.
OWNED = {
    "name": "container", "image": "(the pushed digest)",
    "port_bindings": "ports", "publish": "ports", "ports": "ports",
    "environment": "environment", "env": "environment",
    "restart_policy": "restart_policy", "restart": "restart_policy",
    "shutdown_timeout": "stop_timeout", "stop_timeout": "stop_timeout",
}
# Arguments of the state (not of the container) that decide how saltcd runs it.
STATE_ARGUMENTS = ("skip_translate", "ignore_collisions", "validate_ip_addrs", "force", "watch_action",
                   "start", "client_timeout", "skip_comparison", "detach", "auto_remove", "rm")
# docker_container.running's own argument besides the translated ones.
NETWORKS = "networks"


class SpecError(ValueError):
    """An option is unknown, saltcd's own, or has a value dockermod refuses; `option` names it."""

    def __init__(self, option, message):
        super().__init__(message)
        self.option = option


def known_options():
    """Every option name dockermod translates for a container (aliases included), and `networks`."""
    functions = {name for name, value in vars(translator).items()
                 if callable(value) and not name.startswith("_")
                 and getattr(value, "__module__", None) == translator.__name__}
    return frozenset(functions | set(translator.ALIASES) | {NETWORKS})


def checked(options):
    """`options` as the state will get them, or SpecError: labels as a mapping
    (so saltcd can add its own), everything else as the operator wrote it."""
    if not isinstance(options, dict):
        raise SpecError(None, "must be a mapping of docker_container.running options")
    known = known_options()
    out = {}
    for name, value in options.items():
        name = str(name)
        if name in OWNED:
            raise SpecError(name, f"is set by saltcd: use the app's `{OWNED[name]}`")
        if name in STATE_ARGUMENTS:
            raise SpecError(name, "decides how saltcd runs the state: not an option here")
        if name not in known:
            raise SpecError(name, "is not an option of docker_container.running (dockermod's "
                                  "translation table has no such name)")
        out[name] = _networks(value) if name == NETWORKS else _translated(name, value)
    labels = out.pop("label", None) or out.get("labels")
    if labels is not None:
        out["labels"] = translator.labels(labels)
        if SPEC_LABEL in out["labels"]:
            raise SpecError("labels", f"{SPEC_LABEL} is saltcd's own label")
    return out


def _translated(name, value):
    """`value` as written, once dockermod has translated it without complaint."""
    try:
        salt.utils.dockermod.translate_input(translator, **{name: value})
    except CommandExecutionError as exc:
        info = getattr(exc, "info", None) or {}
        why = "; ".join(str(v) for v in (info.get("invalid") or {}).values()) or info.get("error_message")
        raise SpecError(name, f"dockermod refuses its value: {why or exc}") from None
    return value


def _networks(value):
    """`networks:` as docker_container.running takes it: names, or name -> settings (aliases, ...)."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        items = [{k: v} for k, v in value.items()]
    else:
        raise SpecError(NETWORKS, "must be a list of network names, or of name: {aliases: [...]}")
    for item in items:
        if isinstance(item, str) and item:
            continue
        if isinstance(item, dict) and len(item) == 1:
            (network, settings), = item.items()
            if isinstance(network, str) and network and isinstance(settings, (dict, list, type(None))):
                continue
        raise SpecError(NETWORKS, f"invalid entry {item!r}: a network name, or name: {{aliases: [...]}}")
    return value


def fingerprint(spec):
    """The spec's id: 16 hex digits of the SHA-256 of its canonical JSON."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def with_label(options, spec_id):
    """The options the container is created with: the operator's, plus saltcd's label."""
    return {**options, "labels": {**(options.get("labels") or {}), SPEC_LABEL: spec_id}}


def changes(old, new):
    """What differs between two specs, as `environment.FOO`, `mem_limit`, `ports`, ...
    (option names bare; values never shown: they may be secrets)."""
    if old is None:
        return ["(the previous spec is not known)"]
    found = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if key == "roles" and isinstance(before, list) and isinstance(after, list):
            # Role by role (`worker.command`; a role added or gone: its name).
            before, after = ({role["role"]: role for role in roles} for roles in (before, after))
            for name in [*after, *(n for n in before if n not in after)]:
                if name not in before or name not in after:
                    found.append(name)
                elif before[name] != after[name]:
                    found.extend(f"{name}.{what}" for what in changes(before[name], after[name]))
        elif isinstance(before, dict) and isinstance(after, dict) and key in ("environment", "options"):
            prefix = "environment." if key == "environment" else ""
            found.extend(f"{prefix}{name}" for name in sorted(set(before) | set(after))
                         if before.get(name) != after.get(name))
        else:
            found.append(key)
    return found

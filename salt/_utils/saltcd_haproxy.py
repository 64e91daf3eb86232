"""
saltcd's switch for start-first replacement: HAProxy, driven through its runtime API.

Each app (container) gets one file ``<config_dir>/saltcd-<container>.cfg``: a
frontend on the app's public address and a backend with two server slots,
``a`` and ``b``. A replacement puts the new container's private address in the
idle slot and makes it ``ready``, and sets the live slot to ``drain``: new
requests go to the new container at once, requests in flight on the old one
finish, and ``show stat`` counts them (``scur``) so the wait ends when they are
done. No reload and no process churn for a switch; a reload (seamless, master
worker) happens only when an app's frontend is new or its port changed. After
every switch the file is rewritten to the new routing, so a later reload or a
restart of HAProxy comes up routing to the new container.

Where HAProxy lives on the minion is ``conf``, the ``saltcd_proxy`` settings
over DEFAULTS (``settings``); the execution module ``saltcd_haproxy``
(salt/_modules/saltcd_haproxy.py) reads them with ``config.get`` and publishes
these functions. Salt syncs this file to minions from ``salt://_utils``.

The runtime API is one line of text per connection, answered with text until
HAProxy closes the socket: it is spoken here by hand (a few lines of socket
code) rather than with a client library, so minions need nothing new.
"""

import logging
import os
import socket
import subprocess
import time

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

DEFAULTS = {
    # Debian's haproxy.cfg declares this one (`stats socket ... level admin`).
    "socket": "/run/haproxy/admin.sock",
    "config_dir": "/etc/haproxy/saltcd",
    # A list: a command to run; a mapping {"master_socket": path}: `reload` on
    # HAProxy's master CLI (what `systemctl reload haproxy` does, without systemd).
    "reload": ["systemctl", "reload", "haproxy"],
    "bind": "",  # frontends bind every address
    "upstream_host": "127.0.0.1",  # where new containers publish their port, privately
    "timeout": 5,  # seconds, one runtime API command
    "reload_timeout": 15,  # seconds, until a reloaded HAProxy lists a new backend
}
SLOTS = ("a", "b")
# A slot with no container: a placeholder address that never answers, in maintenance.
IDLE_ADDRESS = "127.0.0.1:1"
MAX_ANSWER = 4 * 1024 * 1024
# srv_admin_state bits (HAProxy's SRV_ADMF_*): forced/inherited maintenance,
# forced/inherited drain, resolver/hostname maintenance. Any of them: not a live
# slot. (0x04, "disabled in the config", stays set after `state ready`: it is
# only a record of the config, not a state.)
ADMIN_MAINT_OR_DRAIN = 0x01 | 0x02 | 0x08 | 0x10 | 0x20 | 0x40
SRV_RUNNING = 2


# -- pure helpers (tested without HAProxy) ------------------------------------


def backend_name(container):
    return f"saltcd-{container}"


def render(container, bind, port, servers):
    """
    The config file of one app. ``servers``: {slot: "host:port" or None}; the
    slot with an address is routed to, an empty one is a placeholder in
    maintenance (``set server`` fills it at the next switch).
    """
    name = backend_name(container)
    lines = [
        "# Managed by saltcd (saltcd_haproxy): rewritten at every deploy of this app.",
        f"frontend {name}",
        f"    bind {bind or ''}:{int(port)}",
        "    mode http",
        "    option httplog",
        "    timeout client 30s",
        "    timeout http-request 10s",
        f"    default_backend {name}",
        "",
        f"backend {name}",
        "    mode http",
        "    timeout connect 2s",
        "    timeout server 30s",
        # A refused connection (a slot whose container is gone) is retried on the
        # other live server instead of reaching the client as an error.
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response",
    ]
    for slot in SLOTS:
        address = servers.get(slot)
        if address:
            lines.append(f"    server {slot} {address}")
        else:
            lines.append(f"    server {slot} {IDLE_ADDRESS} disabled")
    return "\n".join(lines) + "\n"


def parse_table(text, separator=None):
    """Rows of a runtime API table whose header line starts with ``#``: [{column: value}].

    ``show stat`` is CSV (``separator=","``); ``show servers state`` is
    space-separated and starts with a version line.
    """
    header = None
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            header = line.lstrip("# ").rstrip(separator or " ").split(separator)
            continue
        if header is None or not line.strip():
            continue
        values = line.split(separator)
        rows.append(dict(zip(header, values)))
    return rows


def slot_states(servers_state_text):
    """{slot: {"address", "live"}} from ``show servers state <backend>``."""
    slots = {}
    for row in parse_table(servers_state_text):
        slot = row.get("srv_name")
        if slot not in SLOTS:
            continue
        admin = int(row.get("srv_admin_state") or 0)
        operational = int(row.get("srv_op_state") or 0)
        address = f"{row.get('srv_addr')}:{row.get('srv_port')}"
        live = not admin & ADMIN_MAINT_OR_DRAIN and operational == SRV_RUNNING
        slots[slot] = {"address": None if address == IDLE_ADDRESS else address, "live": live}
    return slots


def current_sessions(stat_text, backend, slot):
    """``scur`` (connections being served) of one server in ``show stat`` CSV, or None."""
    for row in parse_table(stat_text, ","):
        if row.get("pxname") == backend and row.get("svname") == slot:
            return int(row.get("scur") or 0)
    return None


def set_address_command(backend, slot, address):
    host, port = address.rsplit(":", 1)
    return f"set server {backend}/{slot} addr {host} port {int(port)}"


# -- the runtime API: `conf` is `settings(...)` --------------------------------


def settings(given):
    """``given`` (the minion's ``saltcd_proxy`` settings) over DEFAULTS."""
    return {**DEFAULTS, **(given or {})}


def command(conf, line, socket_path=None, timeout=None):
    """Send one runtime API command and return HAProxy's answer (text)."""
    socket_path = socket_path or conf["socket"]
    timeout = float(timeout or conf["timeout"])
    chunks = []
    size = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(line.encode() + b"\n")
            # Without `prompt`, HAProxy answers and closes: read until it does.
            while size < MAX_ANSWER:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except OSError as exc:
        raise CommandExecutionError(f"HAProxy runtime API at {socket_path}: {exc}") from None
    return b"".join(chunks).decode(errors="replace")


def _checked(conf, line):
    """Run a command that answers nothing (or a short notice) on success."""
    answer = command(conf, line).strip()
    lowered = answer.lower()
    if any(word in lowered for word in ("unknown", "no such", "invalid", "require", "error", "failed")):
        raise CommandExecutionError(f"HAProxy refused {line!r}: {answer[:300]}")
    return answer


def backends(conf):
    """The backends the running HAProxy knows."""
    return [line.strip() for line in command(conf, "show backend").splitlines()
            if line.strip() and not line.startswith("#")]


def route(conf, container):
    """{slot: {"address", "live"}} of the app's backend in the running HAProxy, or {}
    when it has none."""
    backend = backend_name(container)
    if backend not in backends(conf):
        return {}
    return slot_states(command(conf, f"show servers state {backend}"))


def live(conf, container):
    """(slot, address) of the slot the app's traffic goes to, or (None, None)."""
    for slot, state in sorted(route(conf, container).items()):
        if state["live"] and state["address"]:
            return slot, state["address"]
    return None, None


def _config_path(conf, container):
    return os.path.join(conf["config_dir"], f"{backend_name(container)}.cfg")


def _write(conf, container, text):
    """Write the app's file (atomically); True if its content changed."""
    path = _config_path(conf, container)
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return True


def reload(conf):
    """Reload HAProxy (seamless: the old worker finishes its connections)."""
    how = conf["reload"]
    if isinstance(how, dict) and how.get("master_socket"):
        # The master re-executes itself at a reload and refuses connections
        # meanwhile: a reload right after another one waits (bounded) for it.
        deadline = time.monotonic() + float(conf["reload_timeout"])
        while True:
            try:
                command(conf, "reload", socket_path=how["master_socket"])
                return True
            except CommandExecutionError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
    result = subprocess.run(list(how), capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise CommandExecutionError(f"HAProxy reload {how} failed: {result.stderr.strip()[:300]}")
    return True


def _wait_backend(conf, backend, timeout):
    """Bounded: until the running HAProxy lists `backend` (after a reload)."""
    deadline = time.monotonic() + float(timeout)
    while True:
        try:
            if backend in backends(conf):
                return True
        except CommandExecutionError:
            pass  # the new worker may not have its socket yet
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def ensure_frontend(conf, container, port, upstream=None, bind=None):
    """Make HAProxy serve the app on ``bind:port``; a new backend routes to
    ``upstream`` (``host:port``) if given. Reloads only when the file changed or
    the running HAProxy lacks the backend. True if it reloaded."""
    bind = conf["bind"] if bind is None else bind
    backend = backend_name(container)
    slot, address = live(conf, container)
    servers = {slot: address} if slot else {"a": upstream} if upstream else {}
    changed = _write(conf, container, render(container, bind, port, servers))
    if not changed and backend in backends(conf):
        return False
    log.info("saltcd_haproxy: reloading HAProxy for %s", backend)
    reload(conf)
    if not _wait_backend(conf, backend, conf["reload_timeout"]):
        raise CommandExecutionError(f"HAProxy did not list backend {backend} within "
                                    f"{conf['reload_timeout']}s of a reload (see its log)")
    return True


def switch(conf, container, upstream, port, bind=None):
    """Route new requests of the app to ``upstream`` (``host:port``): the idle slot
    gets that address and becomes ready, the live one drains. Returns
    {"new": slot, "old": slot or None, "old_address"}."""
    backend = backend_name(container)
    old, old_address = live(conf, container)
    if old_address == upstream:
        return {"new": old, "old": None, "old_address": None}
    new = "b" if old == "a" else "a"
    _checked(conf, set_address_command(backend, new, upstream))
    _checked(conf, f"set server {backend}/{new} state ready")
    if old:
        _checked(conf, f"set server {backend}/{old} state drain")
    # The file follows: a reload or restart from now on routes to `upstream` only.
    _write(conf, container, render(container, conf["bind"] if bind is None else bind, port, {new: upstream}))
    return {"new": new, "old": old, "old_address": old_address}


def drained(conf, container, slot):
    """Connections the slot still serves (``scur``); 0 when it has none."""
    count = current_sessions(command(conf, "show stat"), backend_name(container), slot)
    return count or 0


def wait_drained(conf, container, slot, seconds):
    """Bounded: until the slot serves nothing or ``seconds`` pass. Returns what is left."""
    deadline = time.monotonic() + float(seconds)
    while True:
        left = drained(conf, container, slot)
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def retire(conf, container, slot):
    """Put a slot in maintenance (its container is about to stop)."""
    _checked(conf, f"set server {backend_name(container)}/{slot} state maint")
    return True

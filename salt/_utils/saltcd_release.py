"""
Start-first replacement of an app's container behind the host's HAProxy.

``start_first`` starts the new image as ``<name>-next`` beside the running
``<name>``, published only on the host's private upstream address (an
ephemeral port), gates it with saltcd's health gate (settle included), and
only then switches HAProxy to it (``saltcd_haproxy``), lets the old container's
requests in flight finish (``drain`` seconds at most), stops and removes the old
container and renames ``<name>-next`` to ``<name>``. A new container that fails
its gate is removed; the old one never stopped serving.

The state module ``saltcd_release`` (salt/_states/saltcd_release.py) publishes
``gone``, ``hook`` and ``start_first`` as states; Salt syncs this file to
minions from ``salt://_utils``. Each takes the state's ``__salt__`` as ``salt``
(Docker through saltext-dockermod, HAProxy through ``saltcd_haproxy.*``, the
gate through ``saltcd.wait_healthy``) and ``test``, the state run's test mode,
and returns a state return (``name``, ``changes``, ``result``, ``comment``).
"""

import logging
import socket
import subprocess
import sys
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

NEXT_SUFFIX = "-next"
RETIRED_INFIX = "-retired-"
# The label of the spec fingerprint (saltcd.config.container_spec.SPEC_LABEL; a unit test keeps them equal).
SPEC_LABEL = "io.saltcd.spec"
# Run in a session of its own (it outlives the state run): stop a retired
# container within its stop timeout, then remove it. argv: docker URL (empty:
# the environment's), container, stop timeout.
REAPER = """
import sys
import docker
url, name, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])
api = docker.APIClient(base_url=url, version="auto") if url else docker.from_env().api
try:
    api.stop(name, timeout=timeout)
finally:
    api.remove_container(name, force=True)
"""


def _public_mapping(ports):
    """(public host port, container port) of the app's one published port."""
    ports = list(ports or [])
    if len(ports) != 1:
        raise SaltInvocationError(f"start-first needs exactly one published port, got {ports!r}")
    parts = str(ports[0]).split(":")
    if len(parts) < 2 or not parts[-1] or not parts[-2]:
        raise SaltInvocationError(f"start-first needs a HOST:CONTAINER port, got {ports[0]!r}")
    return int(parts[-2]), parts[-1]


def _inspect(salt, name):
    try:
        return salt["docker.inspect_container"](name)
    except CommandExecutionError as exc:
        if "404" in str(exc) or "No such container" in str(exc):
            return None
        raise


def _private_address(info, container_port):
    """`host:port` the container publishes `container_port` on, or None.

    The configured binding first: it is there even while the container is
    stopped (a new image that exits at once must fail its gate, not look like
    a container without a port); then the live one (an ephemeral port)."""
    key = container_port if "/" in container_port else f"{container_port}/tcp"
    configured = ((info.get("HostConfig") or {}).get("PortBindings") or {}).get(key) or []
    live = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(key) or []
    for entry in [*configured, *live]:
        if entry.get("HostPort") not in (None, "", "0"):
            return f"{entry.get('HostIp') or '127.0.0.1'}:{entry['HostPort']}"
    return None


def _holds_public_port(info, public_port):
    """True if a container publishes the app's public port itself (a stop-first one)."""
    bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
    return any(str(entry.get("HostPort")) == str(public_port)
               for entries in bindings.values() for entry in entries or [])


def _summary(salt, info):
    if not info:
        return None
    described = salt["saltcd.container"](info["Id"])
    return {"id": info["Id"], "digest": described.get("digest")}


def _runs(info, image, options=None):
    """Does the container run `image`, created with the spec `options` carry (its label)?"""
    if not info:
        return False
    digest = image.rsplit("@", 1)[1] if "@" in image else None
    config = info.get("Config") or {}
    config_image = config.get("Image") or ""
    wanted = ((options or {}).get("labels") or {}).get(SPEC_LABEL)
    if wanted is not None and (config.get("Labels") or {}).get(SPEC_LABEL) != wanted:
        return False
    return config_image == image or (digest is not None and config_image.endswith("@" + digest))


def _networks(options):
    """[(network, settings)] of `networks:` as docker_container.running takes it."""
    found = []
    given = options.get("networks") or []
    for item in ([{k: v} for k, v in given.items()] if isinstance(given, dict) else given):
        if isinstance(item, str):
            found.append((item, {}))
        else:
            (network, settings), = item.items()
            found.append((network, dict(settings or {})))
    return found


def _create(salt, image, name, port_binding, environment, restart_policy, stop_timeout, options):
    """Create `name` with the app's options, on its networks (with their aliases)."""
    options = dict(options or {})
    networks = _networks(options)
    options.pop("networks", None)
    if port_binding:
        options["port_bindings"] = port_binding
    salt["docker.create"](image, name=name, environment=environment or {},
                              restart_policy=restart_policy, stop_timeout=int(stop_timeout), **options)
    for network, settings in networks:
        salt["docker.connect_container_to_network"](name, network, **settings)


def _free_port(host):
    """A port nobody listens on at `host` now, for the new container to publish."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _remove(salt, name, stop_timeout):
    """Stop (within its stop timeout) and remove a container, if it exists."""
    if _inspect(salt, name) is None:
        return
    salt["docker.stop"](name, timeout=int(stop_timeout))
    salt["docker.rm"](name, force=True)


def _retire(salt, name, stop_timeout, notes):
    """Rename the old container out of the app's way and stop and remove it in
    the background (REAPER), so that its stop timeout holds up nothing."""
    info = _inspect(salt, name)
    if info is None:
        return
    retired = f"{name}{RETIRED_INFIX}{info['Id'][:12]}"
    salt["docker.rename"](name, retired)
    url = salt["config.option"]("docker.url", "") or ""
    subprocess.Popen([sys.executable, "-c", REAPER, str(url), retired, str(int(stop_timeout))],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)
    notes.append(f"the old container, now {retired}, stops and goes in the background")


def _clear_retired(salt, name, stop_timeout):
    """Remove retired containers an earlier run's background stop left behind
    (it failed, or the host restarted meanwhile)."""
    for found in salt["docker.list_containers"](all=True):
        if found.startswith(f"{name}{RETIRED_INFIX}"):
            _remove(salt, found, stop_timeout)


def _finish(salt, name, next_name, old_slot, drain, stop_timeout, notes):
    """The switch is done: let the old slot drain, retire it, and make `-next` the app."""
    if old_slot:
        left = salt["saltcd_haproxy.wait_drained"](name, old_slot, drain)
        if left:
            notes.append(f"{left} request(s) still in flight after {drain}s of drain")
        salt["saltcd_haproxy.retire"](name, old_slot)
    _retire(salt, name, stop_timeout, notes)
    salt["docker.rename"](next_name, name)


# A hook's output kept in its comment (and so in the rollout's record).
HOOK_LINES = 20
HOOK_POLL = 0.5


def gone(salt, test, name, stop_timeout=10):
    """
    Container ``name``, which this minion no longer runs for its app (a role
    moved to other minions or removed, the app's own container once the app
    has roles), stopped and removed, if saltcd created it (it carries saltcd's
    spec label). A container of that name without the label is not saltcd's:
    left alone, and the comment says so. Applied by saltcd.deploy before it
    replaces the roles this minion does run.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    info = _inspect(salt, name)
    if info is None:
        ret["comment"] = f"{name} is not there"
        return ret
    if SPEC_LABEL not in ((info.get("Config") or {}).get("Labels") or {}):
        ret["comment"] = f"{name} was not made by saltcd (no {SPEC_LABEL} label): left alone"
        return ret
    if test:
        ret["result"] = None
        ret["comment"] = f"{name} would be stopped and removed (this minion no longer runs it)"
        return ret
    _remove(salt, name, stop_timeout)
    ret["changes"] = {"removed": name}
    ret["comment"] = f"{name} stopped and removed: this minion no longer runs it"
    return ret


def hook(salt, test, name, image, command, environment=None, options=None, timeout=600):
    """
    Run ``command`` once in a new container ``name`` of ``image`` with the app's
    ``environment`` and ``options`` (its volumes and networks: a migration sees
    what the app sees), wait for it to exit (at most ``timeout`` s), remove it.
    The command replaces the image's entrypoint (a list is run as it is, a
    string with ``/bin/sh -c``). Passes when it exits 0; the comment ends with
    its last lines of output.
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    shown = command if isinstance(command, str) else " ".join(command)
    if test:
        ret["result"] = None
        ret["comment"] = f"Would run `{shown}` in a one-off container of {image}"
        return ret
    options = {k: v for k, v in (options or {}).items() if k != "labels"}  # not one of the app's containers
    # What the hook says is all that runs: the image's ENTRYPOINT (a server's
    # start script, often) would take the command as its arguments.
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    options.update(entrypoint=argv[:1], command=argv[1:])
    _remove(salt, name, 10)  # what an interrupted run left
    try:
        _create(salt, image, name, None, environment, "no", 10, options)
        salt["docker.start"](name)
        deadline = time.monotonic() + float(timeout)
        # Bounded: one look per HOOK_POLL until it exits or `timeout` has passed.
        # (Not docker.state: it keeps its first answer for the whole state run.)
        while (state := salt["docker.inspect_container"](name).get("State") or {}).get("Running"):
            if time.monotonic() >= deadline:
                _remove(salt, name, 10)
                ret["comment"] = f"hook `{shown}` did not finish within {timeout} s: stopped"
                return ret
            time.sleep(HOOK_POLL)
        code = state.get("ExitCode")
        output = salt["docker.logs"](name)
    except CommandExecutionError as exc:
        _remove(salt, name, 10)
        ret["comment"] = f"hook `{shown}` could not run: {exc}"
        return ret
    _remove(salt, name, 10)
    last = "\n".join(str(output or "").splitlines()[-HOOK_LINES:])
    ret["result"] = code == 0
    ret["changes"] = {"hook": {"command": shown, "exit_code": code}}
    ret["comment"] = f"hook `{shown}` exited {code}" + (f"; its last lines:\n{last}" if last else "")
    return ret


def start_first(salt, test, name, image, ports, environment=None, restart_policy="unless-stopped", stop_timeout=10,
                drain=10, health=None, options=None):
    """
    Replace container ``name`` with ``image`` start-first, behind the host's HAProxy
    (see the module's docstring and ``_start_first``). ``options``: the app's
    docker_container.running options (binds, networks with aliases, command, ...),
    which the new container is created with.
    """
    try:
        return _start_first(salt, test, name, image, ports, environment, restart_policy, stop_timeout, drain, health,
                            options or {})
    except CommandExecutionError as exc:
        # Docker or HAProxy refused something. Unless HAProxy already routes to
        # the new container, it goes: what served before keeps serving.
        next_name = f"{name}{NEXT_SUFFIX}"
        try:
            pending = _inspect(salt, next_name)
            _, routed = salt["saltcd_haproxy.live"](name)
            if pending and routed != _private_address(pending, _public_mapping(ports)[1]):
                _remove(salt, next_name, stop_timeout)
        except (CommandExecutionError, SaltInvocationError) as cleanup:
            log.warning("saltcd_release: could not clean up %s: %s", next_name, cleanup)
        return {"name": name, "changes": {}, "result": False,
                "comment": f"start-first replacement of {name} failed: {exc}"}


def _start_first(salt, test, name, image, ports, environment, restart_policy, stop_timeout, drain, health,
                 options):
    """
    Replace container ``name`` with ``image`` start-first, behind the host's HAProxy.

    name
        The app's container name.
    image
        The pinned image reference (``repo@sha256:...``).
    ports
        The app's published port, one ``"HOST:CONTAINER"`` entry: HAProxy binds
        HOST, the containers publish CONTAINER privately.
    drain
        Seconds to let requests in flight on the old container finish.
    health
        ``{path, timeout, interval, settle, status}`` of the gate.
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    health = {"path": "/health", "timeout": 30, "interval": 1, "settle": 0, "status": 200, "check": "http",
              "command": None, **(health or {})}
    conf = salt["saltcd_haproxy.settings"]()
    try:
        public_port, container_port = _public_mapping(ports)
    except SaltInvocationError as exc:
        ret["comment"] = str(exc)
        return ret
    next_name = f"{name}{NEXT_SUFFIX}"
    current = _inspect(salt, name)
    pending = _inspect(salt, next_name)
    live_slot, routed = salt["saltcd_haproxy.live"](name)
    notes = []

    # A run that stopped after its switch (crash, minion restart): finish it first.
    if pending and routed and routed == _private_address(pending, container_port):
        if test:
            ret["result"] = None
            ret["comment"] = f"Would finish the switch to {next_name}, then deploy {image}"
            return ret
        ret["changes"]["finished_switch"] = {"old": _summary(salt, current), "new": _summary(salt, pending)}
        # The other slot served the old container: it may still finish requests.
        _finish(salt, name, next_name, "b" if live_slot == "a" else "a", drain, stop_timeout, notes)
        notes.append(f"finished an interrupted switch to {next_name}")
        current, pending = _inspect(salt, name), None

    current_address = _private_address(current, container_port) if current else None
    running = bool(current and (current.get("State") or {}).get("Running"))
    if _runs(current, image, options) and running and current_address and not _holds_public_port(current, public_port):
        if routed == current_address:
            ret["result"] = True
            ret["comment"] = " ".join([f"{name} runs {image} and HAProxy routes to it", *notes])
            return ret
        # Running the right image but not routed (HAProxy restarted without our
        # file, or Docker gave the container another port): route it again.
        if test:
            ret["result"] = None
            ret["comment"] = f"Would route HAProxy to {name} at {current_address}"
            return ret
        salt["saltcd_haproxy.ensure_frontend"](name, public_port, upstream=current_address)
        switched = salt["saltcd_haproxy.switch"](name, current_address, public_port)
        if switched["old"]:
            salt["saltcd_haproxy.retire"](name, switched["old"])
        ret["result"] = True
        ret["changes"]["route"] = {"old": routed, "new": current_address}
        ret["comment"] = " ".join([f"HAProxy routes to {name} at {current_address} again", *notes])
        return ret

    converting = bool(current and _holds_public_port(current, public_port))
    if test:
        ret["result"] = None
        ret["comment"] = (f"Would start {next_name} from {image}, gate it on "
                          f"{conf['upstream_host']}, switch HAProxy to it and remove the old {name}"
                          + (" (stopping the stop-first container first: a short gap)" if converting else ""))
        return ret

    if pending:  # an earlier attempt that never got the traffic
        _remove(salt, next_name, stop_timeout)
    _clear_retired(salt, name, stop_timeout)
    try:
        # An explicit host port, not an ephemeral one: Docker may give a
        # restarted container a new ephemeral port, and HAProxy would go on
        # routing to the old one.
        private_port = _free_port(conf["upstream_host"])
        _create(salt, image, next_name, f"{conf['upstream_host']}:{private_port}:{container_port}", environment,
                restart_policy, stop_timeout, options)
        salt["docker.start"](next_name)
    except (CommandExecutionError, OSError) as exc:
        _remove(salt, next_name, stop_timeout)
        ret["comment"] = f"could not start {next_name} from {image}: {exc}; {name} keeps serving"
        return ret
    # Where it listens is what it was created with (a container that exits at
    # once still fails below, in its gate).
    address = f"{conf['upstream_host']}:{private_port}"
    url = f"tcp://{address}" if health["check"] == "tcp" else f"http://{address}{health['path']}"
    gate = salt["saltcd.wait_healthy"](url, container=next_name, timeout=health["timeout"],
                                           interval=health["interval"], settle=health["settle"],
                                           status=health["status"], check=health["check"],
                                           command=health["command"])
    if not gate["healthy"]:
        _remove(salt, next_name, stop_timeout)
        ret["comment"] = (f"{next_name} failed its health gate, removed it; {name} keeps serving. "
                          f"{gate['comment']}")
        return ret

    old = _summary(salt, current)
    if converting:
        # The stop-first container holds the public port HAProxy must bind: stop it
        # now (a short gap, once per host, when an app moves to start-first).
        _remove(salt, name, stop_timeout)
        notes.append(f"stopped the stop-first {name} to hand its port to HAProxy")
        current = None
    salt["saltcd_haproxy.ensure_frontend"](name, public_port, upstream=address)
    switched = salt["saltcd_haproxy.switch"](name, address, public_port)
    _finish(salt, name, next_name, switched["old"], drain, stop_timeout, notes)
    ret["result"] = True
    ret["changes"].update({"old": old, "new": _summary(salt, _inspect(salt, name))})
    ret["comment"] = " ".join([f"{name} replaced start-first with {image} ({gate['comment']})", *notes])
    return ret

"""
saltcd's minion side, its logic: what does a container run, and is it healthy?

The execution module ``saltcd`` (salt/_modules/saltcd.py) publishes these as
Salt functions through ``__utils__``; Salt syncs this file to minions from
``salt://_utils`` (``saltutil.sync_utils``, ``saltutil.sync_all``). What needs
Salt's functions takes the caller's ``__salt__`` as ``salt`` (and grains as
``grains``): explicit, whichever loader built this util. Docker is read
through the docker execution module of saltext-dockermod, so ``docker.url``
in the minion config is honoured. Image references are split by
``saltcd.reference`` (the master's grammar, salt/_utils/saltcd_references.py).
"""

import shlex
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from salt.exceptions import CommandExecutionError

# The label saltcd puts the container spec's fingerprint in (saltcd.config.container_spec.SPEC_LABEL).
SPEC_LABEL = "io.saltcd.spec"
# A connection that is not closed within this time counts as accepted by the app.
TCP_HOLD = 0.3
# Until the app first answers, the gate waits FIRST_WAIT after a failed probe,
# then twice that, and so on up to `interval`: most apps listen a fraction of a
# second after they start, and a whole interval after the first (failed) probe
# held every batch up for nothing (0.5 s a batch in the bench, 1 s by default).
# Once the app has answered, it is probed every `interval` (the settle).
FIRST_WAIT = 0.05


def reference(parse_reference, image):
    """Split an image reference with saltcd's grammar (``parse_reference`` of
    saltcd_references): ``{"registry", "repository", "tag", "digest"}``.
    Raises ``CommandExecutionError`` when it does not parse."""
    text = str(image)
    try:
        repository, tag, digest = parse_reference(text)
    except ValueError as exc:
        raise CommandExecutionError(f"invalid image reference {text[:120]!r}: {exc}") from None
    return {"registry": repository.registry, "repository": str(repository), "tag": tag,
            "digest": digest}


def _parsed(salt, image):
    try:
        return salt["saltcd.reference"](image)
    except CommandExecutionError:
        return None


def _repo_digest(salt, image_id, image_ref):
    """The registry digest of a local image, for containers not started by digest:
    the RepoDigests entry of the repository the container was created from."""
    try:
        image = salt["docker.inspect_image"](image_id)
    except CommandExecutionError:
        return None
    wanted = _parsed(salt, image_ref) if image_ref else None
    for entry in image.get("RepoDigests") or []:
        found = _parsed(salt, entry)
        if found and found["digest"] and (wanted is None or found["repository"] == wanted["repository"]):
            return found["digest"]
    return None


def container(salt, name):
    """Container ``name``: exists, running, digest, spec (the fingerprint saltcd
    labelled it with), id, started_at, exit code, restart count."""
    try:
        info = salt["docker.inspect_container"](name)
    except CommandExecutionError as exc:
        if "404" in str(exc) or "No such container" in str(exc):
            return {"exists": False, "running": False, "digest": None}
        raise
    state = info.get("State") or {}
    image_ref = (info.get("Config") or {}).get("Image")
    pinned = _parsed(salt, image_ref) if image_ref else None
    digest = (pinned or {}).get("digest") or _repo_digest(salt, info.get("Image"), image_ref)
    labels = (info.get("Config") or {}).get("Labels") or {}
    return {
        "exists": True,
        "running": bool(state.get("Running")),
        "digest": digest,
        # The fingerprint of the spec it was created with (None: not by saltcd, or before specs).
        "spec": labels.get(SPEC_LABEL),
        "image": image_ref,
        "id": info.get("Id"),
        "started_at": state.get("StartedAt"),
        "exit_code": state.get("ExitCode"),
        "restart_count": info.get("RestartCount", 0),
    }


def containers(salt, names):
    """``container`` of each of ``names``: ``{name: info}``."""
    return {name: container(salt, name) for name in names}


def probe(url, timeout=2, status=200):
    """One HTTP GET of ``url``: ``{"healthy": bool, "status": code, "error": text, "seconds"}``."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec: operator-configured URL
            code = response.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return {"healthy": False, "status": None, "error": str(getattr(exc, "reason", exc)),
                "seconds": round(time.monotonic() - started, 3)}
    return {"healthy": code == status, "status": code, "error": None,
            "seconds": round(time.monotonic() - started, 3)}


def health_probe(salt, check, url, container=None, status=200, command=None, timeout=2):
    """One probe of a container's health, by ``check``: ``http`` (GET ``url``,
    expect ``status``), ``tcp`` (a connection to ``url``'s host and port is
    accepted), ``command`` (``command`` run in ``container`` exits 0),
    ``docker`` (the image's own HEALTHCHECK says healthy), ``running``
    (``container`` runs). Returns ``{"healthy", "status", "error", "seconds"}``."""
    started = time.monotonic()
    if check == "http":
        return probe(url, timeout=timeout, status=status)
    if check not in _PROBES:
        raise CommandExecutionError(f"unknown health check {str(check)[:40]!r}")
    healthy, code, error = _PROBES[check](salt, url, container, command, timeout)
    return {"healthy": healthy, "status": code, "error": error, "seconds": round(time.monotonic() - started, 3)}


def _tcp(salt, url, container, command, timeout):  # pylint: disable=unused-argument
    """Accepted and not closed at once: Docker's userland proxy accepts every
    connection to a published port and closes it when nothing listens behind."""
    parsed = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout) as sock:
            sock.settimeout(TCP_HOLD)
            try:
                closed = sock.recv(1) == b""
            except socket.timeout:
                closed = False  # open and silent: a server that waits for its client
            except OSError:
                closed = True  # reset
    except OSError as exc:
        return False, None, f"{parsed.hostname}:{parsed.port}: {exc.strerror or exc}"
    if closed:
        return False, None, f"{parsed.hostname}:{parsed.port}: closed at once (nothing listens behind it?)"
    return True, None, None


def _command(salt, url, container, command, timeout):  # pylint: disable=unused-argument
    text = command if isinstance(command, str) else shlex.join(command or [])
    try:
        code = salt["docker.retcode"](container, text, ignore_retcode=True)
    except CommandExecutionError as exc:
        return False, None, str(exc)[:200]
    return code == 0, code, None if code == 0 else f"`{text[:80]}` exited {code}"


def _docker(salt, url, container, command, timeout):  # pylint: disable=unused-argument
    try:
        health = ((salt["docker.inspect_container"](container).get("State") or {}).get("Health")) or {}
    except CommandExecutionError as exc:
        return False, None, str(exc)[:200]
    if not health:
        return False, None, "the image has no HEALTHCHECK"
    return health.get("Status") == "healthy", health.get("Status"), None


def _running(salt, url, container, command, timeout):  # pylint: disable=unused-argument
    # The gate already fails on an exited or restarted container (_container_problem).
    try:
        state = salt["docker.inspect_container"](container).get("State") or {}
    except CommandExecutionError as exc:
        return False, None, str(exc)[:200]
    return bool(state.get("Running")), None, None if state.get("Running") else "container not running"


_PROBES = {"tcp": _tcp, "command": _command, "docker": _docker, "running": _running}


def health_url(grains, check, port, path="/health", host="127.0.0.1"):
    """Where ``check`` probes: ``http://host:port/path`` or ``tcp://host:port``
    (grain ``saltcd:health_host`` overrides ``host``: the address a minion's
    published ports answer on is the minion's business)."""
    host = ((grains or {}).get("saltcd") or {}).get("health_host", host)
    return f"tcp://{host}:{int(port)}" if check == "tcp" else f"http://{host}:{int(port)}{path}"


def status(salt, grains, name, port, path="/health", host="127.0.0.1", timeout=2, check="http", command=None):
    """The container ``name`` and one probe of its health (``check``)."""
    url = health_url(grains, check, port, path, host)
    info = container(salt, name)
    info["health_url"] = url
    info["health"] = health_probe(salt, check, url, container=name, command=command, timeout=timeout) \
        if info["running"] else {"healthy": False, "status": None, "error": "container not running"}
    return info


def statuses(salt, grains, probes):
    """``status`` of several containers: ``probes`` is a list of
    ``{name, check, port, path, host, command}``; returns ``{name: info}``."""
    return {p["name"]: status(salt, grains, p["name"], p.get("port", 8080), p.get("path", "/health"),
                              p.get("host", "127.0.0.1"), check=p.get("check", "http"),
                              command=p.get("command"))
            for p in probes}


def _container_problem(salt, name, first):
    """A reason if container `name` stopped or restarted since `first` (its
    (id, started_at, restart_count) when the gate began), else None; and the mark now."""
    if not name:
        return None, None
    info = container(salt, name)
    if not info["exists"]:
        return f"container {name} does not exist", None
    if not info["running"]:
        return f"container {name} exited with code {info.get('exit_code')}", None
    mark = (info.get("id"), info.get("started_at"), info.get("restart_count"))
    if first is not None and mark != first:
        # A restart policy brings a dying container back between two probes:
        # without this check an app that crash-loops could pass the gate.
        return (f"container {name} restarted during the gate "
                f"(restart count {first[2]} -> {mark[2]})"), mark
    return None, mark


def waits_before_healthy(interval):
    """The gate's waits until the app first answers: FIRST_WAIT, doubling, up to
    `interval` (and `interval` when that is shorter). Endless."""
    wait = min(FIRST_WAIT, float(interval))
    while True:
        yield wait
        wait = min(wait * 2, float(interval))


def wait_healthy(salt, url, container=None, timeout=30, interval=1, settle=0, status=200, check="http",
                 command=None):
    """Wait until the container is healthy by ``check`` (``url`` answers
    ``status``, by default; see ``health_probe``), then stay healthy for
    ``settle`` s; fail fast when ``container`` has exited. The health gate of
    both deploy strategies. Returns ``{"healthy": bool, "comment": text}``."""
    started = time.monotonic()
    deadline = started + float(timeout)
    healthy_at = None
    first = None
    waits = waits_before_healthy(interval)
    # Bounded: every iteration sleeps (FIRST_WAIT doubling, up to `interval`),
    # and the loop ends at `deadline` (or after `settle` once healthy).
    while True:
        down, mark = _container_problem(salt, container, first)
        if down:
            return {"healthy": False, "comment": f"Unhealthy: {down}"}
        first = first or mark
        last = health_probe(salt, check, url, container=container, status=status, command=command,
                            timeout=min(float(interval) + 1, 5))
        now = time.monotonic()
        if last["healthy"]:
            healthy_at = healthy_at or now
            if now - healthy_at >= float(settle):
                return {"healthy": True,
                        "comment": (f"Healthy after {healthy_at - started:.1f}s"
                                    + (f", still healthy after {settle}s" if settle else ""))}
        elif healthy_at is not None:
            return {"healthy": False,
                    "comment": (f"Unhealthy: became unhealthy {now - healthy_at:.1f}s after "
                                f"first passing (status {last['status']}, {last['error']})")}
        elif now >= deadline:
            what = f"{url} did not answer {status}" if check == "http" else f"the {check} check did not pass"
            return {"healthy": False,
                    "comment": (f"Unhealthy: {what} within {timeout}s "
                                f"(last: status {last['status']}, {last['error']})")}
        time.sleep(float(interval) if healthy_at is not None else next(waits))


def fence(folder, app, env, token):
    """Take `token` (a master's lock token for app/env) if it is not older than the
    highest this minion has seen for app/env: None when taken, else why not.

    Several masters share the rollouts of an app/env through a lease lock whose
    token only grows (saltcd.ha). A master paused past its lease wakes up
    believing it still holds it; its next step carries its old token, and a
    minion that has seen the newer master's refuses it. The highest token is
    kept per app/env in `folder` (the minion's cachedir), under an flock, so
    two state runs never both pass a check the other has raised."""
    import fcntl  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel

    token = int(token)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{app}.{env}")
    with open(path, "a+", encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read().strip()
        highest = int(text) if text.isdigit() else 0
        if token < highest:
            return (f"refused: {app}/{env} step carries lock token {token}, but this minion has seen "
                    f"{highest} (a newer master holds the rollout)")
        if token > highest:
            handle.seek(0)
            handle.truncate()
            handle.write(str(token))
            handle.flush()
            os.fsync(handle.fileno())
    return None

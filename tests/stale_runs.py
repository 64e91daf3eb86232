"""What an interrupted test run left running, found and stopped by the next run.

Each temp folder a test session keeps its daemons in (the lab's scd-it-,
salt-factories' scd-sf-, the wheel test's scd-whl-) is made by
`session_folder`, which writes an `owner.pid` naming the test process (the
pytest-xdist worker) and its start time. A run killed before its teardown
(`kill`, SIGKILL, or a Ctrl-C whose teardown pytest-xdist cuts short) leaves
dockerds, registries, HAProxies and Salt daemons running on the loopback
addresses and ports the next run needs, where they break it. So a session
first sweeps every such folder whose owner is gone: it purges the Docker
hosts the folder lists (containers, dockerd, bridge: `DockerHost.purge`),
stops the daemons started from it, and removes the folder.

Nothing else is touched. A folder qualifies only with our prefix, made by
this user with no access for others (as mkdtemp makes it), and an owner file
naming a process that no longer runs; a process only when it names the folder
and is one of the programs the tests start (below), or runs from the folder.
A `tail -f` of a log in it, or an editor, is left alone.
"""

import fcntl
import json
import logging
import os
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

from sandbox import processes
from sandbox.docker_hosts import DockerHost

log = logging.getLogger(__name__)

TMP = Path("/tmp")
PREFIXES = ("scd-it-", "scd-sf-", "scd-whl-")
OWNER = "owner.pid"
DOCKER_HOSTS = "docker-hosts.json"
LOCK = "scd-sweep.lock"  # in TMP: two xdist workers sweep one after the other
# The daemons the tests start that name their folder only in their arguments;
# the others (Salt daemons, a wheel's venv) run a program or script from it.
PROGRAMS = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker-proxy", "docker-registry",
            "haproxy", "etcd")
STOP_TIMEOUT = 10


def session_folder(prefix, tmp=TMP):
    """A new temp folder for this session's daemons, marked as this process's."""
    if prefix not in PREFIXES:
        raise ValueError(f"{prefix!r} is not one of {PREFIXES}: a sweep would never find it")
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp))
    (folder / OWNER).write_text(f"{os.getpid()} {processes.start_time(os.getpid())}\n", encoding="ascii")
    return folder


def record_docker_hosts(folder, hosts):
    """List the DockerHosts whose roots are in `folder`, so that a sweep can purge them."""
    entries = [{"name": h.name, "address": h.address, "root": str(h.root), "index": h.index} for h in hosts]
    (Path(folder) / DOCKER_HOSTS).write_text(json.dumps(entries), encoding="utf-8")


def _ours(path, directory=False):
    """True if path is this user's own, not a link, and closed to others (as mkdtemp makes it)."""
    try:
        info = path.lstat()
    except OSError:
        return False
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    return kind(info.st_mode) and info.st_uid == os.geteuid() and not (directory and info.st_mode & 0o077)


def _read(path):
    return path.read_text(encoding="utf-8") if _ours(path) else None


def owner_alive(folder):
    """True if the process named in folder's owner file still runs; None when there is no such file."""
    try:
        pid, started = (_read(folder / OWNER) or "").split()
        pid = int(pid)
    except ValueError:
        return None
    return processes.alive(pid) and processes.start_time(pid) == started


def _folders(tmp):
    return [f for f in sorted(tmp.iterdir()) if f.name.startswith(PREFIXES) and _ours(f, directory=True)]


def _docker_hosts(folder):
    try:
        entries = json.loads(_read(folder / DOCKER_HOSTS) or "[]")
    except ValueError:
        return []
    return [e for e in entries if Path(e["root"]).resolve().is_relative_to(folder.resolve())]


def _started_from(folder, argv):
    """True if argv is a daemon a test started from `folder`."""
    inside = str(folder) + "/"
    if not argv or not any(arg == str(folder) or inside in arg for arg in argv):
        return False
    if len(argv) == 1:  # a title set with setproctitle, as Salt's processes do: one string
        argv = argv[0].split()
    program = Path(argv[0]).name
    script = argv[1] if len(argv) > 1 and program.startswith("python") else ""
    return program in PROGRAMS or argv[0].startswith(inside) or script.startswith(inside)


def sweep_folder(folder, busy_indexes=()):
    """Purge the Docker hosts a stale folder lists (but none whose index a live
    session uses: purge finds bridges and proxies by index), stop the daemons
    started from it, remove it. Every step is tried; the owner file goes first,
    so that a folder is swept once even when a step fails."""
    hosts = _docker_hosts(folder)
    pids = [pid for pid in processes.other_pids() if _started_from(folder, processes.argv(pid))]
    (folder / OWNER).unlink(missing_ok=True)
    for entry in hosts:
        if entry["index"] in busy_indexes:
            log.warning("not purging %s: a running session uses index %s", entry["name"], entry["index"])
            continue
        try:
            DockerHost(entry["name"], entry["address"], entry["root"], entry["index"]).purge()
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("could not purge %s of %s: %s", entry["name"], folder, exc)
    for pid in pids:  # all at once: a Salt master's workers go with it
        processes.signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid in pids:
        if not processes.wait_gone(pid, max(0.0, deadline - time.monotonic())) \
                and _started_from(folder, processes.argv(pid)):  # still that process, not a new one
            processes.signal_pid(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def sweep(tmp=TMP):
    """Sweep every stale folder in `tmp`, one sweeper at a time; the folders swept.
    Only as root: the labs run as root, and a user's run could not stop them."""
    if os.geteuid() != 0:
        return []
    with open(tmp / LOCK, "a", encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            folders = {folder: owner_alive(folder) for folder in _folders(tmp)}
            stale = [folder for folder, alive in folders.items() if alive is False]
            busy = {e["index"] for folder, alive in folders.items() if alive for e in _docker_hosts(folder)}
            for folder in stale:
                log.warning("an earlier test run left %s behind: stopping what it started", folder)
                sweep_folder(folder, busy)
            return stale
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

"""What an interrupted test run left running, found and stopped by the next run.

Each temp folder a test session keeps its daemons in (the lab's scd-it-,
salt-factories' scd-sf-, the wheel test's scd-whl-) gets an `owner.pid` file
naming the pytest process that made it. A run killed before its teardown
(SIGTERM or SIGKILL, or pytest-xdist killing a worker still stopping its lab
after its 10 s grace) leaves dockerds, registries, HAProxies and Salt daemons
running on the loopback addresses and ports the next run needs, where they
break it. So a session first sweeps every such folder whose owner is gone:
it purges the Docker hosts the folder lists (containers, dockerd, bridge:
`DockerHost.purge`), stops every process whose command line names the
folder, and removes the folder.

Nothing else is touched: a folder qualifies only with our prefix and an
owner file naming a process that no longer runs (a folder without one may be
a session that is just starting), and a process only by naming such a folder.
"""

import fcntl
import json
import logging
import os
import shutil
import signal
from pathlib import Path

from sandbox import processes
from sandbox.engines import DockerHost

log = logging.getLogger(__name__)

TMP = Path("/tmp")
PREFIXES = ("scd-it-", "scd-sf-", "scd-whl-")
OWNER = "owner.pid"
DOCKER_HOSTS = "docker-hosts.json"
LOCK = "scd-sweep.lock"  # in TMP: two xdist workers sweep one after the other
STOP_TIMEOUT = 10


def claim(folder):
    """Mark `folder` as this process's (call right after making it)."""
    (Path(folder) / OWNER).write_text(f"{os.getpid()}\n", encoding="ascii")


def record_docker_hosts(folder, hosts):
    """List the DockerHosts whose roots are in `folder`, so that a sweep can purge them."""
    entries = [{"name": h.name, "address": h.address, "root": str(h.root), "index": h.index} for h in hosts]
    (Path(folder) / DOCKER_HOSTS).write_text(json.dumps(entries), encoding="utf-8")


def owner(folder):
    """The pid in folder's owner file, or None when it has none (or not one we can read)."""
    try:
        return int((Path(folder) / OWNER).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def stale_folders(tmp=TMP):
    """Our folders in `tmp` whose owner process is gone."""
    found = []
    for folder in sorted(tmp.iterdir()):
        if not folder.name.startswith(PREFIXES) or not folder.is_dir() or folder.is_symlink():
            continue
        pid = owner(folder)
        if pid is not None and not processes.alive(pid):
            found.append(folder)
    return found


def _naming(folder):
    """PIDs of the processes whose command line names `folder` or a path below it."""
    needle = str(folder)
    return [pid for pid in processes.other_pids()
            if any(arg == needle or needle + "/" in arg for arg in processes.argv(pid))]


def sweep_folder(folder):
    """Purge the Docker hosts a stale folder lists, stop what names it, remove it."""
    try:
        entries = json.loads((folder / DOCKER_HOSTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entries = []
    for entry in entries:
        if Path(entry["root"]).resolve().is_relative_to(folder.resolve()):
            DockerHost(entry["name"], entry["address"], entry["root"], entry["index"]).purge()
    pids = _naming(folder)
    for pid in pids:  # all at once: a Salt master's workers go with it
        processes.signal_pid(pid, signal.SIGTERM)
    for pid in pids:
        if not processes.wait_gone(pid, STOP_TIMEOUT):
            processes.signal_pid(pid, signal.SIGKILL)
            processes.wait_gone(pid, STOP_TIMEOUT)
    shutil.rmtree(folder, ignore_errors=True)


def sweep(tmp=TMP):
    """Sweep every stale folder in `tmp`, one sweeper at a time; the folders swept.
    Only as root: the labs run as root, and a user's run could not stop them."""
    if os.geteuid() != 0:
        return []
    with open(tmp / LOCK, "a", encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            swept = stale_folders(tmp)
            for folder in swept:
                log.warning("an earlier test run left %s behind: stopping what it started", folder)
                try:
                    sweep_folder(folder)
                except Exception as exc:  # pylint: disable=broad-except
                    # Best effort: what still holds an address or port then
                    # fails the lab's own start, with that daemon's error.
                    log.warning("could not sweep %s: %s", folder, exc)
            return swept
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

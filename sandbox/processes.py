"""Helpers for the daemons the sandbox starts: start, wait, stop, and /proc reads.

Shared by the docker engines, the registry, the Salt daemons and the CLI.
All of them signal by pid, so every caller checks first that a pid is its own.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

from saltcd.rollout import holder

log = logging.getLogger(__name__)


# -- start -------------------------------------------------------------------


def start_daemon(cmd: list[str], logfile: Path) -> subprocess.Popen:
    """Start cmd with its output appended to logfile, in a session of its own."""
    with open(logfile, "ab") as out:
        # Its own session: a Ctrl-C at our terminal must not reach it, and
        # `up` may exit while it keeps running.
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until_up(
    proc: subprocess.Popen,
    answers: Callable[[], bool],
    what: str,
    timeout: float,
    log_tail: Callable[[], str],
    error: type[Exception],
    interval: float = 0.2,
) -> None:
    """Poll until the daemon `proc` answers; raise `error` if it exits or `timeout` passes."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if proc.poll() is not None:
            raise error(f"{what} exited with {proc.returncode}:\n{log_tail()}")
        if answers():
            log.info("%s answered after %.1f s", what, time.monotonic() - started)
            return
        if time.monotonic() > deadline:
            raise error(f"{what} did not answer within {timeout} s:\n{log_tail()}")
        time.sleep(interval)


def tail(path: Path, lines: int) -> str | None:
    """The last `lines` lines of a log file, or None when it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    return "\n".join(text.splitlines()[-lines:])


# -- stop --------------------------------------------------------------------


def signal_pid(pid: int, sig: int) -> None:
    """Send sig to pid; one that is already gone is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pid: int, timeout: float, reap: Callable[[], object] | None = None) -> bool:
    """Wait until pid has exited; True if it did within `timeout`.

    `reap` (e.g. ``Popen.poll``) collects the exit status when pid is our
    child: otherwise it would stay behind as a zombie.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not alive(pid):
            if reap is not None:
                reap()  # it may have exited just after the first reap
            return True
        time.sleep(0.1)
    return False


def terminate(pid: int, timeout: float, what: str, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM pid, and SIGKILL it if it is still there after `timeout`."""
    signal_pid(pid, signal.SIGTERM)
    if wait_gone(pid, timeout, reap):
        return
    log.warning("%s ignored SIGTERM for %s s: killing it", what, timeout)
    signal_pid(pid, signal.SIGKILL)
    wait_gone(pid, 10, reap)


# -- /proc -------------------------------------------------------------------


def other_pids() -> list[int]:
    """PIDs of every process but this one."""
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and int(entry.name) != os.getpid()]


def argv(pid: int) -> list[str]:
    """The command line of pid as a list of arguments ([] when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (saltcd.rollout.holder reads them)."""
    return holder.stat_fields(pid)


def is_zombie(pid: int) -> bool:
    """True if pid has exited but was not reaped yet (or is gone already)."""
    fields = _stat(pid)
    return fields is None or fields[0] == "Z"


def start_time(pid: int) -> str | None:
    """When pid started (clock ticks since boot, field 22), or None when it is gone:
    with the pid, it names one process even after the pid is reused."""
    return holder.start_time(pid)


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    return Path(f"/proc/{pid}").exists() and not is_zombie(pid)


def mount_points() -> list[str]:
    """Every mount point of this machine, from /proc/self/mounts."""
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 1:
            # /proc/self/mounts escapes spaces and the like as octal (\040).
            points.append(fields[1].encode().decode("unicode_escape"))
    return points


def unmount_below(folders: Iterable[Path | str]) -> None:
    """Lazily unmount whatever is mounted at or below `folders`, deepest first."""
    folders = [str(folder) for folder in folders]
    targets = [m for m in mount_points() if any(m == f or m.startswith(f + "/") for f in folders)]
    for target in sorted(targets, key=lambda m: m.count("/"), reverse=True):
        log.debug("unmounting leftover %s", target)
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)

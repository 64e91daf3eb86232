"""A real Salt master and minions for the sandbox, from config files written here.

Everything lives below one folder (``<repo>/.sandbox/salt``): configs, keys,
caches, sockets, pidfiles and logs (sockets and pidfiles move to /run/saltcd
when that folder is too deep for a unix socket path). The daemons are the venv's
own ``salt-master`` and ``salt-minion`` (found next to ``sys.executable``),
started in their own session so they outlive ``up``; ``stop`` ends them by pid,
then sweeps up any python or Salt process whose command line names our config
folder (e.g. a `salt-run` an operator left running against the sandbox).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import yaml

from sandbox import processes

log = logging.getLogger(__name__)

MASTER_ADDRESS = "127.0.0.1"
PUBLISH_PORT = 4505
RET_PORT = 4506
# Linux unix socket paths hold at most 107 bytes; Salt's longest socket name in
# sock_dir is `minion_event_<10 hex>_pub.ipc` (31), below `<run_dir>/<minion id>/`.
UNIX_PATH_MAX = 107
SOCKET_NAME_MAX = 48
RUN_BASE = Path("/run/saltcd")
# Programs that we may stop as ours (python too), when they name our config folder.
SALT_PROGRAMS = ("salt-master", "salt-minion", "salt-run", "salt-call", "salt-key", "salt")

CONFIG_HEADER = """\
# Written by `python -m sandbox up`; regenerated on every start.
# auto_accept is on because this is the sandbox: the master listens on
# 127.0.0.1 only and every minion that can reach it is one the sandbox started.
# Never copy auto_accept to a master reachable from a network.
"""


class SaltDaemonError(RuntimeError):
    """A Salt daemon could not be started."""


def salt_binary(name: str) -> Path:
    """The venv's own Salt script `name` (salt-master, salt-run, ...)."""
    # Not resolved: the venv's bin/python is usually a symlink to the system one.
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SaltDaemonError(f"{path} not found: run the sandbox with the venv's python")
    return path


def port_in_use(address: str, port: int) -> bool:
    """True if something listens on address:port (a listening bind would fail)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        # Connections in TIME_WAIT (e.g. our own health checks) do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return True
    return False


def listening(address: str, port: int, timeout: float = 1) -> bool:
    """True if a TCP connection to address:port succeeds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


class SaltDaemons:
    """One master and its minions, configured and run below ``root``."""

    def __init__(self, root: Path | str, master_settings: dict | None = None,
                 minions: dict[str, dict] | None = None, minion_environ: dict[str, dict] | None = None):
        """`master_settings` is merged into the master config; `minions` maps id -> config overrides;
        `minion_environ` maps id -> extra environment variables of that minion's process."""
        self.root = Path(root).absolute()
        self.master_settings = dict(master_settings or {})
        self.minions = dict(minions or {})
        self.minion_environ = {k: dict(v) for k, v in (minion_environ or {}).items()}
        self.conf_dir = self.root / "conf"
        self.log_dir = self.root / "log"
        self.run_dir = self.root / "run"
        if len(str(self.run_dir)) + SOCKET_NAME_MAX > UNIX_PATH_MAX:
            self.run_dir = RUN_BASE / f"salt-{hashlib.sha256(bytes(self.root)).hexdigest()[:12]}"
        self._procs: dict[str, subprocess.Popen] = {}

    # -- paths and configs ---------------------------------------------------

    @property
    def master_conf_file(self) -> Path:
        """The master config file (`salt-run -c` takes its folder, conf_dir)."""
        return self.conf_dir / "master"

    def minion_conf_dir(self, minion_id: str) -> Path:
        """The folder `salt-minion -c` reads `minion` from."""
        return self.conf_dir / minion_id

    def pidfile(self, name: str) -> Path:
        """Where daemon `name` ("master" or a minion id) writes its pid."""
        return self.run_dir / f"{name}.pid"

    def master_config(self) -> dict:
        """The master config: our paths and ports, plus the given settings."""
        return {
            "interface": MASTER_ADDRESS,
            "publish_port": PUBLISH_PORT,
            "ret_port": RET_PORT,
            "user": "root",
            "root_dir": str(self.root),
            "pki_dir": str(self.root / "pki" / "master"),
            "cachedir": str(self.root / "cache" / "master"),
            "sock_dir": str(self.run_dir / "master"),
            "pidfile": str(self.pidfile("master")),
            "log_file": str(self.log_dir / "master.log"),
            "key_logfile": str(self.log_dir / "key.log"),
            "log_level": "warning",
            "log_level_logfile": "info",
            # Sandbox only (loopback, our own minions): see CONFIG_HEADER.
            "auto_accept": True,
            **self.master_settings,
        }

    def minion_config(self, minion_id: str) -> dict:
        """A minion's config: every path of its own (they share root_dir)."""
        return {
            "id": minion_id,
            "master": MASTER_ADDRESS,
            "master_port": RET_PORT,
            "user": "root",
            "root_dir": str(self.root),
            "pki_dir": str(self.root / "pki" / minion_id),
            "cachedir": str(self.root / "cache" / minion_id),
            "extension_modules": str(self.root / "cache" / minion_id / "extmods"),
            "sock_dir": str(self.run_dir / minion_id),
            "pidfile": str(self.pidfile(minion_id)),
            "log_file": str(self.log_dir / f"{minion_id}.log"),
            "log_level": "warning",
            "log_level_logfile": "info",
            "acceptance_wait_time": 1,
            "random_reauth_delay": 0,
            # Loopback only: no reverse DNS lookups at grain time.
            "enable_fqdns_grains": False,
            "enable_gpu_grains": False,
            **self.minions[minion_id],
        }

    def write_configs(self) -> None:
        """Write the master config and one config folder per minion."""
        for path in (self.conf_dir, self.log_dir, self.run_dir):
            path.mkdir(parents=True, exist_ok=True)
        _write_yaml(self.master_conf_file, self.master_config())
        for minion_id in self.minions:
            folder = self.minion_conf_dir(minion_id)
            folder.mkdir(parents=True, exist_ok=True)
            _write_yaml(folder / "minion", self.minion_config(minion_id))

    # -- start ---------------------------------------------------------------

    def check_ports(self, extra: tuple[int, ...] = ()) -> None:
        """Fail clearly if the master's ports (or `extra` ones) are taken."""
        taken = [p for p in (PUBLISH_PORT, RET_PORT, *extra) if port_in_use(MASTER_ADDRESS, p)]
        if taken:
            raise SaltDaemonError(
                f"port(s) {', '.join(map(str, taken))} on {MASTER_ADDRESS} already in use: "
                "is another Salt master (or sandbox) running? Stop it, or run `down`.")

    def start(self, timeout: float = 120, wait_ports: tuple[int, ...] = ()) -> None:
        """Start the master, then every minion at once; wait until all answer a ping."""
        self.write_configs()
        deadline = time.monotonic() + timeout
        self.start_master(timeout, wait_ports)
        started = time.monotonic()
        bus = self._master_bus()  # subscribed before any minion can say it started
        try:
            for minion_id in self.minions:
                self._spawn(minion_id, "salt-minion", self.minion_conf_dir(minion_id))
            self._wait_for_start_events(bus, deadline)
        finally:
            bus.destroy()
        self.wait_for_minions(max(deadline - time.monotonic(), 10))
        log.info("%s minions answered after %.1f s", len(self.minions), time.monotonic() - started)

    def start_master(self, timeout: float, wait_ports: tuple[int, ...] = ()) -> None:
        """Start salt-master and wait until its ret port (and `wait_ports`) accept connections."""
        self._spawn("master", "salt-master", self.conf_dir)
        deadline = time.monotonic() + timeout
        bus_socket = self.run_dir / "master" / "master_event_pub.ipc"
        checks = [(f"{MASTER_ADDRESS}:{port}", lambda p=port: listening(MASTER_ADDRESS, p))
                  for port in (RET_PORT, *wait_ports)]
        checks.append((f"its event bus {bus_socket}", bus_socket.exists))
        for what, ready in checks:
            while not ready():
                self._check_alive("master")
                if time.monotonic() > deadline:
                    raise SaltDaemonError(f"salt-master did not open {what} within {timeout} s:\n"
                                          f"{self.log_tail('master')}")
                time.sleep(0.2)

    def _master_bus(self):
        """A listener on the master's event bus."""
        import salt.config  # pylint: disable=import-outside-toplevel  # slow imports, only here
        import salt.utils.event  # pylint: disable=import-outside-toplevel

        opts = salt.config.master_config(str(self.master_conf_file))
        return salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)

    def _wait_for_start_events(self, bus, deadline: float) -> None:
        """Wait for `salt/minion/<id>/start` of every minion (authenticated, connected)."""
        waiting = set(self.minions)
        while waiting and time.monotonic() < deadline:
            for name in ["master", *self.minions]:
                self._check_alive(name)
            event = bus.get_event(wait=1, full=True)
            tag = (event or {}).get("tag", "")
            if tag.startswith("salt/minion/") and tag.endswith("/start"):
                waiting.discard(tag.split("/")[2])
                log.info("minion %s started (%s/%s)", tag.split("/")[2],
                         len(self.minions) - len(waiting), len(self.minions))

    def _spawn(self, name: str, program: str, conf_dir: Path) -> None:
        cmd = [str(salt_binary(program)), "-c", str(conf_dir)]
        environ = self.minion_environ.get(name)
        if environ:
            # env(1) execs the daemon in place (same pid, salt's own command
            # line) with these variables added to ours.
            cmd = ["/usr/bin/env", *(f"{key}={value}" for key, value in sorted(environ.items())), *cmd]
        log.info("starting %s: %s", name, cmd)
        self._procs[name] = processes.start_daemon(cmd, self.log_dir / f"{name}.out")

    def _check_alive(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise SaltDaemonError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def wait_for_minions(self, timeout: float) -> None:
        """Ping the minions from the master until every one answers, or fail."""
        import salt.client  # pylint: disable=import-outside-toplevel  # slow import, only here

        wanted = sorted(self.minions)
        deadline = time.monotonic() + timeout
        client = salt.client.LocalClient(c_path=str(self.master_conf_file))
        try:
            answered = set()
            while True:
                for name in ["master", *wanted]:
                    self._check_alive(name)
                missing = [m for m in wanted if m not in answered]
                if not missing:
                    return
                if time.monotonic() > deadline:
                    raise SaltDaemonError(
                        f"minions {missing} did not answer within {timeout} s:\n{self.log_tail(missing[0])}")
                returns = client.cmd(missing, "test.ping", tgt_type="list", timeout=10)
                answered.update(m for m, ret in returns.items() if ret is True)
                log.info("minions answering: %s/%s", len(answered), len(wanted))
                if len(answered) < len(wanted):
                    time.sleep(0.5)
        finally:
            client.destroy()

    def pids(self) -> dict:
        """{"master": pid, "minions": {id: pid}} of the daemons this object started."""
        return {
            "master": self._procs["master"].pid if "master" in self._procs else None,
            "minions": {m: self._procs[m].pid for m in self.minions if m in self._procs},
        }

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last lines of a daemon's log file and of its stdout/stderr."""
        parts = []
        for path in (self.log_dir / f"{name}.log", self.log_dir / f"{name}.out"):
            text = processes.tail(path, lines)
            if text is not None:
                parts.append(f"--- {path}\n{text}")
        return "\n".join(parts) or f"(no log for {name})"

    # -- stop ----------------------------------------------------------------

    def stop(self, known_pids: dict | None = None, timeout: float = 20) -> list[int]:
        """Stop minions, then the master, then any leftover of ours; return what was signalled.

        `known_pids` is what `pids()` returned in the process that started them
        (read back from the sandbox state). Pidfiles are used too, and every pid
        is checked to be one of our Salt processes before it is signalled.
        """
        known_pids = known_pids or {}
        minion_ids = set(self.minions) | set(known_pids.get("minions", {})) | self._pidfile_names()
        minion_ids.discard("master")
        minion_pids = {self._our_pid(known_pids.get("minions", {}).get(m), m) for m in minion_ids}
        stopped = self._terminate(sorted(p for p in minion_pids if p), timeout)
        master_pid = self._our_pid(known_pids.get("master"), "master")
        if master_pid:
            stopped += self._terminate([master_pid], timeout)
        leftovers = self.leftover_pids()
        if leftovers:
            log.warning("stopping leftover Salt processes: %s", leftovers)
            stopped += self._terminate(leftovers, 5)
        for proc in self._procs.values():
            try:
                proc.wait(5)  # reap our children: no zombies left behind
            except subprocess.TimeoutExpired:
                log.warning("pid %s is still running after the stop", proc.pid)
        self._procs.clear()
        if not self.run_dir.is_relative_to(self.root):
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return stopped

    def _pidfile_names(self) -> set[str]:
        try:
            return {p.stem for p in self.run_dir.glob("*.pid")}
        except OSError:
            return set()

    def _our_pid(self, pid: int | None, name: str) -> int | None:
        """The pid of daemon `name` from the state or its pidfile, if it is ours and alive."""
        candidates = [pid]
        try:
            candidates.append(int(self.pidfile(name).read_text().strip()))
        except (OSError, ValueError):
            pass
        for candidate in candidates:
            if candidate and self.is_ours(candidate):
                return candidate
        return None

    def is_ours(self, pid: int) -> bool:
        """True if pid is a live Salt process run with one of our config folders."""
        if pid == os.getpid():
            return False
        cmdline = _cmdline(pid)
        return _is_salt(cmdline) and self._names_conf_dir(cmdline)

    def _names_conf_dir(self, cmdline: list[str]) -> bool:
        ours = str(self.conf_dir)
        return any(arg == ours or arg.startswith(ours + "/") or arg.startswith(f"--config-dir={ours}")
                   for arg in cmdline)

    def leftover_pids(self) -> list[int]:
        """Live Salt processes whose command line names our config folder."""
        return sorted(pid for pid in processes.other_pids() if self.is_ours(pid) and not processes.is_zombie(pid))

    def _terminate(self, pids: list[int], timeout: float) -> list[int]:
        """SIGTERM the pids, wait up to `timeout`, SIGKILL (with their group) what is left."""
        for pid in pids:
            processes.signal_pid(pid, signal.SIGTERM)
        # All of them at once, not one after the other: minions stop in parallel.
        deadline = time.monotonic() + timeout
        alive = list(pids)
        while alive and time.monotonic() < deadline:
            self._reap()
            alive = [pid for pid in alive if processes.alive(pid)]
            if alive:
                time.sleep(0.2)
        for pid in alive:
            log.warning("pid %s ignored SIGTERM for %s s: killing it", pid, timeout)
            _kill_group(pid)
        for pid in alive:
            processes.wait_gone(pid, 10, self._reap)
        return list(pids)

    def _reap(self) -> None:
        """Collect the exit status of daemons that are our children (no zombies)."""
        for proc in self._procs.values():
            proc.poll()


# -- helpers -----------------------------------------------------------------


def _write_yaml(path: Path, data: dict) -> None:
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    path.write_text(CONFIG_HEADER + text)


def _cmdline(pid: int) -> list[str]:
    """argv of pid; setproctitle (which Salt uses) joins it with spaces, so split on both."""
    return " ".join(processes.argv(pid)).split()


def _is_salt(cmdline: list[str]) -> bool:
    """True for a Salt script (`salt-master ...`) or any python process (`python .../salt-run`,
    `python -c "...salt_run()"` as the saltcd runner starts drains); callers also
    require that it names our config folder."""
    program = Path(cmdline[0]).name if cmdline else ""
    return program in SALT_PROGRAMS or program.startswith("python")


def _kill_group(pid: int) -> None:
    """SIGKILL pid and, when it leads its own process group, the whole group."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    except ProcessLookupError:
        return
    processes.signal_pid(pid, signal.SIGKILL)

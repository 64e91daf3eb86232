"""One HAProxy per simulated host: the switch of saltcd's start-first strategy.

:class:`HostProxy` runs ``haproxy`` in master-worker mode with its own main
config (a stats socket at admin level, a pidfile, defaults) and the folder
saltcd's deploy state writes each app's frontend and backend to. The minion of
that host gets :meth:`HostProxy.minion_settings` as its ``saltcd_proxy``
config, so saltcd reloads through this proxy's master socket, not systemd.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from pathlib import Path

from sandbox import processes

log = logging.getLogger(__name__)

MAIN_CONFIG = """\
# Written by the saltcd sandbox (sandbox/proxy.py) for host {name}.
global
    stats socket {admin} mode 600 level admin expose-fd listeners
    stats timeout 30s
    pidfile {pidfile}
    # One line per request on HAProxy's stdout (its log file): with timers, so a
    # slow or failed request under test traffic can be traced (slow_requests).
    log stdout format raw local0

defaults
    log global
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
"""


class ProxyError(RuntimeError):
    """A host's HAProxy could not be started."""


class HostProxy:
    """The HAProxy of one simulated host; its frontends bind the host's `address`."""

    def __init__(self, name: str, address: str, root: Path | str):
        self.name = name
        self.address = address
        self.root = Path(root).resolve()
        self.config_file = self.root / "haproxy.cfg"
        self.config_dir = self.root / "saltcd"  # saltcd's per-app files
        self.admin_socket = self.root / "admin.sock"
        self.master_socket = self.root / "master.sock"
        self.pidfile = self.root / "haproxy.pid"
        self.logfile = self.root / "haproxy.log"
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"HostProxy({self.name!r}, {self.address!r}, {str(self.root)!r})"

    @property
    def pid(self) -> int | None:
        """PID of the master process this object started, while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def minion_settings(self) -> dict:
        """The `saltcd_proxy` minion config for this host."""
        return {
            "socket": str(self.admin_socket),
            "config_dir": str(self.config_dir),
            "reload": {"master_socket": str(self.master_socket)},
            "bind": self.address,
            "upstream_host": self.address,
        }

    def start(self, timeout: float = 20) -> None:
        """Start HAProxy and wait (bounded) until its admin socket answers."""
        if self.pid is not None:
            return
        self.stop()  # whatever a crashed run left serving this same config
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(MAIN_CONFIG.format(
            name=self.name, admin=self.admin_socket, pidfile=self.pidfile))
        cmd = ["haproxy", "-W", "-S", f"{self.master_socket},mode,600",
               "-f", str(self.config_file), "-f", str(self.config_dir)]
        self._proc = processes.start_daemon(cmd, self.logfile)
        try:
            processes.wait_until_up(self._proc, self._answers, f"haproxy of {self.name}", timeout,
                                    lambda: processes.tail(self.logfile, 30) or "(no log)", ProxyError)
        except ProxyError:
            self.stop()
            raise

    def slow_requests(self, over_ms: int = 1000) -> list[str]:
        """Logged requests that took `over_ms` or longer in all, or did not answer 2xx.

        `option httplog` lines: ``client [date] frontend backend/server
        TR/Tw/Tc/Tr/Ta status ...`` (Tc: connecting to the server, Ta: in all;
        -1 where that step never happened).
        """
        found = []
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return found
        for line in lines:
            fields = line.split()
            if len(fields) < 6 or not fields[1].startswith("[") or fields[4].count("/") != 4:
                continue  # HAProxy's own notices
            timers = [int(t) if t.lstrip("-").isdigit() else -1 for t in fields[4].split("/")]
            if timers[-1] >= over_ms or not fields[5].startswith("2"):
                found.append(line)
        return found

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(self.admin_socket))
                sock.sendall(b"show info\n")
                return b"Name: HAProxy" in sock.recv(4096)
        except OSError:
            return False

    def stop(self, timeout: float = 10) -> None:
        """Stop the HAProxy serving this config (started here or by an earlier run). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            processes.terminate(proc.pid, timeout, f"haproxy of {self.name}", reap=proc.poll)
        # Workers (and masters of a crashed run) still running our config.
        for pid in self._leftover_pids():
            log.info("stopping haproxy pid %s of %s", pid, self.config_file)
            processes.terminate(pid, timeout, f"haproxy pid {pid}")

    def _leftover_pids(self) -> list[int]:
        """``haproxy ... -f <our config file> ...`` processes, whoever started them."""
        def ours(argv: list[str]) -> bool:
            return bool(argv) and Path(argv[0]).name == "haproxy" and str(self.config_file) in argv

        return [pid for pid in processes.other_pids() if ours(processes.argv(pid))]

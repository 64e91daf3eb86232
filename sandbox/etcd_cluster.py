"""An etcd v3 cluster on loopback: the shared store of several saltcd masters.

Debian's `etcd-server` 3.4. Each member gets its own data folder and two
ports on 127.0.0.1 (clients, peers); three members make a quorum that one dead
member does not break. Members can be killed and started again one by one
(the HA tests' faults); a restarted member rejoins with its data folder.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import processes

ADDRESS = "127.0.0.1"
START_TIMEOUT = 30
STOP_TIMEOUT = 10


class EtcdError(RuntimeError):
    """A member did not start or answer."""


def _free_port():
    with socket.socket() as sock:
        sock.bind((ADDRESS, 0))
        return sock.getsockname()[1]


@dataclass
class Member:
    """One etcd member: its name, ports, folder and (while it runs) process."""

    name: str
    client_port: int
    peer_port: int
    folder: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def client_url(self):
        return f"http://{ADDRESS}:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://{ADDRESS}:{self.peer_port}"

    @property
    def log(self):
        return self.folder / "etcd.log"

    def healthy(self):
        """True when the member answers /health with a quorum behind it."""
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False


class EtcdCluster:
    """`size` members under `folder`, started together (`start`), stopped with `stop`."""

    def __init__(self, folder: Path, size: int = 3, token: str = "saltcd"):
        self.folder = Path(folder)
        self.token = token
        self.members = [Member(f"etcd-{n}", _free_port(), _free_port(), self.folder / f"etcd-{n}")
                        for n in range(1, size + 1)]

    @property
    def endpoints(self):
        return [member.client_url for member in self.members]

    def _command(self, member, state):
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return ["etcd", "--name", member.name, "--data-dir", str(member.folder / "data"),
                "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
                "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
                "--initial-cluster", initial, "--initial-cluster-state", state,
                "--initial-cluster-token", self.token,
                # Loopback: elections can be quick; a slow 2-core machine still makes them.
                "--heartbeat-interval", "100", "--election-timeout", "1000"]

    def start(self):
        for member in self.members:
            self.start_member(member, wait=False)
        for member in self.members:
            self._wait(member)
        return self

    def start_member(self, member, wait=True):
        """Start (or restart) one member; it rejoins from its data folder."""
        member.folder.mkdir(parents=True, exist_ok=True)
        state = "existing" if (member.folder / "data").exists() else "new"
        member.proc = processes.start_daemon(self._command(member, state), member.log)
        if wait:
            self._wait(member)

    def _wait(self, member):
        processes.wait_until_up(member.proc, member.healthy, f"etcd member {member.name}", START_TIMEOUT,
                                lambda: processes.tail(member.log, 20) or "", EtcdError)

    def kill_member(self, member):
        """SIGKILL one member (a crash): the others keep the quorum."""
        if member.proc is not None and member.proc.poll() is None:
            member.proc.send_signal(signal.SIGKILL)
            member.proc.wait(STOP_TIMEOUT)
        member.proc = None

    def stop(self):
        for member in self.members:
            if member.proc is not None and member.proc.poll() is None:
                processes.terminate(member.proc.pid, STOP_TIMEOUT, f"etcd member {member.name}",
                                    reap=member.proc.poll)
            member.proc = None

"""Simulated Docker hosts: one private ``dockerd`` per host on this machine.

Each :class:`DockerHost` owns a data root, an exec root, a socket, a bridge
and a loopback address for its published ports. It never touches the
machine's own engine, ``docker0``, or processes and bridges it did not create.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from contextlib import closing
from pathlib import Path

import docker

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{64}$")

# Linux unix socket paths hold at most 107 bytes plus the NUL.
UNIX_PATH_MAX = 107
# dockerd's managed containerd puts ``containerd/containerd.sock.ttrpc`` (and
# more) below the exec root: keep the exec root short enough for that.
EXEC_ROOT_MAX = UNIX_PATH_MAX - len("/containerd/containerd.sock.ttrpc") - 16
# Fallback folder for runtime paths when the given root is too deep.
RUN_BASE = Path("/run/saltcd")
# Programs a DockerHost runs (directly or through dockerd); only these are
# ever killed as leftovers, never e.g. a shell that happens to name our paths.
DAEMON_PROGRAMS = ("dockerd", "containerd", "containerd-shim", "runc", "docker-proxy")


class DockerHostError(RuntimeError):
    """A simulated Docker host could not be started or stopped."""


class DockerHost:
    """A simulated Docker host: a private dockerd with its own bridge and address."""

    def __init__(self, name: str, address: str, root: Path | str, index: int):
        if not NAME_RE.match(name):
            raise ValueError(f"invalid host name {name!r}")
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"host address must be a loopback address, got {address!r}")
        if not 0 <= int(index) <= 255:
            raise ValueError(f"index must be within 0..255, got {index!r}")
        self.name = name
        self.address = address
        self.index = int(index)
        # Resolved: /proc/self/mounts lists real paths, not symlinked ones.
        self.root = Path(root).resolve()
        # <= 15 chars (IFNAMSIZ - 1); the prefix marks the bridge as ours.
        self.bridge = f"scdbr{self.index}"
        # 198.18.0.0/15 is the RFC 2544 benchmarking range: never routed on
        # the internet and unlikely to clash with a real LAN. One /24 per host.
        self.bridge_cidr = f"198.18.{self.index}.1/24"
        self.data_root = self.root / "data"
        self.pidfile = self.root / "dockerd.pid"
        self.logfile = self.root / "dockerd.log"
        self.config_file = self.root / "daemon.json"
        # Deep roots would make unix socket paths too long: use a short run dir.
        self.run_dir = RUN_BASE / f"{name}-{self.index}"
        exec_root = self.root / "exec"
        self.exec_root = exec_root if len(str(exec_root)) <= EXEC_ROOT_MAX else self.run_dir / "exec"
        socket = self.root / "docker.sock"
        self.socket = socket if len(str(socket)) <= UNIX_PATH_MAX else self.run_dir / "docker.sock"
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"DockerHost({self.name!r}, {self.address!r}, {str(self.root)!r}, {self.index})"

    @property
    def pid(self) -> int | None:
        """PID of this host's dockerd while it runs (ours, checked), else None."""
        return self._dockerd_pid()

    @property
    def url(self) -> str:
        """Docker API URL of this host (``unix:///abs/docker.sock``)."""
        return f"unix://{self.socket}"

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A docker SDK client talking to this host's engine."""
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    # -- start -------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Create the bridge, start dockerd and wait until it answers a ping."""
        if self._dockerd_pid() is not None and self._ping():
            log.info("dockerd for %s is already running", self.name)
            return
        # Whatever a crashed run of this same host left (bridge, containerd,
        # mounts, stale pidfiles) would make this dockerd fail or hang.
        self.stop()
        for path in (self.root, self.data_root, self.exec_root, self.socket.parent):
            path.mkdir(parents=True, exist_ok=True)
        # An explicit empty config keeps /etc/docker/daemon.json (if any) out.
        self.config_file.write_text(json.dumps({}))
        self._create_bridge()
        cmd = [
            "dockerd",
            "--config-file", str(self.config_file),
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pidfile),
            "-H", self.url,
            "-b", self.bridge,
            "--ip", self.address,
            # No iptables: several engines share this machine's tables and
            # must not fight over them (nor delete docker0's rules).
            "--iptables=false",
            "--ip-masq=false",
            # Published ports are then served by docker-proxy on our address.
            "--userland-proxy=true",
        ]
        log.info("starting dockerd for %s: %s", self.name, cmd)
        with open(self.logfile, "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_up(timeout)
        except BaseException:
            self.stop()  # nothing half-started may survive a failed start
            raise

    def _wait_until_up(self, timeout: float) -> None:
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if self._proc.poll() is not None:
                raise DockerHostError(
                    f"dockerd for {self.name} exited with {self._proc.returncode}:\n{self.log_tail()}")
            if self._ping():
                log.info("dockerd for %s answered after %.1f s", self.name, time.monotonic() - started)
                return
            if time.monotonic() > deadline:
                raise DockerHostError(
                    f"dockerd for {self.name} did not answer within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def _ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with closing(docker.DockerClient(base_url=self.url, timeout=2)) as cli:
                return bool(cli.ping())
        except Exception as exc:  # not up yet: any error means "ask again"
            log.debug("ping %s: %s", self.name, exc)
            return False

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of dockerd's log (for error messages)."""
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "(no dockerd log)"
        return "\n".join(text.splitlines()[-lines:])

    def _create_bridge(self) -> None:
        if _link_exists(self.bridge):
            # Same exact name as ours: left over from a crashed run.
            log.warning("deleting leftover bridge %s", self.bridge)
            _run(["ip", "link", "del", self.bridge])
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", self.bridge_cidr, "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    # -- stop --------------------------------------------------------------

    def stop(self, timeout: float = 30) -> None:
        """Remove our containers, stop dockerd and clean up. Idempotent.

        Also cleans what a crashed run of this same host left behind:
        container processes, containerd and shims, docker-proxy, mounts,
        cgroups, runtime state and the bridge.
        """
        pid = self._dockerd_pid()
        if pid is not None:
            self._remove_containers()
            self._terminate(pid, timeout)
        self._proc = None
        container_ids = self._container_ids()
        # Containers first: once their shim is gone they would be orphans.
        _kill_all(self.name, _pids_in_cgroups(container_ids))
        _kill_all(self.name, self._leftover_daemon_pids())
        self._unmount_below()
        # Runtime state, as a reboot would wipe /var/run/docker; a stale
        # containerd.pid there makes the next dockerd wait for a dead containerd.
        shutil.rmtree(self.exec_root, ignore_errors=True)
        _remove_cgroups(container_ids)
        if _link_exists(self.bridge):
            _run(["ip", "link", "del", self.bridge])
        for path in (self.pidfile, self.socket):
            path.unlink(missing_ok=True)

    def purge(self) -> None:
        """Stop, then delete everything this host kept on disk."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _dockerd_pid(self) -> int | None:
        """PID of our dockerd, from our Popen or the pidfile (checked to be ours)."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        # A stale pidfile may name an unrelated process: check its cmdline.
        return pid if str(self.exec_root) in _argv(pid) else None

    def _remove_containers(self) -> None:
        if not self._ping():
            return
        try:
            with closing(self.client(timeout=30)) as cli:
                for container in cli.containers.list(all=True):
                    log.debug("removing container %s on %s", container.name, self.name)
                    container.remove(force=True, v=True)
        except docker.errors.DockerException as exc:
            log.warning("could not remove containers on %s: %s", self.name, exc)

    def _terminate(self, pid: int, timeout: float) -> None:
        _signal(pid, signal.SIGTERM)
        if not _wait_gone(pid, self._proc, timeout):
            log.warning("dockerd for %s ignored SIGTERM for %s s: killing it", self.name, timeout)
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, self._proc, 10)

    def _container_ids(self) -> list[str]:
        """IDs of the containers this engine knows on disk."""
        try:
            return [d.name for d in (self.data_root / "containers").iterdir() if CONTAINER_ID_RE.match(d.name)]
        except OSError:
            return []

    def _leftover_daemon_pids(self) -> list[int]:
        """containerd, shims and docker-proxy processes of ours that survived dockerd."""
        net = ipaddress.ip_network(self.bridge_cidr, strict=False)
        exec_prefix = f"{self.exec_root}/"

        def ours(argv: list[str]) -> bool:
            program = Path(argv[0]).name if argv else ""
            if not program.startswith(DAEMON_PROGRAMS):
                return False
            # dockerd, containerd and the shims name paths in our exec root.
            if any(arg == str(self.exec_root) or arg.startswith(exec_prefix) for arg in argv):
                return True
            # docker-proxy names only addresses: the container side is in our subnet.
            if program == "docker-proxy" and "-container-ip" in argv:
                at = argv.index("-container-ip") + 1
                return at < len(argv) and _in_network(argv[at], net)
            return False

        return [pid for pid, argv in _processes() if ours(argv)]

    def _unmount_below(self) -> None:
        """Lazily unmount whatever is still mounted below our folders, deepest first."""
        prefixes = {str(self.root), str(self.exec_root), str(self.run_dir)}
        targets = [m for m in _mount_points() if any(m == p or m.startswith(p + "/") for p in prefixes)]
        for target in sorted(targets, key=lambda m: m.count("/"), reverse=True):
            log.debug("unmounting leftover %s", target)
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


# -- helpers -----------------------------------------------------------------


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DockerHostError(f"{cmd} failed ({proc.returncode}): {proc.stderr.strip()}")


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _cmdline(pid: int) -> str:
    return " ".join(_argv(pid))


def _processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process but this one."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            found.append((int(entry.name), _argv(int(entry.name))))
    return found


def _in_network(address: str, net: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.ip_address(address) in net
    except ValueError:
        return False


def _pids_in_cgroups(container_ids: list[str]) -> list[int]:
    """PIDs whose cgroup is one of these containers' (cgroupfs or systemd naming)."""
    if not container_ids:
        return []
    names = {f"/{cid}" for cid in container_ids} | {f"/docker-{cid}.scope" for cid in container_ids}
    found = []
    for pid, _ in _processes():
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            continue
        if any(line.rsplit(":", 1)[-1].endswith(tuple(names)) for line in lines):
            found.append(pid)
    return found


def _kill_all(host: str, pids: list[int]) -> None:
    for pid in pids:
        log.warning("killing leftover process %s of %s: %s", pid, host, _cmdline(pid))
        _signal(pid, signal.SIGKILL)
    for pid in pids:
        _wait_gone(pid, None, 10)


def _remove_cgroups(container_ids: list[str]) -> None:
    """Remove the (empty) cgroups of our containers that dockerd did not remove."""
    base = Path("/sys/fs/cgroup")
    for cid in container_ids:
        for pattern in (f"docker/{cid}", f"*/docker/{cid}", f"*/system.slice/docker-{cid}.scope"):
            for cgroup in base.glob(pattern):
                try:
                    cgroup.rmdir()
                except OSError as exc:
                    log.debug("cannot remove cgroup %s: %s", cgroup, exc)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, proc: subprocess.Popen | None, timeout: float) -> bool:
    """Wait until pid is gone (reaping it when it is our child); True if it is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        elif not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        time.sleep(0.1)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 1:
            # /proc/self/mounts escapes spaces and the like as octal (\040).
            points.append(fields[1].encode().decode("unicode_escape"))
    return points

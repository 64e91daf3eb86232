"""Simulated Docker hosts: one private ``dockerd`` per host on this machine.

Each :class:`DockerHost` owns a data root, an exec root, a socket, a bridge
and a loopback address for its published ports. It never touches the
machine's own engine, ``docker0``, or processes and bridges it did not create.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import shutil
import signal
import subprocess
from contextlib import closing
from pathlib import Path

import docker

from sandbox import processes

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
# Each network an engine makes is a /28 of its pool: 16 networks of 14 addresses.
NETWORK_PREFIX = 28
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
        # A fixed, locally administered MAC for the bridge, as dockerd gives the
        # bridges it makes itself. Without one, Linux gives a bridge the lowest
        # MAC of its ports: removing a container could change the gateway's MAC
        # under the others, whose ARP entries then went stale, and a request
        # through Docker's port proxy to a healthy container stalled for
        # seconds (the kernel's SYN retries) until they re-learned it.
        self.bridge_mac = f"02:53:43:44:00:{self.index:02x}"
        # The networks this engine makes (an app's `networks:`) come from a
        # pool of its own, the other half of the benchmarking range. Engines
        # share this machine's routes: dockerd's default pools (172.17.0.0/16
        # on) let two engines creating a network at once pick the same subnet,
        # and the host then routed one engine's published ports into the other.
        self.network_pool = f"198.19.{self.index}.0/24"
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
        self.config_file.write_text(json.dumps(
            {"default-address-pools": [{"base": self.network_pool, "size": NETWORK_PREFIX}]}))
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
        self._proc = processes.start_daemon(cmd, self.logfile)
        try:
            processes.wait_until_up(self._proc, self._ping, f"dockerd for {self.name}", timeout,
                                    self.log_tail, DockerHostError)
        except BaseException:
            self.stop()  # nothing half-started may survive a failed start
            raise

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
        text = processes.tail(self.logfile, lines)
        return "(no dockerd log)" if text is None else text

    def _create_bridge(self) -> None:
        if _link_exists(self.bridge):
            # Same exact name as ours: left over from a crashed run.
            log.warning("deleting leftover bridge %s", self.bridge)
            _run(["ip", "link", "del", self.bridge])
        _run(["ip", "link", "add", self.bridge, "address", self.bridge_mac, "type", "bridge"])
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
        # dockerd keeps a network's bridge when it stops; a crashed one too.
        for link in _links_in(ipaddress.ip_network(self.network_pool)):
            log.info("deleting bridge %s of a network on %s", link, self.name)
            _run(["ip", "link", "del", link])
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
        return pid if str(self.exec_root) in processes.argv(pid) else None

    def _remove_containers(self) -> None:
        if not self._ping():
            return
        try:
            with closing(self.client(timeout=30)) as cli:
                for container in cli.containers.list(all=True):
                    log.debug("removing container %s on %s", container.name, self.name)
                    container.remove(force=True, v=True)
                cli.networks.prune()  # and with them their bridges
        except docker.errors.DockerException as exc:
            log.warning("could not remove containers on %s: %s", self.name, exc)

    def _terminate(self, pid: int, timeout: float) -> None:
        reap = self._proc.poll if self._proc is not None else None  # only our own child can be reaped
        processes.terminate(pid, timeout, f"dockerd for {self.name}", reap)

    def _container_ids(self) -> list[str]:
        """IDs of the containers this engine knows on disk."""
        try:
            return [d.name for d in (self.data_root / "containers").iterdir() if CONTAINER_ID_RE.match(d.name)]
        except OSError:
            return []

    def _leftover_daemon_pids(self) -> list[int]:
        """containerd, shims and docker-proxy processes of ours that survived dockerd."""
        nets = (ipaddress.ip_network(self.bridge_cidr, strict=False), ipaddress.ip_network(self.network_pool))
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
                return at < len(argv) and any(_in_network(argv[at], net) for net in nets)
            return False

        return [pid for pid in processes.other_pids() if ours(processes.argv(pid))]

    def _unmount_below(self) -> None:
        """Lazily unmount whatever is still mounted below our folders, deepest first."""
        processes.unmount_below({str(self.root), str(self.exec_root), str(self.run_dir)})


# -- helpers -----------------------------------------------------------------


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DockerHostError(f"{cmd} failed ({proc.returncode}): {proc.stderr.strip()}")


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _links_in(net: ipaddress.IPv4Network) -> list[str]:
    """Network links holding an IPv4 address within `net`."""
    proc = subprocess.run(["ip", "-json", "-4", "addr", "show"], capture_output=True, text=True, check=False)
    try:
        links = json.loads(proc.stdout or "[]")
    except ValueError:
        return []
    return [link["ifname"] for link in links
            if any(_in_network(a.get("local", ""), net) for a in link.get("addr_info", []))]


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
    for pid in processes.other_pids():
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            continue
        if any(line.rsplit(":", 1)[-1].endswith(tuple(names)) for line in lines):
            found.append(pid)
    return found


def _kill_all(host: str, pids: list[int]) -> None:
    for pid in pids:
        log.warning("killing leftover process %s of %s: %s", pid, host, " ".join(processes.argv(pid)))
        processes.signal_pid(pid, signal.SIGKILL)
    for pid in pids:
        processes.wait_gone(pid, 10)


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

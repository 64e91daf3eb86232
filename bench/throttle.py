"""A bandwidth-limited path to the sandbox registry: a throttling TCP proxy.

    python -m bench.throttle --listen 127.0.0.1:5055 --upstream 127.0.0.1:5000 \\
        --per-connection 25 --per-host 25 --host dev-1=PID ...

On loopback a 50 MB pull takes well under a second; no production network
does that. Every byte through the proxy (both ways) is paid for twice, from a
token bucket of its connection (25 MB/s: one registry download stream) and
from one of its simulated host (200 Mbit/s = 25 MB/s: that host's link).

How a host is told apart: every simulated host is its own dockerd, and a pull
is dockerd's own connection, so the proxy looks up which process owns the
client end of each accepted connection (/proc/net/tcp -> socket inode -> the
process holding it -> its ancestors) and charges the host whose dockerd that
is. A connection no dockerd owns (the bench's manifest PUTs, saltcd's digest
lookups) is charged to a host of its own, `other`.

Loopback only; asyncio with 256 KiB reads, in a process of its own so that it
does not compete with the bench for one interpreter.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from bench.cpu import cpu_seconds

log = logging.getLogger(__name__)

MB = 1_000_000
CHUNK = 256 * 1024
BURST = 256 * 1024  # a bucket may hold at most this much unspent allowance


class Bucket:
    """A token bucket that may go into debt: take(n) says how long to wait."""

    def __init__(self, rate, burst=BURST):
        self.rate = float(rate)
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, size, now=None):
        """Spend `size` bytes; seconds the caller must wait before sending them."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= size
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


def _socket_inode(client_port, server_port):
    """Inode of the loopback socket whose local port is client_port, talking to server_port."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.rsplit(":", 1)[1], 16) == client_port and int(remote.rsplit(":", 1)[1], 16) == server_port:
                return fields[9]
    return None


def _parent(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def owner_host(client_port, server_port, hosts):
    """The host (of {dockerd pid: host name}) whose process tree holds the client socket."""
    inode = _socket_inode(client_port, server_port)
    if inode is None or not hosts:
        return None
    wanted = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = os.listdir(proc / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(proc / "fd" / fd) != wanted:
                    continue
            except OSError:
                continue
            pid = int(proc.name)
            while pid > 1:  # the socket may belong to a child of dockerd
                if pid in hosts:
                    return hosts[pid]
                pid = _parent(pid)
            return None
    return None


class Throttle:
    """The proxy: start() in a running loop, then serve until close()."""

    def __init__(self, listen, upstream, per_connection, per_host, hosts=None):
        self.listen = listen
        self.upstream = upstream
        self.per_connection = per_connection
        self.per_host = per_host
        self.hosts = dict(hosts or {})
        self.host_buckets = {}
        self.bytes_by_host = {}
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._serve, self.listen[0], self.listen[1],
                                                 reuse_address=True, limit=CHUNK)
        return self.server.sockets[0].getsockname()[:2]

    def close(self):
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader, writer):
        peer_port = writer.get_extra_info("peername")[1]
        host = await asyncio.get_running_loop().run_in_executor(
            None, owner_host, peer_port, self.listen[1], self.hosts) or "other"
        host_bucket = self.host_buckets.setdefault(host, Bucket(self.per_host))
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=CHUNK)
        except OSError as exc:
            log.warning("upstream %s:%s unreachable: %s", *self.upstream, exc)
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer, Bucket(self.per_connection), host_bucket, host),
                             self._pump(up_reader, writer, Bucket(self.per_connection), host_bucket, host),
                             return_exceptions=True)

    async def _pump(self, reader, writer, connection, host_bucket, host):
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                wait = max(connection.take(len(data)), host_bucket.take(len(data)))
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                self.bytes_by_host[host] = self.bytes_by_host.get(host, 0) + len(data)
        finally:
            try:
                if writer.can_write_eof():
                    writer.write_eof()
            except OSError:
                pass


class ThrottleProcess:
    """The proxy as a child process of the bench (started and stopped by it)."""

    def __init__(self, listen, upstream, per_connection_mb=25, per_host_mb=25, hosts=None, log_file=None):
        self.listen = listen
        self.argv = [sys.executable, "-m", "bench.throttle", "--listen", listen, "--upstream", upstream,
                     "--per-connection", str(per_connection_mb), "--per-host", str(per_host_mb)]
        for pid, name in (hosts or {}).items():
            self.argv += ["--host", f"{name}={pid}"]
        self.log_file = log_file
        self.proc = None

    def start(self, timeout=10):
        import socket
        import subprocess
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=out, cwd=str(Path(__file__).parents[1]))
        host, port = self.listen.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the throttling proxy did not listen on {self.listen}")

    def cpu_seconds(self):
        """CPU time the proxy has used so far."""
        return cpu_seconds(f"/proc/{self.proc.pid}/stat")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:  # noqa: BLE001 - it must not outlive the bench
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def _address(text):
    host, port = text.rsplit(":", 1)
    if not host.startswith("127."):
        raise argparse.ArgumentTypeError("loopback only (127.0.0.0/8)")
    return host, int(port)


def main(argv=None):
    top = argparse.ArgumentParser(prog="python -m bench.throttle", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--listen", type=_address, required=True)
    top.add_argument("--upstream", type=_address, required=True)
    top.add_argument("--per-connection", type=float, default=25, help="MB/s per connection")
    top.add_argument("--per-host", type=float, default=25, help="MB/s per simulated host")
    top.add_argument("--host", action="append", default=[], help="NAME=DOCKERD_PID, repeated")
    args = top.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s throttle %(message)s")
    hosts = {int(pid): name for name, pid in (h.rsplit("=", 1) for h in args.host)}
    throttle = Throttle(args.listen, args.upstream, args.per_connection * MB, args.per_host * MB, hosts)

    async def serve():
        await throttle.start()
        log.info("listening on %s:%s -> %s:%s, %s MB/s per connection, %s MB/s per host, %d hosts",
                 *args.listen, *args.upstream, args.per_connection, args.per_host, len(hosts))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        throttle.close()
        log.info("bytes by host: %s", throttle.bytes_by_host)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

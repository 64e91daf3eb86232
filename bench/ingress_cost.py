"""What a post costs the saltcd_webhook engine, by kind: accepted, a body that
does not parse, a body of about max_body_bytes parsed at the door, wrong token,
unknown source, oversize (Content-Length over max_body_bytes), and a body over
the cap sent without a length (chunked).

    python -m bench.ingress_cost [--posts 300] [--cap 1048576]

The engine's door (saltcd.ingress.webhook) runs in a child process on
127.0.0.1 with a real localfs store; `fire` only counts (the bus and what an
accepted post sets off afterwards, a reactor job and a runner, are not part of
the door's cost). Per kind: the client's round trip (median, p95), the child's
CPU time per post (utime+stime from /proc), bytes the client got to send, and
store keys written. For comparison, "whole body read" is what Salt's `webhook`
engine did for every post before anything was checked: read the whole body
into memory (up to Tornado's 100 MB) and put it on the bus.
"""

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-" + "x" * 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def load_engine():
    """The engine's door (saltcd.ingress.webhook), as the saltcd_webhook engine serves it."""
    from saltcd.ingress import webhook  # pylint: disable=import-outside-toplevel

    return webhook


def bench_settings(cap):
    from saltcd import config  # pylint: disable=import-outside-toplevel

    return config.load({
        "sources": {"registry": {"token": TOKEN}},
        "max_body_bytes": cap,
        "apps": {"web": {"repository": "127.0.0.1:5000/saltcd/web",
                         "environments": {"dev": {"target": "dev-*"}}}},
    })


def serve(port, store_dir, cap):
    """Child process: the engine's door with a counting `fire` and a localfs store."""
    import salt.config  # pylint: disable=import-outside-toplevel

    from saltcd import store
    from saltcd.ingress import ingress_key, nonces
    from saltcd.master import salt_cache  # pylint: disable=import-outside-toplevel

    engine = load_engine()
    opts = salt.config.master_config(None)
    opts["cachedir"] = store_dir
    records = store.Store(salt_cache.cache_for(opts))
    settings = bench_settings(cap)
    records.configure(store.Limits.from_settings(settings))
    fired = []
    door = engine.Door(settings, ingress_key.load_or_create(store_dir), lambda tag, data: fired.append(tag),
                       nonces.NonceCache(records.cache, lock_dir=store_dir))

    async def main():
        engine.server(door, "127.0.0.1", port)
        print("ready", flush=True)
        await engine.flush_forever(door, records, every=1)

    asyncio.run(main())


def serve_salt_webhook(port):
    """Child process: what Salt's `webhook` engine does with every post, bus aside:
    read the whole body (Tornado's default cap, 100 MB) and serialize it, with
    the headers, into an event (msgpack)."""
    import salt.payload  # pylint: disable=import-outside-toplevel

    from saltcd import compat  # pylint: disable=import-outside-toplevel

    tornado = compat.tornado()

    class WebHook(tornado.web.RequestHandler):  # pylint: disable=abstract-method
        def post(self, tag):  # pylint: disable=arguments-differ
            salt.payload.dumps({"headers": dict(self.request.headers), "body": self.request.body,
                                "tag": "salt/engines/hook/" + tag})

    async def main():
        tornado.httpserver.HTTPServer(tornado.web.Application([(r"/(.*)", WebHook)])).listen(port, "127.0.0.1")
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def envelope_body():
    event = {"action": "push", "target": {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "repository": "saltcd/web", "tag": "dev", "digest": "sha256:" + "a" * 64, "size": 525},
        "request": {"host": "127.0.0.1:5000", "method": "PUT"}}
    return json.dumps({"events": [event] * 4}).encode()  # ~1.2 KB, like a registry's


def pulls_body(cap):
    """An envelope of pulls only, just under `cap` bytes: the most the door parses
    for one post (answered with nothing to deploy)."""
    event = {"action": "pull", "target": {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "repository": "saltcd/web", "digest": "sha256:" + "a" * 64, "size": 525},
        "request": {"host": "127.0.0.1:5000", "method": "GET"}}
    count = (cap - 32) // (len(json.dumps(event)) + 2)
    return json.dumps({"events": [event] * count}).encode()


def post(port, path, body, headers, send_all=True, chunked=False):
    """One POST on a fresh connection: (status or error text, seconds, bytes sent)."""
    start = time.perf_counter()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = [f"POST /{path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
                *(f"{k}: {v}" for k, v in headers.items())]
        if chunked:
            head.append("Transfer-Encoding: chunked")
        else:
            head.append(f"Content-Length: {len(body) if isinstance(body, bytes) else body}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            if chunked:
                for offset in range(0, len(body), 65536):
                    piece = body[offset:offset + 65536]
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    sent += len(piece)
                sock.sendall(b"0\r\n\r\n")
            elif send_all and isinstance(body, bytes):
                sock.sendall(body)
                sent = len(body)
            reply = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError) as exc:
            return type(exc).__name__, time.perf_counter() - start, sent
    status = reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/") else f"closed ({reply[:20]!r})"
    return status, time.perf_counter() - start, sent


def store_keys(store_dir):
    return sum(len(files) for _, _, files in os.walk(Path(store_dir) / "saltcd"))


def measure(port, pid, store_dir, name, posts, *args, **kwargs):
    statuses, times, sent = {}, [], 0
    keys_before = store_keys(store_dir)
    cpu_before = cpu_seconds(pid)
    for _ in range(posts):
        status, seconds, nbytes = post(port, *args, **kwargs)
        statuses[status] = statuses.get(status, 0) + 1
        times.append(seconds)
        sent += nbytes
    time.sleep(1.5)  # one flush of the rejection counts
    cpu = cpu_seconds(pid) - cpu_before
    times.sort()
    return {"kind": name, "posts": posts, "statuses": statuses,
            "median_ms": round(statistics.median(times) * 1000, 2),
            "p95_ms": round(times[int(len(times) * 0.95) - 1] * 1000, 2),
            "server_cpu_ms_per_post": round(cpu * 1000 / posts, 3),
            "client_bytes_sent_per_post": sent // posts,
            "store_keys_written": store_keys(store_dir) - keys_before}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure_salt_webhook(posts, body):
    """The same 10 MiB post, through what Salt's webhook engine did (see serve_salt_webhook)."""
    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "bench.ingress_cost", "--serve-salt-webhook", str(port)],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with tempfile.TemporaryDirectory() as empty:
            return measure(port, child.pid, empty, f"Salt's webhook engine, {len(body) >> 20} MiB body "
                                                   "(before any check)", posts, "saltcd/registry", body, {})
    finally:
        child.terminate()
        child.wait(timeout=10)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--cap", type=int, default=1048576)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "STORE_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-salt-webhook", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.cap)
        return 0
    if args.serve_salt_webhook:
        serve_salt_webhook(args.serve_salt_webhook)
        return 0
    port = free_port()
    store_dir = tempfile.mkdtemp(prefix="saltcd-ingress-bench-")
    child = subprocess.Popen([sys.executable, "-m", "bench.ingress_cost", "--cap", str(args.cap),
                              "--serve", str(port), store_dir], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        good = envelope_body()
        pulls = pulls_body(args.cap)
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        wrong = {"Authorization": "Bearer " + secrets.token_urlsafe(24), "Content-Type": "application/json"}
        big = secrets.token_bytes(args.cap * 2)
        huge = secrets.token_bytes(10 * 1048576)
        n = args.posts
        rows = [
            measure(port, child.pid, store_dir, "accepted (1.2 KB, right token)", n, "saltcd/registry", good, auth),
            measure(port, child.pid, store_dir, "does not parse (1.2 KB, right token)", n, "saltcd/registry",
                    good[:-2], auth),
            measure(port, child.pid, store_dir, f"{len(pulls) >> 10} KiB of pulls, parsed at the door",
                    max(n // 10, 5), "saltcd/registry", pulls, auth),
            measure(port, child.pid, store_dir, "wrong token (1.2 KB)", n, "saltcd/registry", good, wrong),
            measure(port, child.pid, store_dir, "unknown source", n, "saltcd/nope", good, auth),
            measure(port, child.pid, store_dir, "oversize: Content-Length 100 MB, body not sent", n,
                    "saltcd/registry", 100 * 1048576, auth, send_all=False),
            measure(port, child.pid, store_dir, f"oversize: {len(big) >> 20} MiB sent whole (no 100-continue)",
                    max(n // 10, 5), "saltcd/registry", big, auth),
            measure(port, child.pid, store_dir, f"oversize: {len(big) >> 20} MiB chunked, no length",
                    max(n // 10, 5), "saltcd/registry", big, auth, chunked=True),
            measure(port, child.pid, store_dir, "oversize: 10 MiB sent whole (no 100-continue)",
                    max(n // 20, 5), "saltcd/registry", huge, auth),
        ]
    finally:
        child.terminate()
        child.wait(timeout=10)
    rows.append(measure_salt_webhook(max(args.posts // 20, 5), huge))
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                      "max_body_bytes": args.cap, "rows": rows}, indent=1))
    width = max(len(r["kind"]) for r in rows)
    print(f"\n{'kind':{width}}  statuses              median ms  p95 ms  server CPU ms/post  sent B/post  "
          f"store keys")
    for r in rows:
        print(f"{r['kind']:{width}}  {json.dumps(r['statuses']):20}  {r['median_ms']:9}  {r['p95_ms']:6}  "
              f"{r['server_cpu_ms_per_post']:18}  {r['client_bytes_sent_per_post']:11}  {r['store_keys_written']}")
    print(f"\nsha256 of the bench token (never printed in clear): {hashlib.sha256(TOKEN.encode()).hexdigest()[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

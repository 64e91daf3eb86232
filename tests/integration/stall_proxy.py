"""A registry front that can stall pulls: the test's "registry that never finishes".

It forwards `GET`/`HEAD` of the Docker Registry API (`/v2/`, manifests, blobs)
to the lab registry. Once `stall()` is called, blob GETs are held open without
an answer (a pull that never ends) until `stop()` or `hold` seconds; manifests
still answer, so saltcd resolves the tag and the minion starts its pull.
Test-only: it serves 127.0.0.1 and nothing it does is secret.
"""

import http.client
import http.server
import logging
import threading

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) and what this proxy sets itself.
SKIPPED = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
           "proxy-authenticate", "proxy-authorization", "content-length"}


class StallProxy:
    """`127.0.0.1:<port>` in front of `upstream` (host:port of a plain HTTP registry)."""

    def __init__(self, upstream, port, hold=120):
        self.upstream = upstream
        self.port = port
        self.hold = hold  # seconds a stalled request is held at most
        self.stalling = threading.Event()
        self.released = threading.Event()
        self.held = []  # paths of the blob GETs held
        self._server = None
        self._thread = None

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def stall(self):
        """From now on, hold blob downloads open without answering."""
        self.stalling.set()

    def start(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802 (http.server's naming)
                proxy.forward(self)

            def do_GET(self):  # noqa: N802
                if proxy.stalling.is_set() and "/blobs/" in self.path:
                    proxy.held.append(self.path)
                    log.info("stall proxy: holding %s", self.path)
                    proxy.released.wait(proxy.hold)
                    self.close_connection = True  # never answered
                    return
                proxy.forward(self)

            def log_message(self, fmt, *args):
                log.debug("stall proxy: " + fmt, *args)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        # Join the handler threads on server_close(): stop() leaves none behind.
        self._server.daemon_threads = False
        self._server.block_on_close = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="stall-proxy", daemon=True)
        self._thread.start()

    def forward(self, handler):
        """Send the request upstream and relay the answer (bodies are small here)."""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in SKIPPED | {"host"}}
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.request(handler.command, handler.path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            handler.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in SKIPPED:
                    handler.send_header(name, value)
            length = response.getheader("Content-Length") if handler.command == "HEAD" else len(body)
            handler.send_header("Content-Length", str(length or 0))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(body)
        finally:
            conn.close()

    def stop(self):
        """Let held requests go (unanswered), stop serving, join every thread."""
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

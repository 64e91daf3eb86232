"""The traffic generator against a tiny real HTTP server on loopback."""

import http.server
import threading
import time

import pytest

from sandbox.traffic import MAX_ERRORS, Traffic, check_loopback, summary_line


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive capable, so keepalive=True really reuses connections
    disable_nagle_algorithm = True  # headers and body go out apart: no 40 ms delayed-ACK stall per request

    def do_GET(self):
        status = 500 if self.path.startswith("/broken") else 200
        body = b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 that can be stopped and started again on the same port."""

    def __init__(self, port=0):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.stop()


def test_a_steady_server_serves_everything(server):
    with Traffic({"web-1": server.url()}, pause=0.005) as traffic:
        time.sleep(0.5)
        live = traffic.snapshot()["web-1"]
        assert live["served"] > 0                     # live counts while running
    final = traffic.stop()["web-1"]
    assert final["served"] >= live["served"] > 10
    assert final["failed"] == 0 and final["errors"] == []
    assert final["longest_gap"] < 0.4


def test_a_server_stopped_mid_run_shows_failures_and_the_gap():
    srv = Server()
    port = srv.port
    traffic = Traffic({"web-1": srv.url()}, pause=0.01).start()
    time.sleep(0.3)
    srv.stop()
    down = time.monotonic()
    time.sleep(0.6)
    srv = Server(port)                                   # back on the same address
    up = time.monotonic()
    time.sleep(0.3)
    result = traffic.stop()["web-1"]
    srv.stop()
    assert result["failed"] > 0
    assert result["served"] > 0
    assert any("ConnectionRefusedError" in text for text in result["errors"])
    assert len(result["errors"]) <= MAX_ERRORS
    assert up - down <= result["longest_gap"] < up - down + 0.5


def test_a_host_still_down_at_stop_counts_the_gap_until_stop(server):
    traffic = Traffic({"web-1": server.url()}, pause=0.01).start()
    time.sleep(0.2)
    server.stop()
    time.sleep(0.5)
    result = traffic.stop()["web-1"]
    assert result["failed"] > 0
    assert result["longest_gap"] >= 0.5


def test_a_5xx_is_a_failure_and_says_so(server):
    with Traffic({"ok": server.url("/health"), "bad": server.url("/broken")}, pause=0.01) as traffic:
        time.sleep(0.3)
    result = traffic.snapshot()
    assert result["ok"]["failed"] == 0 and result["ok"]["served"] > 0
    assert result["bad"]["served"] == 0 and result["bad"]["failed"] > 0
    assert result["bad"]["errors"][0] == "HTTP 500 Internal Server Error"


def test_keepalive_reuses_the_connection_and_still_counts(server):
    with Traffic({"web-1": server.url()}, pause=0.005, keepalive=True) as traffic:
        time.sleep(0.3)
    result = traffic.snapshot()["web-1"]
    assert result["served"] > 10 and result["failed"] == 0


def test_max_seconds_and_max_requests_bound_the_run(server):
    traffic = Traffic({"web-1": server.url()}, pause=0.0, max_requests=7).start()
    traffic._threads[0].join(5)
    assert traffic.snapshot()["web-1"]["served"] == 7

    started = time.monotonic()
    traffic = Traffic({"web-1": server.url()}, pause=0.01, max_seconds=0.3).start()
    traffic._threads[0].join(5)
    assert time.monotonic() - started < 2
    assert traffic.stop()["web-1"]["served"] > 0


@pytest.mark.parametrize("url", ["http://10.0.0.1/", "http://example.com/", "https://127.0.0.1/",
                                 "http://[::1]:80/", "ftp://127.0.0.1/"])
def test_only_plain_http_to_loopback(url):
    with pytest.raises(ValueError):
        Traffic({"x": url})


def test_loopback_urls_are_split_for_the_connection():
    assert check_loopback("http://127.0.0.21:8080/health?x=1") == ("127.0.0.21", 8080, "/health?x=1")
    assert check_loopback("http://localhost") == ("localhost", 80, "/")


def test_summary_line():
    snap = {"prod-1": {"served": 412, "failed": 0, "longest_gap": 0.031, "errors": []},
            "prod-2": {"served": 9, "failed": 3, "longest_gap": 1.5, "errors": ["x"]}}
    assert summary_line(snap) == "traffic prod-1: 412 served, 0 failed | prod-2: 9 served, 3 failed"
    assert summary_line(snap, gaps=True).endswith("prod-2: 9 served, 3 failed, longest gap 1.50 s")

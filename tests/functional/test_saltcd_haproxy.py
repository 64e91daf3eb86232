"""The minion's HAProxy client against a real HAProxy (sandbox.proxy.HostProxy)
and real HTTP servers on loopback: add a frontend, switch, drain, reload."""

import http.server
import shutil
import threading
import time
import urllib.request

import pytest

from sandbox.proxy import HostProxy
from tests import salt_side
from tests.ports import free_port

ADDRESS = "127.0.0.97"

pytestmark = pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")


def serve(text):
    """An HTTP server answering `text`; /slow answers after 1 s. Returns (address, server)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow":
                time.sleep(1)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((ADDRESS, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"{ADDRESS}:{server.server_address[1]}", server


@pytest.fixture
def proxy(tmp_path):
    host = HostProxy("t-1", ADDRESS, tmp_path / "proxy")
    host.start()
    yield host
    host.stop()
    assert host.pid is None


@pytest.fixture
def haproxy(proxy, tmp_path):
    """The execution module, through Salt's loader, of a minion configured for `proxy`."""
    return salt_side.minion(tmp_path / "minion", saltcd_proxy=proxy.minion_settings()).functions.saltcd_haproxy


def get(port, path="/"):
    with urllib.request.urlopen(f"http://{ADDRESS}:{port}{path}", timeout=5) as response:
        return response.read().decode()


def test_switch_routes_new_requests_and_lets_the_old_ones_finish(haproxy):
    old, old_server = serve("old")
    new, new_server = serve("new")
    port = free_port(ADDRESS)
    try:
        assert haproxy.ensure_frontend("web", port, upstream=old) is True  # a new frontend: reload
        assert get(port) == "old"
        assert haproxy.ensure_frontend("web", port) is False  # nothing changed: no reload
        slow = {}
        in_flight = threading.Thread(target=lambda: slow.setdefault("answer", get(port, "/slow")))
        in_flight.start()
        time.sleep(0.3)
        switched = haproxy.switch("web", new, port)
        assert switched == {"new": "b", "old": "a", "old_address": old}
        assert get(port) == "new"
        assert haproxy.drained("web", "a") == 1  # the slow request, still on the old server
        assert haproxy.wait_drained("web", "a", 5) == 0
        in_flight.join()
        assert slow == {"answer": "old"}
        haproxy.retire("web", "a")
        assert haproxy.live("web") == ("b", new)
        # The file follows the switch: a reload comes up routing to the new server.
        assert haproxy.ensure_frontend("web", port) is False
        haproxy.reload()
        time.sleep(0.5)
        assert get(port) == "new" and haproxy.live("web") == ("b", new)
    finally:
        old_server.shutdown()
        new_server.shutdown()

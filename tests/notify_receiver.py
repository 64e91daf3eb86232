"""A test-only HTTP receiver on 127.0.0.1 for saltcd's notifications: it keeps
what it is sent and answers with `status` (500: an endpoint that is down).
Used by the unit tests of saltcd.present.outgoing and by the integration lab."""

import http.server
import json
import threading
import time


class Receiver:
    def __init__(self, status=200):
        self.got, self.status = [], status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.got.append({"time": time.time(), "body": json.loads(body or b"null"),
                                  "auth": self.headers.get("Authorization")})
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def messages(self, app, predicate=lambda body: True):
        return [g for g in self.got if isinstance(g["body"], dict)
                and (g["body"].get("app") == app or f" {app}/" in str(g["body"].get("text", "")))
                and predicate(g["body"])]

    def wait_for(self, app, predicate, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = self.messages(app, predicate)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no matching notification for {app} within {timeout}s: {self.got[-5:]}")

    def wait(self, count, timeout=10):
        """What was received once `count` messages have come (or at the timeout)."""
        deadline = time.time() + timeout
        while len(self.got) < count and time.time() < deadline:
            time.sleep(0.02)
        return self.got

    def close(self):
        self.server.shutdown()
        self.server.server_close()



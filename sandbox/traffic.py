"""A traffic generator: GET requests back to back to each host's public address.

``Traffic({"dev-1": "http://127.0.0.11:8080/", ...})`` runs one thread per
URL until ``stop()`` (or ``max_seconds``/``max_requests``) and counts, per
host, the requests ``served`` (2xx) and ``failed`` (refused, reset, timeout,
5xx, anything else), the longest gap without a successful response, and the
first few error texts. It measures what a user of the app would see during a
rollout; the bench, the demo and the tests read the same counts.

Each request goes over a fresh TCP connection by default: a client that
reconnects per request sees every moment nothing listens on the address
(a refused connection), whereas a keep-alive connection opened before the
switch would keep talking to the old process and hide a listener gap.
``keepalive=True`` reuses one connection (reopened after an error) for the
other question: do established clients survive the switch?

Loopback URLs only (127.0.0.0/8 or localhost, plain http): this is test
traffic and must never leave the machine.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import threading
import time
import urllib.parse

log = logging.getLogger(__name__)

MAX_ERRORS = 5          # error texts kept per host (the first ones: they say what broke)
ERROR_TEXT_CHARS = 160


def check_loopback(url):
    """(host, port, path) of a plain-http loopback `url`; ValueError for anything else."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"traffic: only http:// URLs, not {url!r}")
    host = parts.hostname or ""
    if host != "localhost":
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is None or address.version != 4 or not address.is_loopback:
            raise ValueError(f"traffic: loopback (127.0.0.0/8) URLs only, not {url!r}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return host, parts.port or 80, path


class HostCounts:
    """What one host answered so far (guarded by the Traffic lock)."""

    def __init__(self):
        self.served = 0
        self.failed = 0
        self.errors = []
        self.longest_gap = 0.0
        self.started = None        # monotonic time the first request went out
        self.last_ok = None        # monotonic time of the last successful response
        self.failed_since_ok = False

    def ok(self, now):
        self.served += 1
        self._close_gap(now)
        self.last_ok = now
        self.failed_since_ok = False

    def fail(self, text):
        self.failed += 1
        self.failed_since_ok = True
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text[:ERROR_TEXT_CHARS])

    def finish(self, now):
        """At stop: a host still failing at the end was down until now."""
        if self.failed_since_ok:
            self._close_gap(now)

    def _close_gap(self, now):
        # Between two successes always; from the start only if the host failed before
        # its first success (a slow first answer alone is not an outage).
        if self.last_ok is not None:
            since = self.last_ok
        elif self.failed_since_ok and self.started is not None:
            since = self.started
        else:
            return
        self.longest_gap = max(self.longest_gap, now - since)

    def as_dict(self):
        return {"served": self.served, "failed": self.failed,
                "longest_gap": round(self.longest_gap, 3), "errors": list(self.errors)}


class Traffic:
    """Requests back to back to every URL of `urls` ({label: url}), one thread each."""

    def __init__(self, urls, *, pause=0.02, timeout=2.0, max_seconds=600.0,
                 max_requests=100_000, keepalive=False):
        if not urls:
            raise ValueError("traffic: no URLs")
        self.targets = {label: check_loopback(url) for label, url in urls.items()}
        self.urls = dict(urls)
        self.pause = pause
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.keepalive = keepalive
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counts = {label: HostCounts() for label in urls}
        self._threads = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if self._threads:
            raise RuntimeError("traffic: already started")
        for label in self.targets:
            thread = threading.Thread(target=self._run, args=(label,), name=f"traffic-{label}", daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info("traffic: sending to %s", ", ".join(f"{k}={v}" for k, v in self.urls.items()))
        return self

    def stop(self):
        """Stop every thread and return the final counts (as snapshot()); idempotent."""
        if self._stop.is_set():
            return self.snapshot()
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        now = time.monotonic()
        with self._lock:
            for counts in self._counts.values():
                counts.finish(now)
        return self.snapshot()

    def snapshot(self):
        """{label: {"served", "failed", "longest_gap" (s), "errors"}} so far."""
        with self._lock:
            return {label: counts.as_dict() for label, counts in self._counts.items()}

    def line(self):
        """One line for a live display: `traffic dev-1: 412 served, 0 failed | dev-2: ...`."""
        return summary_line(self.snapshot())

    def _run(self, label):
        host, port, path = self.targets[label]
        counts = self._counts[label]
        deadline = time.monotonic() + self.max_seconds
        with self._lock:
            counts.started = time.monotonic()
        conn = None
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() >= deadline:
                break
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            error = self._get(conn, path)
            now = time.monotonic()
            with self._lock:
                if error is None:
                    counts.ok(now)
                else:
                    counts.fail(error)
            if error is not None or not self.keepalive:
                conn.close()
                conn = None
            self._stop.wait(self.pause)
        if conn is not None:
            conn.close()

    def _get(self, conn, path):
        """None if the request was served (2xx), else why not."""
        headers = {} if self.keepalive else {"Connection": "close"}
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= resp.status < 300:
            return None
        return f"HTTP {resp.status} {resp.reason}"


def summary_line(snapshot, *, gaps=False):
    """`traffic dev-1: 412 served, 0 failed | dev-2: ...` (with the longest gap if `gaps`)."""
    parts = []
    for label, c in snapshot.items():
        text = f"{label}: {c['served']} served, {c['failed']} failed"
        if gaps:
            text += f", longest gap {c['longest_gap']:.2f} s"
        parts.append(text)
    return "traffic " + " | ".join(parts)

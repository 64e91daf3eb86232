"""The sandbox parts against the real thing: a private dockerd, a registry, the app image."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sandbox.app_image import build_and_push, tag_and_push
from sandbox.docker_hosts import DockerHost
from sandbox.registry import LocalRegistry
from tests import stale_runs
from tests.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run dockerd and create bridges"),
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("dockerd", "docker-registry")),
        reason="needs dockerd (docker.io) and docker-registry installed",
    ),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs /bin/busybox (busybox-static)"),
]

HOST_ADDRESS = "127.0.0.61"
TOKEN = "Bearer sandbox-test-token"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"

# Loopback only, never through a proxy the environment may name.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; connection errors give status 0."""
    try:
        with _opener.open(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def wait_for(check, timeout: float, interval: float = 0.2):
    """Call check() until it returns something truthy or timeout passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def wait_served(url: str, timeout: float = 20) -> tuple[int, str]:
    """(status, body) of the first GET of url that reaches a server."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = http_get(url)
        if status or time.monotonic() > deadline:
            return status, body
        time.sleep(0.2)


def started(part, clean_up):
    """Fixture body: start a sandbox part, yield it, then clean_up (also after a failed start)."""
    try:
        part.start()
        yield part
    finally:
        clean_up()


class NotificationServer:
    """A tiny HTTP endpoint that records what the registry POSTs."""

    def __init__(self):
        self.received: list[dict] = []
        lock = self.lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/registry-events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events(self) -> list[tuple[dict, dict]]:
        """(event, headers) for every event of every envelope received so far."""
        with self.lock:
            posts = list(self.received)
        return [(event, post["headers"]) for post in posts for event in json.loads(post["body"])["events"]]


@pytest.fixture(scope="module")
def notifications():
    server = NotificationServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture(scope="module")
def parts_folder(swept):
    """This module's daemons' folder: a run killed before their teardown is swept by the next."""
    folder = stale_runs.session_folder("scd-it-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(parts_folder, notifications):
    reg = LocalRegistry(
        parts_folder / "registry",
        port=free_port(),
        notify_url=notifications.url,
        notify_headers={"Authorization": TOKEN},
    )
    yield from started(reg, reg.stop)


@pytest.fixture(scope="module")
def docker_host(parts_folder):
    host = DockerHost("t-1", HOST_ADDRESS, parts_folder / "hosts" / "t-1", 61)
    stale_runs.record_docker_hosts(parts_folder, [host])
    yield from started(host, host.purge)


@pytest.fixture(scope="module")
def repository(registry):
    return f"{registry.host}/saltcd/web"


@pytest.fixture
def run_app(docker_host):
    """Run an image on the host with a port published; remove every container afterwards."""
    client = docker_host.client()
    started = []

    def run(image: str, host_port: int, **environment):
        container = client.containers.run(
            image, detach=True, ports={"8080/tcp": host_port}, environment=environment)
        started.append(container)
        return container

    try:
        yield run
    finally:
        for container in started:
            container.remove(force=True)
        client.close()


def test_push_notifies_manifest_push_with_tag_and_digest(docker_host, repository, notifications):
    digest = build_and_push(docker_host.url, repository, "dev", "1.0.0")
    assert digest.startswith("sha256:")

    def manifest_push(tag):
        return [(event, headers) for event, headers in notifications.events()
                if event["action"] == "push" and event["target"].get("tag") == tag]

    found = wait_for(lambda: manifest_push("dev"), timeout=20)
    assert found, f"no manifest push event for :dev, got {notifications.events()}"
    event, headers = found[0]
    assert event["target"]["digest"] == digest
    assert event["target"]["mediaType"] == MANIFEST_V2
    assert event["target"]["repository"] == "saltcd/web"
    assert event["request"]["host"] == repository.split("/")[0]
    assert headers["Authorization"] == TOKEN
    assert headers["Content-Type"].startswith("application/vnd.docker.distribution.events.v1+json")

    # Promotion pushes the very same manifest under another tag.
    assert tag_and_push(docker_host.url, repository, digest, "qa") == digest
    found = wait_for(lambda: manifest_push("qa"), timeout=20)
    assert found and found[0][0]["target"]["digest"] == digest


def test_healthy_app_serves_version_and_health(docker_host, repository, run_app):
    digest = build_and_push(docker_host.url, repository, "dev", "1.2.3")
    run_app(f"{repository}@{digest}", 8080)

    status, body = wait_served(f"http://{HOST_ADDRESS}:8080/version")
    assert (status, body) == (200, "1.2.3")
    assert http_get(f"http://{HOST_ADDRESS}:8080/health") == (200, "ok")


def bridge_mac(host: DockerHost) -> str:
    with open(f"/sys/class/net/{host.bridge}/address", encoding="ascii") as handle:
        return handle.read().strip()


def test_the_bridge_keeps_its_mac_while_containers_come_and_go(docker_host, repository, run_app):
    """The gateway MAC the containers have learned must not change when another
    container leaves the bridge: requests to them would stall until they re-ARP."""
    digest = build_and_push(docker_host.url, repository, "dev", "1.2.5")
    assert bridge_mac(docker_host) == docker_host.bridge_mac
    leaving = run_app(f"{repository}@{digest}", 8083)
    run_app(f"{repository}@{digest}", 8084)
    # Both must serve before one leaves: the check after the kill is a single GET,
    # so it measures a stall, not the second container's start-up.
    assert wait_served(f"http://{HOST_ADDRESS}:8083/version") == (200, "1.2.5")
    assert wait_served(f"http://{HOST_ADDRESS}:8084/version") == (200, "1.2.5")
    leaving.kill()
    assert bridge_mac(docker_host) == docker_host.bridge_mac
    assert http_get(f"http://{HOST_ADDRESS}:8084/version") == (200, "1.2.5")


def test_behaviours_make_different_images(docker_host, repository):
    digests = {b: build_and_push(docker_host.url, repository, f"b-{b}", "2.0.0", behaviour=b)
               for b in ("healthy", "crash", "unhealthy", "degrades")}
    assert len(set(digests.values())) == 4


def test_crash_app_exits_non_zero(docker_host, repository, run_app):
    digest = build_and_push(docker_host.url, repository, "dev", "1.0.1", behaviour="crash")
    container = run_app(f"{repository}@{digest}", 8081)

    result = container.wait(timeout=20)
    assert result["StatusCode"] != 0


def test_unhealthy_app_has_no_health(docker_host, repository, run_app):
    digest = build_and_push(docker_host.url, repository, "dev", "1.0.2", behaviour="unhealthy")
    run_app(f"{repository}@{digest}", 8082)

    status, body = wait_served(f"http://{HOST_ADDRESS}:8082/version")
    assert (status, body) == (200, "1.0.2")
    assert http_get(f"http://{HOST_ADDRESS}:8082/health")[0] == 404


def test_degrading_app_loses_health(docker_host, repository, run_app):
    digest = build_and_push(docker_host.url, repository, "dev", "1.0.3", behaviour="degrades")
    run_app(f"{repository}@{digest}", 8083, DEGRADE_AFTER="2")

    assert wait_for(lambda: http_get(f"http://{HOST_ADDRESS}:8083/health")[0] == 200, timeout=20)
    assert wait_for(lambda: http_get(f"http://{HOST_ADDRESS}:8083/health")[0] == 404, timeout=10)

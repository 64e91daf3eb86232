"""Health checks besides HTTP (issue 24): tcp, a command in the container, the
image's own HEALTHCHECK, and "stays running" (saltcd.health_probe, through Salt's
loader; its code is salt/_utils/saltcd_minion.py), and their configuration.
Docker is faked here; the lab runs the tcp and command checks against real
containers (test_real_apps.py)."""

import socket
import threading

import pytest

from saltcd import config
from tests import salt_side


@pytest.fixture()
def loaders(tmp_path):
    return salt_side.minion(tmp_path)


@pytest.fixture()
def functions(loaders):
    """The minion's Salt functions: a test replaces Docker's by assigning them."""
    return loaders.functions


@pytest.fixture()
def minion(functions):
    return functions.saltcd


def test_tcp_is_healthy_while_something_accepts_connections(minion):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        url = minion.health_url("tcp", port)
        assert url == f"tcp://127.0.0.1:{port}"
        assert minion.health_probe("tcp", url)["healthy"] is True
    closed = minion.health_probe("tcp", url)
    assert closed["healthy"] is False and f"127.0.0.1:{port}" in closed["error"]


def test_tcp_is_unhealthy_when_the_connection_is_closed_at_once(minion):
    """What Docker's userland proxy does on a published port with nothing behind it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def accept_and_close():
            connection, _ = server.accept()
            connection.close()

        closer = threading.Thread(target=accept_and_close, daemon=True)
        closer.start()
        probe = minion.health_probe("tcp", f"tcp://127.0.0.1:{server.getsockname()[1]}")
        closer.join(5)
    assert probe["healthy"] is False and "closed at once" in probe["error"]


def test_a_command_in_the_container_must_exit_0(minion, functions):
    ran = []

    def retcode(name, cmd, ignore_retcode=False):
        ran.append((name, cmd))
        return 0 if "ready" in cmd else 3

    functions["docker.retcode"] = retcode
    assert minion.health_probe("command", "", container="web", command=["test", "-f", "/tmp/ready"])["healthy"]
    failed = minion.health_probe("command", "", container="web", command="test -f /tmp/other")
    assert failed["healthy"] is False and failed["status"] == 3 and "exited 3" in failed["error"]
    assert ran == [("web", "test -f /tmp/ready"), ("web", "test -f /tmp/other")]


@pytest.mark.parametrize("state, healthy, error", [
    ({"Running": True, "Health": {"Status": "healthy"}}, True, None),
    ({"Running": True, "Health": {"Status": "starting"}}, False, None),
    ({"Running": True}, False, "the image has no HEALTHCHECK"),
])
def test_docker_asks_the_images_own_healthcheck(minion, functions, state, healthy, error):
    functions["docker.inspect_container"] = lambda name: {"State": state}
    probe = minion.health_probe("docker", "", container="web")
    assert (probe["healthy"], probe["error"]) == (healthy, error)


def test_running_is_healthy_while_the_container_runs(minion, functions):
    running = {"web": True}
    functions["docker.inspect_container"] = lambda name: {
        "Id": "x", "State": {"Running": running[name]}, "Config": {"Image": "repo@sha256:" + "a" * 64}}
    assert minion.health_probe("running", "", container="web")["healthy"] is True
    running["web"] = False
    assert minion.health_probe("running", "", container="web")["healthy"] is False


def test_the_gate_waits_on_the_chosen_check(minion):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        gate = minion.wait_healthy(f"tcp://127.0.0.1:{server.getsockname()[1]}", timeout=5, interval=0.1,
                                   check="tcp")
    assert gate["healthy"] is True
    late = minion.wait_healthy("tcp://127.0.0.1:1", timeout=1, interval=0.1, check="tcp")
    assert late["healthy"] is False and "the tcp check did not pass within 1s" in late["comment"]


def test_a_command_check_needs_its_command_and_checks_are_a_closed_list(raw_config):
    raw_config["apps"]["web"]["health"]["check"] = "command"
    with pytest.raises(config.ConfigError, match=r"saltcd:apps:web:environments:dev:health:command: is required"):
        config.load(raw_config)
    raw_config["apps"]["web"]["health"]["command"] = ["sh", "-c", "test -f /tmp/ready"]
    health = config.load(raw_config).deployment("web", "dev").pillar("sha256:" + "1" * 64)["saltcd"]["health"]
    assert (health["check"], health["command"]) == ("command", ["sh", "-c", "test -f /tmp/ready"])
    raw_config["apps"]["web"]["health"]["check"] = "ping"
    with pytest.raises(config.ConfigError, match=r"saltcd:apps:web:health:check: must be one of"):
        config.load(raw_config)

"""A master whose `saltcd:` section is invalid, started for real: the webhook
refuses every post (503, no detail for the sender) and the webhook, drain and
notify engines each say why once in the master's log and stay up. Salt's
process manager restarts an engine process that ends (it looks every 10 s), so
an engine that returned would log its error again every 10 s."""

import time
from pathlib import Path

import pytest

from saltcd import master_config
from tests.ports import free_port
from tests.posting import post

pytestmark = pytest.mark.integration

# One mistake that every engine reads: the webhook and the drain engine load
# the whole section, the notify engine its `notify` list.
BAD = {"notify": [{"url": "ftp://hooks.example.com/saltcd"}]}
REASON = "saltcd:notify:0:url: must be an http:// or https:// URL"
WATCHED = 25  # seconds: two of the process manager's rounds and a half


@pytest.fixture
def bad_master(salt_factories):
    port = free_port()
    overrides = {**master_config.wiring(webhook_port=port), "saltcd": BAD, "log_level_logfile": "info"}
    master = salt_factories.salt_master_daemon("saltcd-bad-config", overrides=overrides)
    with master.started(start_timeout=120):
        yield master, port


def post_to(port):
    return post(f"http://127.0.0.1:{port}/saltcd/registry", b"{}", {"Content-Type": "application/json"})


def test_engines_say_once_what_is_wrong_and_stay_up(bad_master):
    master, port = bad_master
    deadline, answer = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        try:
            answer = post_to(port)
            break
        except OSError:  # the engine is not listening yet
            time.sleep(0.5)
    # The sender learns only that the master is misconfigured; the log says how.
    assert answer is not None and answer == (503, "saltcd configuration invalid (the master's log says why)\n")
    time.sleep(WATCHED)
    log = Path(master.config["log_file"]).read_text(errors="replace").splitlines()
    said = {engine: [line for line in log if f"saltcd: {engine} engine idle" in line]
            for engine in ("drain", "notify")}
    said["webhook"] = [line for line in log if "saltcd_webhook: invalid saltcd configuration" in line]
    assert len(said["webhook"]) == 1 and REASON in said["webhook"][0], said["webhook"]
    assert len(said["drain"]) == 1 and REASON in said["drain"][0], said["drain"]
    assert len(said["notify"]) == 1 and REASON in said["notify"][0], said["notify"]
    restarted = [line for line in log if "restarting" in line and "saltcd" in line]
    assert restarted == [], restarted

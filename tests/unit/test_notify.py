"""Rollout notifications (saltcd.notify) against a real HTTP receiver on loopback."""

import time

import pytest

from saltcd import config, notify
from tests.notify_receiver import Receiver
from tests.ports import free_port as closed_port

DIGEST = "sha256:" + "c" * 64


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _finished(status, reason=None):
    return ("saltcd/deploy/web/dev/finished",
            {"rollout": "r1", "app": "web", "env": "dev", "digest": DIGEST, "status": status, "reason": reason})


def test_json_and_slack_messages_carry_the_fields(receiver):
    targets = notify.targets([{"url": receiver.url, "secret": "s3cret-token"},
                              {"url": receiver.url, "format": "slack", "events": ["rolled_back"]}])
    notifier = notify.Notifier(targets, backoff=0.01)
    notifier.submit("saltcd/deploy/web/dev/started",
                    {"rollout": "r1", "app": "web", "env": "dev", "digest": DIGEST, "minions": ["dev-1"]})
    notifier.submit(*_finished("rolled_back", "batch 1 failed on dev-1;\nrolled back"))
    got = receiver.wait(3)
    notifier.close()
    assert len(got) == 3
    slack = [g for g in got if "text" in g["body"]]
    got = [g for g in got if "text" not in g["body"]] + slack  # one thread per endpoint: any order between them
    started, rolled_back = got[0]["body"], got[1]["body"]
    assert started == {"event": "started", "app": "web", "env": "dev", "digest": DIGEST,
                       "short": DIGEST[:19], "outcome": "running", "reason": "rolling out to dev-1",
                       "rollout": "r1"}
    assert got[0]["auth"] == "Bearer s3cret-token"
    assert rolled_back["event"] == "rolled_back" and rolled_back["outcome"] == "rolled_back"
    assert rolled_back["reason"] == "batch 1 failed on dev-1; rolled back"  # one line
    assert got[2]["auth"] is None
    assert got[2]["body"]["text"].startswith(":rewind: saltcd web/dev rolled_back: " + DIGEST[:19])


def test_finished_kinds():
    assert notify.kind_of(*_finished("succeeded")) == "finished"
    assert notify.kind_of(*_finished("paused")) == "failed"
    assert notify.kind_of("saltcd/deploy/web/dev/batch", {}) is None


@pytest.mark.parametrize("down", ["closed", "500"])
def test_a_down_endpoint_never_blocks_the_caller_and_is_retried_bounded(down, receiver, caplog):
    if down == "500":
        receiver.status = 500
        url = receiver.url
    else:
        url = f"http://127.0.0.1:{closed_port()}/hook"
    notifier = notify.Notifier(notify.targets([{"url": url, "retries": 2, "secret": "s3cret-token"}]),
                               backoff=0.01)
    began = time.monotonic()
    for _ in range(notify.QUEUE_SIZE + 50):  # more than the queue holds: dropped, not blocking
        notifier.submit(*_finished("failed", "x"))
    assert time.monotonic() - began < 1
    notifier.close(wait=0.5)
    if down == "500":
        assert len(receiver.wait(3)) >= 3 and receiver.got[0]["auth"] == "Bearer s3cret-token"
    assert "s3cret-token" not in caplog.text


def test_config_refuses_bad_entries_naming_the_key(raw_config):
    raw_config["notify"] = [{"url": "ftp://x"}]
    with pytest.raises(config.ConfigError, match=r"saltcd:notify:0:url: must be an http"):
        config.load(raw_config)
    raw_config["notify"] = [{"url": "http://127.0.0.1:1/", "events": ["done"]}]
    with pytest.raises(config.ConfigError, match=r"saltcd:notify:0:events"):
        config.load(raw_config)
    raw_config["notify"] = [{"url": "http://127.0.0.1:1/", "format": "slack", "secret": "sdb://vault/x"}]
    assert config.load(raw_config).deployments()


def test_records_send_only_what_saltcd_recorded_once_per_rollout_and_kind(caplog):
    rid = "20261127T010203.000004Z-a1b2c3"
    recorded = {("web", "dev", rid): {"id": rid, "to_digest": "sha256:" + "a" * 64, "status": "rolled_back",
                                      "reason": "batch 1 failed on dev-1", "minions": ["dev-1", "dev-2"]}}
    records = notify.Records(lambda app, env, rollout_id: recorded.get((app, env, rollout_id)))
    forged = {"rollout": rid, "status": "succeeded", "digest": "sha256:" + "f" * 64}

    # The record wins over what the event says; a second `finished` is a replay.
    data = records.data("saltcd/deploy/web/dev/finished", forged)
    assert data == {"app": "web", "env": "dev", "digest": "sha256:" + "a" * 64, "rollout": rid,
                    "minions": ["dev-1", "dev-2"], "status": "rolled_back", "reason": "batch 1 failed on dev-1"}
    assert notify.kind_of("saltcd/deploy/web/dev/finished", data) == "rolled_back"
    assert records.data("saltcd/deploy/web/dev/finished", forged) is None
    assert records.data("saltcd/deploy/web/dev/started", forged)["digest"] == "sha256:" + "a" * 64
    # No such rollout (in that app/env), a still running one, or another step: nothing.
    assert records.data("saltcd/deploy/web/qa/finished", forged) is None
    assert records.data("saltcd/deploy/web/dev/finished", {"rollout": "made-up"}) is None
    recorded[("web", "dev", rid)]["status"] = "running"
    assert notify.Records(lambda *key: recorded.get(key)).data("saltcd/deploy/web/dev/finished", forged) is None
    assert records.data("saltcd/deploy/web/dev/batch", forged) is None
    assert "names no rollout saltcd recorded" in caplog.text

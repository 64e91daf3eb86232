"""Rollout notifications (saltcd.present.outgoing) against a real HTTP receiver on loopback."""

import http.server
import threading
import time

import pytest

from saltcd import config, store
from saltcd.config import notify_targets
from saltcd.present import outgoing, sent_marks
from tests.notify_receiver import Receiver
from tests.ports import free_port as closed_port
from tests.unit.fakes import MemoryCache

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
    targets = notify_targets.targets([{"url": receiver.url, "secret": "s3cret-token"},
                              {"url": receiver.url, "format": "slack", "events": ["rolled_back"]}])
    notifier = outgoing.Notifier(targets, backoff=0.01)
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
    assert outgoing.kind_of(*_finished("succeeded")) == "finished"
    assert outgoing.kind_of(*_finished("converged")) == "finished"  # a left-behind minion brought back
    assert outgoing.kind_of(*_finished("paused")) == "failed"
    assert outgoing.kind_of("saltcd/deploy/web/dev/batch", {}) is None


@pytest.mark.parametrize("down", ["closed", "500"])
def test_a_down_endpoint_never_blocks_the_caller_and_is_retried_bounded(down, receiver, caplog):
    if down == "500":
        receiver.status = 500
        url = receiver.url
    else:
        url = f"http://127.0.0.1:{closed_port()}/hook"
    notifier = outgoing.Notifier(notify_targets.targets([{"url": url, "retries": 2, "secret": "s3cret-token"}]),
                               backoff=0.01)
    began = time.monotonic()
    for _ in range(outgoing.QUEUE_SIZE + 50):  # more than the queue holds: dropped, not blocking
        notifier.submit(*_finished("failed", "x"))
    assert time.monotonic() - began < 1
    notifier.close(wait=0.5)
    if down == "500":
        assert len(receiver.wait(3)) >= 3 and receiver.got[0]["auth"] == "Bearer s3cret-token"
    _stop(notifier)
    assert "s3cret-token" not in caplog.text


def _stop(notifier):
    """Drop what `notifier` still holds and end its threads: a dead endpoint's
    retries would outlive the test and sleep in the next one's patched sleep."""
    for pending in notifier.queues:
        with pending.mutex:
            pending.queue.clear()
    notifier.close()
    assert not any(thread.is_alive() for thread in notifier.threads)


def test_config_refuses_bad_entries_naming_the_key(raw_config):
    raw_config["notify"] = [{"url": "ftp://x"}]
    with pytest.raises(config.ConfigError, match=r"saltcd:notify:0:url: must be an http"):
        config.load(raw_config)
    raw_config["notify"] = [{"url": "http://127.0.0.1:1/", "events": ["done"]}]
    with pytest.raises(config.ConfigError, match=r"saltcd:notify:0:events"):
        config.load(raw_config)
    raw_config["notify"] = [{"url": "http://127.0.0.1:1/", "format": "slack", "secret": "sdb://vault/x"}]
    assert config.load(raw_config).deployments()


def _records(recorded, cache=None):
    marks = sent_marks.SentMarks(cache if cache is not None else MemoryCache())
    return outgoing.Records(lambda app, env, rollout_id: recorded.get((app, env, rollout_id)), marks)


def _recorded(rid, **extra):
    return {("web", "dev", rid): {"id": rid, "app": "web", "env": "dev", "to_digest": "sha256:" + "a" * 64,
                                  "status": "rolled_back", "reason": "batch 1 failed on dev-1",
                                  "minions": ["dev-1", "dev-2"], **extra}}


def test_records_send_only_what_saltcd_recorded_once_per_rollout_and_kind(caplog):
    rid = store.new_id()
    recorded = _recorded(rid)
    records = _records(recorded)
    forged = {"rollout": rid, "status": "succeeded", "digest": "sha256:" + "f" * 64}

    # The record wins over what the event says; a second `finished` is a replay.
    data = records.data("saltcd/deploy/web/dev/finished", forged)
    assert data == {"app": "web", "env": "dev", "digest": "sha256:" + "a" * 64, "rollout": rid,
                    "minions": ["dev-1", "dev-2"], "status": "rolled_back", "reason": "batch 1 failed on dev-1"}
    assert outgoing.kind_of("saltcd/deploy/web/dev/finished", data) == "rolled_back"
    assert records.data("saltcd/deploy/web/dev/finished", forged) is None
    assert records.data("saltcd/deploy/web/dev/started", forged)["digest"] == "sha256:" + "a" * 64
    # No such rollout (in that app/env), a still running one, or another step: nothing.
    assert records.data("saltcd/deploy/web/qa/finished", forged) is None
    assert records.data("saltcd/deploy/web/dev/finished", {"rollout": "made-up"}) is None
    recorded[("web", "dev", rid)]["status"] = "running"
    assert _records(recorded).data("saltcd/deploy/web/dev/finished", forged) is None
    assert records.data("saltcd/deploy/web/dev/batch", forged) is None
    assert "names no rollout saltcd recorded" in caplog.text


def test_sent_marks_survive_a_restart_of_the_engine():
    rid = store.new_id()
    recorded, cache = _recorded(rid), MemoryCache()
    event = ("saltcd/deploy/web/dev/finished", {"rollout": rid})
    assert _records(recorded, cache).data(*event)["rollout"] == rid
    # The engine restarts (a new Records over the same store): the replay sends nothing.
    assert _records(recorded, cache).data(*event) is None
    assert _records(recorded, cache).data("saltcd/deploy/web/dev/started", {"rollout": rid}) is not None


def test_an_old_rollout_is_not_notified_and_old_marks_are_pruned(caplog):
    now = time.time()
    old, new = store.new_id(now - sent_marks.KEEP - 60), store.new_id(now)
    recorded, cache = {**_recorded(old), **_recorded(new)}, MemoryCache()
    marks = sent_marks.SentMarks(cache)
    marks.mark("web", "dev", old, "finished", now=now - sent_marks.KEEP - 30)
    records = outgoing.Records(lambda app, env, rollout_id: recorded.get((app, env, rollout_id)), marks)
    # Its mark is gone once it is older than the marks are kept: the rollout is too old to be news.
    assert records.data("saltcd/deploy/web/dev/started", {"rollout": old}, now=now) is None
    assert "too old to notify" in caplog.text
    assert records.data("saltcd/deploy/web/dev/finished", {"rollout": new}, now=now) is not None
    assert cache.list(f"{sent_marks.BANK}/web/dev") == [f"{new}.finished"]


def _redirecting_pair():
    """An endpoint answering 302 to another server, which keeps what reaches it."""
    reached = []

    class Catcher(http.server.BaseHTTPRequestHandler):
        def _keep(self):
            reached.append({"method": self.command, "auth": self.headers.get("Authorization")})
            self.send_response(200)
            self.end_headers()

        do_GET = do_POST = _keep  # noqa: N815

        def log_message(self, *args):
            pass

    catcher = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Catcher)

    class Redirector(Catcher):
        def do_POST(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{catcher.server_port}/elsewhere")
            self.end_headers()

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    for server in (catcher, redirector):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{redirector.server_port}/hook", reached, (catcher, redirector)


def test_a_redirect_is_a_failed_send_and_is_never_followed(caplog):
    url, reached, servers = _redirecting_pair()
    try:
        target = notify_targets.targets([{"url": url, "secret": "s3cret-token"}])[0]
        assert outgoing.send(target, {"event": "finished"}) is False
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert reached == []  # neither the message nor the secret went anywhere else
    assert "answered 302 (a redirect: not followed)" in caplog.text


def test_a_secret_goes_over_https_only_and_logs_show_the_host_only(raw_config):
    with pytest.raises(notify_targets.NotifyConfigError, match=r"^saltcd:notify:0:url: .*`secret` must use https://"):
        notify_targets.targets([{"url": "http://ci.example.com/hook", "secret": "s3cret-token"}])
    raw_config["notify"] = [{"url": "http://hooks.example.com/x", "secret": "sdb://vault/x"}]
    with pytest.raises(config.ConfigError, match=r"saltcd:notify:0:url: .*must use https://"):
        config.load(raw_config)
    # Plain http without a secret, or to a loopback address (it never leaves the host): allowed.
    for url in ("http://ci.example.com/hook", "http://127.0.0.1:8080/hook", "http://[::1]:8080/hook"):
        notify_targets.targets([{"url": url, "secret": "s3cret-token" if "ci." not in url else None}])
    with pytest.raises(notify_targets.NotifyConfigError, match="saltcd:notify:0:url"):
        notify_targets.targets([{"url": "http://localhost.example.com/", "secret": "s3cret-token"}])
    # A Slack webhook's secret is its path: a log line shows scheme and host only.
    slack, local = notify_targets.targets([
        {"url": "https://hooks.slack.com/services/T000/B000/XXXX?token=abc", "format": "slack"},
        {"url": "http://user:pw@[::1]:8080/hook/secret", "secret": "s3cret-token"}])
    assert str(slack) == "https://hooks.slack.com" and str(local) == "http://[::1]:8080"


def test_minion_text_in_a_slack_message_pings_no_one_and_controls_nothing(receiver):
    hostile = "Unhealthy: \x1b[2J\x1b]0;pwned\x07 <!channel> <http://evil|click> & more"
    recorded = _recorded(store.new_id(), reason=f"batch 1 failed on dev-1 ({hostile})")
    (record,) = recorded.values()
    data = _records(recorded).data("saltcd/deploy/web/dev/finished", {"rollout": record["id"]})
    notifier = outgoing.Notifier(notify_targets.targets([{"url": receiver.url, "format": "slack"},
                                               {"url": receiver.url}]), backoff=0.01)
    notifier.submit("saltcd/deploy/web/dev/finished", data)
    got = receiver.wait(2)
    notifier.close()
    text = next(g["body"]["text"] for g in got if "text" in g["body"])
    reason = next(g["body"]["reason"] for g in got if "reason" in g["body"])
    for shown in (text, reason):
        assert "\x1b" not in shown and "\x07" not in shown and "pwned" not in shown
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt; &lt;http://evil|click&gt; &amp; more" in text
    assert reason.endswith("(Unhealthy: <!channel> <http://evil|click> & more)")  # JSON: cleaned, not escaped

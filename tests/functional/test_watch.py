"""deploy.watch through Salt's RunnerClient, with the master's cache and a bus
on which a minion forges events: what it shows and returns is the record's."""

import logging
import time

import pytest
import salt.cache
import salt.runner
import salt.utils.event

from saltcd import store

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
FORGED = "sha256:" + "f" * 64
HOSTILE = "Unhealthy: \x1b[2J\x1b]0;pwned\x07 <!channel>"


class ForgingBus:
    """The master bus as deploy.watch uses it: a minion's forged `finished`
    (it claims success) comes while saltcd rolls the rollout back."""

    def __init__(self, records, ended):
        self.records, self.ended, self.sent = records, ended, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def connect_pub(self):
        return True

    def get_event(self, **kwargs):
        if self.sent:
            return None
        self.sent = True
        self.records.save_rollout(self.ended)  # the rollout ends as the forgery arrives
        return {"tag": "saltcd/deploy/web/dev/finished",
                "data": {"rollout": self.ended["id"], "app": "web", "env": "dev", "status": "succeeded",
                         "digest": FORGED, "reason": "\x1b]0;forged\x07all good"}}


@pytest.fixture
def watched(master_opts, example_config, monkeypatch):
    opts = master_opts(example_config)
    records = store.Store(salt.cache.factory(opts))
    rid = store.new_id()
    record = {"id": rid, "app": "web", "env": "dev", "status": "running", "to_digest": NEW,
              "started": time.time(), "minions": ["dev-1"], "from_digests": {"dev-1": OLD}, "batches": []}
    records.save_rollout(record)
    failed = {**record, "status": "rolled_back", "ended": time.time(),
              "reason": f"batch 1 failed on dev-1 ({HOSTILE}); rolled back",
              "batches": [{"kind": "batch", "number": 1, "started": 1, "ended": 2,
                           "minions": {"dev-1": {"from": OLD, "to": NEW, "ok": False, "changed": True,
                                                 "comment": HOSTILE}}}]}
    monkeypatch.setattr(salt.utils.event, "get_master_event", lambda *a, **k: ForgingBus(records, failed))
    return opts, rid


def test_watch_shows_and_returns_the_record_not_the_event(watched, caplog):
    opts, rid = watched
    caplog.set_level(logging.INFO, logger="saltcd.master.wiring")
    ret = salt.runner.RunnerClient(opts).cmd("deploy.watch", kwarg={"app": "web", "env": "dev", "timeout": 30},
                                             print_event=False, full_return=True)
    assert ret["success"] is False  # rolled back: non-zero, whatever the event claimed
    assert ret["return"]["status"] == "rolled_back" and ret["return"]["id"] == rid
    lines = [r.getMessage() for r in caplog.records if r.name == "saltcd.master.wiring"]
    text = "\n".join(lines)
    assert f"saltcd: web/dev: attached to rollout {rid}" in text
    assert "saltcd: web/dev batch 1: failed" in lines
    assert "saltcd:   dev-1: sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb replaced, FAILED " \
           "(Unhealthy:  <!channel>)" in lines
    assert FORGED[:19] not in text and "all good" not in text and "forged" not in text
    assert "\x1b" not in text and "\x07" not in text and "pwned" not in text

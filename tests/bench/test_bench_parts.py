"""The benchmark's own arithmetic and bookkeeping, without a sandbox."""

import json

from bench import stats, throughput
from bench.cli import targets

DIGEST = "sha256:" + "a" * 64


def test_summary_and_ratio():
    assert stats.summary([3, 1, 2, None]) == {"median": 2, "min": 1, "max": 3, "runs": 3}
    assert stats.summary([]) == {"median": None, "min": None, "max": None, "runs": 0}
    assert stats.ratio({"median": 3.0}, {"median": 2.0}) == 1.5
    assert stats.ratio({"median": 3.0}, {"median": None}) is None


def test_post_mix_and_duplicates_are_byte_identical():
    plan = throughput.posts(20, "127.0.0.1:5000", DIGEST)
    kinds = [kind for kind, _ in plan]
    assert kinds.count("push") == 12 and kinds.count("duplicate") == 4
    assert kinds.count("pull") == 2 and kinds.count("blob") == 2
    for index, (kind, body) in enumerate(plan):
        if kind == "duplicate":
            previous_push = next(b for k, b in reversed(plan[:index]) if k == "push")
            assert body == previous_push
    event = json.loads(plan[0][1])["events"][0]
    assert event["target"]["tag"] == "dev" and event["request"]["host"] == "127.0.0.1:5000"


class _Records:
    def __init__(self, history):
        self.history = history

    def rollouts(self, app, env):
        return self.history.get(app, [])


def test_accounting_finds_a_post_that_never_reacted_and_a_request_that_never_ended():
    plan = throughput.posts(3, "127.0.0.1:5000", DIGEST)
    ids = [throughput._event_ids(body) for _, body in plan]  # pylint: disable=protected-access
    returns = [(0.0, ids[0], {"accepted": [{"id": "r1"}], "ignored": [], "rejected": ""}),
               (0.0, ids[1], {"accepted": [{"id": "r2"}], "ignored": [], "rejected": ""})]
    records = _Records({"m1b1": [{"request": "r1", "status": "unchanged"}]})
    hooks = throughput.collections.Counter(ids[0] + ids[1] + ids[2])  # all three reached the bus
    result = throughput._account(plan, [200, 200, 200], returns, records, hooks, {})  # pylint: disable=protected-access
    assert result["without_reaction"] == 1           # the third post
    assert result["without_reaction_but_on_the_bus"] == 1
    assert result["request_outcomes"] == {"unchanged": 1, "missing": 1}
    assert result["lost"] == 2


def test_targets_say_which_holds():
    results = {"noop": {"to_unchanged": {"median": 2.5}, "restarted": []},
               "throughput": {"1000": {"lost": 1}}}
    verdicts = {t["target"]: t["met"] for t in targets(results)}
    assert verdicts == {"no-op rollout of 3 minions (median)": True, "lost of 1000 posts": False}

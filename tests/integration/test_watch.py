"""A container that dies soon after it starts is caught by default: the issue's
image (serves /health for 4 s, then exits non-zero) pushed to all of dev, with the
shipped settle and watch, is rolled back and dev runs the good digest again."""

import time

import pytest

pytestmark = pytest.mark.integration


def test_an_image_that_dies_after_4_s_is_rolled_back_with_the_shipped_defaults(lab):
    dev = lab.env_minions("dev")
    after = time.time()
    good = lab.push("dies", "dev", "1.0.0")
    finished = lab.wait_for("saltcd/deploy/dies/dev/finished", after).data
    assert finished["status"] == "succeeded" and finished["digest"] == good, finished
    watched = lab.events("saltcd/deploy/dies/dev/watch", after)[-1].data
    assert watched["outcome"] == "passed" and watched["seconds"] == 5

    after = time.time()
    bad = lab.push("dies", "dev", "2.0.0", behaviour="dies")
    finished = lab.wait_for("saltcd/deploy/dies/dev/finished", after).data
    assert finished["digest"] == bad and finished["status"] == "rolled_back", finished
    record = next(r for r in lab.history("dies", "dev") if r["id"] == finished["rollout"])
    # Caught by the settle of the health gate or by the watch after the last batch:
    # either way the record names the minion and what happened.
    assert any(m in record["reason"] for m in dev), record["reason"]
    assert {m: d for m, d in lab.running_digests("dies").items() if d} == {m: good for m in dev}
    for minion in dev:
        assert lab.container(minion, "dies")["running"] and lab.health(minion, "dies") == 200

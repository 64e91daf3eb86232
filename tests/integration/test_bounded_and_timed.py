"""Bounded storage under a flood of refused posts, approvals by digest, cooldowns
and deploy windows — against the real master, minions, registry and dockerd."""

import http.client
import json
import threading
import time
from pathlib import Path

import pytest

from saltcd import master_config

from .conftest import APPS
from .test_lost_notification import set_reactor_leader

pytestmark = pytest.mark.integration

FLOOD_POSTS = 10_000
FLOOD_CONNECTIONS = 8
FLOOD_DEADLINE = 300  # seconds for the whole flood


def store_size(lab):
    """(files, bytes) under the master cachedir's saltcd banks."""
    root = Path(lab.master.config["cachedir"]) / "saltcd"
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def pre_batch_seconds(lab, app, env, after):
    """Push receipt to the first batch's start, from the history of the rollout that finished."""
    data = lab.wait_for(f"saltcd/deploy/{app}/{env}/finished", after).data
    assert data["status"] == "succeeded", data
    record = next(r for r in lab.history(app, env, limit=5) if r["id"] == data["rollout"])
    return record["batches"][0]["started"] - record["received"]


def rollout_pre_batch(lab, version):
    start = time.time()
    lab.push("flood", "dev", version)
    return pre_batch_seconds(lab, "flood", "dev", start)


def flood(port, posts, connections, deadline):
    """POST `posts` unauthenticated registry notifications over keep-alive connections;
    returns {status: count}."""
    body = json.dumps({"events": [{"action": "push", "target": {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "repository": "saltcd/flood", "tag": "dev", "digest": "sha256:" + "f" * 64},
        "request": {"host": "127.0.0.1"}}]}).encode()
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    statuses, guard = {}, threading.Lock()
    per_connection = posts // connections

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        seen = {}
        try:
            for _ in range(per_connection):
                if time.time() > deadline:
                    break
                try:
                    conn.request("POST", "/" + master_config.REGISTRY_HOOK_PATH, body=body, headers=headers)
                    answer = conn.getresponse()
                    answer.read()
                    seen[answer.status] = seen.get(answer.status, 0) + 1
                    if answer.getheader("Connection", "").lower() == "close":
                        conn.close()
                except (OSError, http.client.HTTPException):
                    seen["error"] = seen.get("error", 0) + 1
                    conn.close()
        finally:
            conn.close()
            with guard:
                for status, count in seen.items():
                    statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.time(), 1) + 15)
    return statuses


def test_a_flood_of_refused_posts_keeps_the_store_bounded_and_rollouts_fast(lab, webhook_port):
    before = [rollout_pre_batch(lab, version) for version in ("1.0.0", "2.0.0")]
    files_before, bytes_before = store_size(lab)
    started = time.time()
    statuses = flood(webhook_port, FLOOD_POSTS, FLOOD_CONNECTIONS, started + FLOOD_DEADLINE)
    took = time.time() - started
    print(f"flood: {statuses} in {took:.1f} s ({sum(statuses.values()) / took:.0f} posts/s)")
    assert statuses.get(401) == FLOOD_POSTS, statuses
    time.sleep(8)  # the engine writes its counts every few seconds
    counts = lab.run.run("deploy.rejections", "limit=5").data
    refused = sum(row["count"] for row in counts["counted"] if row["source"] == "registry")
    assert refused >= FLOOD_POSTS, counts["counted"]
    assert 0 < len(counts["recent"]) <= 5
    files_after, bytes_after = store_size(lab)
    print(f"store: {files_before} files/{bytes_before} B before, {files_after} files/{bytes_after} B after")
    # At most rejections_keep (100) full records and a few per-minute count keys.
    assert files_after - files_before <= 110, (files_before, files_after)
    assert bytes_after - bytes_before <= 256 * 1024, (bytes_before, bytes_after)
    # The better of two rollouts after: a slowdown the flood left behind shows
    # in both, one busy moment of this shared machine in only one.
    after = [rollout_pre_batch(lab, version) for version in ("3.0.0", "4.0.0")]
    print(f"pre-batch: before the flood {before}, after {after}")
    assert min(after) <= max(before) * 1.5 + 1.0, (before, after)


def test_an_approval_deploys_the_reviewed_digest_and_refuses_a_moved_tag(lab):
    start = time.time()
    reviewed = lab.push("review", "prod", "1.0.0")
    event = lab.wait_for("saltcd/deploy/review/prod/awaiting_approval", start, timeout=60).data
    assert event["digest"] == reviewed and event["tag"] == "prod" and event["pushed_by"]["kind"] == "registry"
    status = lab.run.run("deploy.status", "app=review", "env=prod").data["review"]["prod"]
    assert [w["digest"] for w in status["awaiting_approval"]] == [reviewed]

    # The tag moves and saltcd never hears of it (the reaction is dropped).
    set_reactor_leader(lab, False)
    try:
        moved = lab.push("review", "prod", "6.6.6")
        time.sleep(5)  # the notification arrives and is dropped
    finally:
        set_reactor_leader(lab, True)
    assert lab.run.run("deploy.status", "app=review", "env=prod").data["review"]["prod"][
        "awaiting_approval"][-1]["digest"] == reviewed

    refused = lab.run.run("deploy.approve", "app=review", "env=prod")
    assert refused.returncode != 0
    assert "moved since the push was reviewed" in refused.data["error"] and moved in refused.data["error"]
    assert lab.running_digests("review")["prod-1"] is None

    ret = lab.run.run("deploy.approve", "app=review", "env=prod", f"digest={reviewed}")
    assert ret.returncode == 0 and ret.data["status"] == "succeeded", ret.data
    assert ret.data["to_digest"] == reviewed and ret.data["pinned"] == reviewed
    assert lab.running_digests("review")["prod-1"] == reviewed


def test_a_push_waits_out_its_cooldown_and_then_runs(lab):
    start = time.time()
    digest = lab.push("cool", "dev", "1.0.0")
    waiting = lab.wait_for("saltcd/deploy/cool/dev/waiting", start, timeout=60).data
    assert waiting["waiting_for"] == "cooldown"
    pending = lab.run.run("deploy.status", "app=cool", "env=dev").data["cool"]["dev"]["pending"]
    assert len(pending) == 1 and pending[0]["waiting_for"] == "cooldown" and pending[0]["runs_at"]
    assert lab.events("saltcd/deploy/cool/dev/started", start) == []
    # deploy.resume (every 15 s here) starts it once the cooldown has passed.
    finished = lab.wait_for("saltcd/deploy/cool/dev/finished", start, timeout=120).data
    assert finished["status"] == "succeeded", finished
    record = next(r for r in lab.history("cool", "dev") if r["id"] == finished["rollout"])
    assert record["started"] - record["received"] >= APPS["cool"][1]["environments"]["dev"]["cooldown"]
    assert set(lab.running_digests("cool")[m] for m in lab.env_minions("dev")) == {digest}


def test_a_waiting_push_survives_a_master_restart(lab):
    start = time.time()
    digest = lab.push("cool", "dev", "2.0.0")
    lab.wait_for("saltcd/deploy/cool/dev/waiting", start, timeout=60)
    lab.master.terminate()
    lab.master.start(start_timeout=120)
    finished = lab.wait_for("saltcd/deploy/cool/dev/finished", start, timeout=300).data
    assert finished["status"] == "succeeded" and finished["digest"] == digest, finished


def test_an_operator_rollout_outside_the_window_needs_force(lab):
    start = time.time()
    digest = lab.push("closed", "dev", "1.0.0")
    held = lab.wait_for("saltcd/deploy/closed/dev/waiting", start, timeout=60).data
    assert held["waiting_for"] == "window" and "UTC" in held["reason"]
    refused = lab.run.run("deploy.rollout", "app=closed", "env=dev")
    assert refused.returncode != 0
    assert "outside its deploy windows" in refused.data["error"] and "opens at" in refused.data["error"]
    ret = lab.run.run("deploy.rollout", "app=closed", "env=dev", "force=True")
    assert ret.returncode == 0 and ret.data["status"] == "succeeded", ret.data
    assert set(lab.running_digests("closed")[m] for m in lab.env_minions("dev")) == {digest}
    # The held push was superseded by the operator's rollout: nothing left waiting.
    assert lab.run.run("deploy.status", "app=closed", "env=dev").data["closed"]["dev"]["pending"] == []

"""saltcd pulls ahead of the batches (dev: 2 minions, batch 1): dev-2 has the new
image before its batch starts; a plan pulls nothing; a minion whose pull fails
keeps its container and is named in the history."""

import time
import urllib.request

import pytest

pytestmark = pytest.mark.integration

DEV = ["dev-1", "dev-2"]


def has_image(lab, minion, app, digest):
    """Is `repository@digest` on that host's engine (as `docker images --digests` shows)?"""
    client = lab.hosts[minion].client()
    try:
        wanted = f"{lab.repositories[app]}@{digest}"
        return any(wanted in (image.attrs.get("RepoDigests") or []) for image in client.images.list())
    finally:
        client.close()


def finished(lab, app, after):
    return lab.wait_for(f"saltcd/deploy/{app}/dev/finished", after, timeout=240).data


def test_the_next_batch_finds_its_image_already_pulled(lab):
    start = time.time()
    lab.push("early", "dev", "1.0.0")
    assert finished(lab, "early", start)["status"] == "succeeded"
    start = time.time()
    digest = lab.push("early", "dev", "1.0.1")
    lab.wait_for("saltcd/deploy/early/dev/batch", start, timeout=120)
    # Batch 1 (dev-1) is done, batch 2 (dev-2) has not started: the image is there.
    assert has_image(lab, "dev-2", "early", digest)
    assert finished(lab, "early", start)["status"] == "succeeded"
    pulled = [e.data for e in lab.events("saltcd/deploy/early/dev/pulled", start)]
    assert [(p["minion"], p["ok"]) for p in pulled] == [("dev-2", True)]
    record = lab.history("early", "dev", limit=1)[0]
    pull = record["prepull"]["minions"]["dev-2"]
    second = next(b for b in record["batches"] if b["number"] == 2)
    assert pull["ok"] and pull["ended"] <= second["started"], (pull, second)
    assert list(record["prepull"]["minions"]) == ["dev-2"]  # batch 1's deploy pulls itself
    assert [lab.running_digests("early")[m] for m in DEV] == [digest, digest]


def _delete_manifest(lab, app, digest):
    """The registry forgets the image (its API's DELETE): minions that lack it can't pull it."""
    repo = lab.repositories[app].split("/", 1)[1]
    request = urllib.request.Request(f"{lab.registry.url}/v2/{repo}/manifests/{digest}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback registry
        assert answer.status == 202


def test_a_plan_pulls_nothing_and_a_failed_pull_stops_nothing(lab):
    start = time.time()
    good = lab.push("pullfail", "dev", "1.0.0")  # manual: waits for an approval
    lab.wait_for("saltcd/deploy/pullfail/dev/awaiting_approval", start, timeout=60)
    plan = lab.run.run("deploy.rollout", "app=pullfail", "env=dev", "test=True")
    assert plan.returncode == 0, plan
    assert not any(has_image(lab, m, "pullfail", good) for m in DEV)
    approved = lab.run.run("deploy.approve", "app=pullfail", "env=dev")
    assert approved.data["status"] == "succeeded", approved.data

    start = time.time()
    bad = lab.push("pullfail", "dev", "1.0.1")
    lab.wait_for("saltcd/deploy/pullfail/dev/awaiting_approval", start, timeout=60)
    # dev-1 gets the image now; then the registry loses it, so only dev-2's pull fails.
    client = lab.hosts["dev-1"].client()
    try:
        client.images.pull(f"{lab.repositories['pullfail']}@{bad}")
    finally:
        client.close()
    _delete_manifest(lab, "pullfail", bad)
    before = lab.container("dev-2", "pullfail")
    # digest=: the tag can't be checked at the registry any more.
    ret = lab.run.run("deploy.approve", "app=pullfail", "env=dev", f"digest={bad}")
    data = ret.data
    assert data["status"] == "rolled_back" and data["failed_minions"] == ["dev-2"], data
    assert data["prepull"]["minions"]["dev-2"]["ok"] is False, data["prepull"]
    assert lab.container("dev-2", "pullfail") == before  # same container, never stopped
    assert lab.running_digests("pullfail")["dev-1"] == good  # rolled back
    pulled = [e.data for e in lab.events("saltcd/deploy/pullfail/dev/pulled", start)]
    assert [(p["minion"], p["ok"]) for p in pulled] == [("dev-2", False)]
    assert lab.history("pullfail", "dev", limit=1)[0]["failed_minions"] == ["dev-2"]

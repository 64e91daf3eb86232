"""The operator's view on the real lab: notifications to HTTP receivers on
loopback (two of the endpoints down), deploy.watch from another shell, and the
HTML report of a rolled-back rollout."""

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

APP = "tell"
SALT_RUN = os.path.join(os.path.dirname(sys.executable), "salt-run")


def finished(lab, after):
    return lab.wait_for(f"saltcd/deploy/{APP}/dev/finished", after, timeout=240)


def test_notifications_watch_and_report(lab, notify_receivers):
    json_hook, slack_hook, failing = notify_receivers.json, notify_receivers.slack, notify_receivers.failing

    # A good rollout: `started` and `finished` with the fields, despite a 500 and a closed port.
    start = time.time()
    good = lab.push(APP, "dev", "1.0.0")
    event = finished(lab, start)
    assert event.data["status"] == "succeeded", event.data
    done = json_hook.wait_for(APP, lambda b: b["event"] == "finished" and b["digest"] == good)[0]
    assert done["auth"] == f"Bearer {notify_receivers.SECRET}"
    assert {k: done["body"][k] for k in ("app", "env", "digest", "short", "outcome", "rollout")} == {
        "app": APP, "env": "dev", "digest": good, "short": good[:19], "outcome": "succeeded",
        "rollout": event.data["rollout"]}
    assert json_hook.messages(APP, lambda b: b["event"] == "started" and b["digest"] == good)
    good_rollout = event.data["rollout"]
    # The endpoint answering 500 was tried, a bounded number of times, and the
    # rollout neither waited for it nor changed (its outcome is above).
    tries = failing.wait_for(APP, lambda b: b["event"] == "finished" and b["digest"] == good, timeout=30)
    assert 1 <= len(tries) <= 3

    # A minion can put any tag on the master's bus: a made-up rollout and a replay
    # of the real one's `finished` send nothing (the engine reads saltcd's records).
    forged = "sha256:" + "f" * 64
    for rollout_id in ("20260101T000000.000000Z-abcdef", good_rollout):
        ret = lab.minions["dev-2"].salt_call_cli().run(
            "event.fire_master", json.dumps({"rollout": rollout_id, "app": APP, "env": "dev",
                                             "status": "succeeded", "digest": forged}),
            f"saltcd/deploy/{APP}/dev/finished")
        assert ret.returncode == 0, ret

    # A person follows the next rollout from another shell; it is rolled back.
    conf = lab.master.config_dir
    watcher = subprocess.Popen([SALT_RUN, "-c", str(conf), "deploy.watch", f"app={APP}", "env=dev",
                                "timeout=240"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(3)  # salt-run starts and subscribes (it reads the store after subscribing)
        start = time.time()
        bad = lab.push(APP, "dev", "1.0.1", behaviour="unhealthy")
        event = finished(lab, start)
        assert event.data["status"] == "rolled_back", event.data
        out, _ = watcher.communicate(timeout=120)
        out_watch = out
    finally:
        watcher.kill()
    assert watcher.returncode != 0  # exits with the outcome
    assert f"{APP}/dev batch 1: failed" in out and f"{APP}/dev rollback 1: healthy" in out, out
    assert f"{APP}/dev: rolled_back" in out, out

    body = json_hook.wait_for(APP, lambda b: b["event"] == "rolled_back" and b["digest"] == bad)[0]["body"]
    assert body["outcome"] == "rolled_back" and body["reason"].startswith("batch 1 failed on dev-1")
    # Sent in bus order: the forged events came before, and left no trace.
    assert not json_hook.messages(APP, lambda b: b["digest"] == forged)
    # Once for the rollout the replay named (a push whose reaction came late
    # may add a reconcile rollout of the same digest, under its own id).
    assert len(json_hook.messages(APP, lambda b: b["event"] == "finished" and b["rollout"] == good_rollout)) == 1
    text = slack_hook.wait_for(APP, lambda b: bad[:19] in b["text"])[0]["body"]["text"]
    assert text.startswith(f":rewind: saltcd {APP}/dev rolled_back: {bad[:19]}")

    # The report of that rollout: its minions, digests and outcome.
    ret = lab.run.run("deploy.report", f"app={APP}", "env=dev")
    assert ret.returncode == 0 and ret.data["rollout"] == event.data["rollout"], ret
    page = open(ret.data["path"], encoding="utf-8").read()
    assert ">rolled_back</strong>" in page and bad in page and good[:19] in page
    assert ">dev-1</text>" in page and ">dev-2</text>" in page  # the timeline's rows

    # What a person reads (no --out): tables and one line per rollout.
    shown = {}
    for args in (["deploy.status", f"app={APP}", "env=dev"], ["deploy.history", f"app={APP}", "env=dev"],
                 ["deploy.history", f"app={APP}", "env=dev", "limit=1", "detail=True"]):
        done = subprocess.run([SALT_RUN, "-c", str(conf), *args], capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done
        shown[" ".join(args)] = done.stdout
    status = shown[f"deploy.status app={APP} env=dev"]
    assert status.startswith(f"{APP}/dev  converged on {good[:19]}"), status
    rows = {line.split()[0]: line.split()[1:] for line in status.splitlines()[2:4]}
    assert rows["dev-1"][:3] == [good[:19], "running", "healthy"], status
    history = shown[f"deploy.history app={APP} env=dev"].splitlines()
    assert len(history) == 2 and "rolled_back: batch 1 failed on dev-1" in history[0], history
    assert history[1].endswith(" succeeded"), history
    if os.environ.get("SALTCD_CAPTURE"):  # the docs' examples (docs/operating.md) come from here
        with open(os.environ["SALTCD_CAPTURE"], "w", encoding="utf-8") as out:
            out.write(f"$ salt-run deploy.watch app={APP} env=dev\n{out_watch}\n" + "".join(
                f"$ salt-run {k}\n{v}\n" for k, v in shown.items()))

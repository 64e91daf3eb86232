"""Start-first replacement behind each host's HAProxy, measured by a client.

Requests go to every dev minion's public address back to back (a fresh
connection each) through a good rollout, a rollout of an image that crashes at
start and one of an image that degrades after 4 s (caught by the settle, before
any switch): not one of them may fail. The same traffic against a stop-first
app does see failures, so the measurement can fail.
"""

import json
import time

import pytest

from sandbox.traffic import Traffic
from tests.integration.conftest import APPS

pytestmark = pytest.mark.integration

DEV = ["dev-1", "dev-2"]
# How long the client waits for one answer before it counts a failure. Not the
# Traffic default (2 s): in CI another test shares the 2 cores, and a no-op
# state run there has taken 9 s, so a 2 s wait counted CPU starvation as a lost
# request. 10 s still sees every real failure: a refused or reset connection
# fails at once, and HAProxy answers 503 after its connect retries (3 x 2 s).
CLIENT_TIMEOUT = 10


def outcome(lab, app, after, timeout=240):
    return lab.wait_for(f"saltcd/deploy/{app}/dev/finished", after, timeout).data


def rollout(lab, app, version, behaviour="healthy"):
    start = time.time()
    digest = lab.push(app, "dev", version, behaviour=behaviour)
    return digest, outcome(lab, app, start)


def traffic(lab, app):
    port = APPS[app][0]
    return Traffic({m["id"]: f"http://{m['address']}:{port}/version" for m in lab.fleet if m["env"] == "dev"},
                   timeout=CLIENT_TIMEOUT)


def slow_through_proxy(host_proxies, app):
    """{minion: HAProxy's log lines of this app's slow or failed requests}: said
    when a count is off, so the failure shows which hop held a request up."""
    return {m: [line for line in host_proxies[m].slow_requests() if f" saltcd-{app} " in line] for m in DEV}


def leftovers(lab, app):
    """{minion: True} where a `<app>-next` container is left."""
    return {m: lab.container(m, f"{app}-next") is not None for m in DEV}


def test_start_first_serves_every_request_through_good_and_bad_rollouts(lab, host_proxies):
    app = "startfirst"
    first, data = rollout(lab, app, "1.0.0")  # nothing served before this one
    assert data["status"] == "succeeded", data
    with traffic(lab, app) as load:
        good, data = rollout(lab, app, "2.0.0")
        assert data["status"] == "succeeded", data
        assert {m: lab.running_digests(app)[m] for m in DEV} == dict.fromkeys(DEV, good)
        after_good = load.snapshot()
        _, data = rollout(lab, app, "2.0.1", behaviour="crash")
        assert data["status"] == "rolled_back" and data["failed"] == ["dev-1"], data
        _, data = rollout(lab, app, "2.0.2", behaviour="degrades")
        assert data["status"] == "rolled_back" and data["failed"] == ["dev-1"], data
        time.sleep(1)  # requests keep coming after the last switch back
    counts = load.stop()
    assert {m: c["failed"] for m, c in counts.items()} == dict.fromkeys(DEV, 0), (
        counts, slow_through_proxy(host_proxies, app))
    assert all(after_good[m]["served"] > 0 and counts[m]["served"] > after_good[m]["served"] for m in DEV)
    assert {m: lab.running_digests(app)[m] for m in DEV} == dict.fromkeys(DEV, good)
    assert leftovers(lab, app) == dict.fromkeys(DEV, False)
    assert [lab.health(m, app) for m in DEV] == [200, 200]


def test_a_start_first_web_role_beside_a_worker_serves_every_request(lab, host_proxies):
    """Two roles: the web role switches behind HAProxy, the worker is replaced
    after it; a version whose worker exits is rolled back, web role included,
    and still no request fails."""
    app = "sfroles"
    _, data = rollout(lab, app, "1.0.0")
    assert data["status"] == "succeeded", data
    with traffic(lab, app) as load:
        good, data = rollout(lab, app, "2.0.0")
        assert data["status"] == "succeeded", data
        _, data = rollout(lab, app, "2.0.1-noworker")
        assert data["status"] == "rolled_back" and data["failed"] == ["dev-1"], data
        time.sleep(1)
    counts = load.stop()
    assert {m: c["failed"] for m, c in counts.items()} == dict.fromkeys(DEV, 0), (
        counts, slow_through_proxy(host_proxies, f"{app}-web"))
    assert all(c["served"] > 0 for c in counts.values()), counts
    for role in ("web", "worker"):
        assert {m: lab.running_digests(f"{app}-{role}")[m] for m in DEV} == dict.fromkeys(DEV, good), role
    assert leftovers(lab, f"{app}-web") == dict.fromkeys(DEV, False)


def test_stop_first_under_the_same_traffic_loses_requests(lab):
    app = "stopfirst"
    _, data = rollout(lab, app, "1.0.0")
    assert data["status"] == "succeeded", data
    with traffic(lab, app) as load:
        good, data = rollout(lab, app, "2.0.0")
        assert data["status"] == "succeeded", data
    counts = load.stop()
    assert all(counts[m]["failed"] > 0 for m in DEV), counts
    assert {m: lab.running_digests(app)[m] for m in DEV} == dict.fromkeys(DEV, good)


def apply_by_hand(lab, minion, app, digest):
    """`salt-call state.apply saltcd.deploy` with the whole deploy data as pillar,
    as an operator without the runner would; returns (all states ok, states)."""
    port = APPS[app][0]
    pillar = {"saltcd": {
        "image": f"{lab.repositories[app]}@{digest}", "container": app, "ports": [f"{port}:8080"],
        "environment": {"PORT": "8080"}, "stop_timeout": 5, "strategy": "start-first", "drain": 2,
        "health": {"port": port, "timeout": 10, "interval": 0.3, "settle": 1}}}
    ret = lab.minions[minion].salt_call_cli(timeout=120).run(
        "state.apply", "saltcd.deploy", f"pillar={json.dumps(pillar)}")
    states = ret.data if isinstance(ret.data, dict) else {}
    return bool(states) and all(s["result"] for s in states.values()), states


def retired(lab, minion, app):
    """Names of the app's containers on that host other than `<app>` and `<app>-next`."""
    client = lab.hosts[minion].client()
    try:
        # One listing call (the SDK's containers.list inspects each container,
        # and fails on one the reaper removes meanwhile).
        names = [name.lstrip("/") for c in client.api.containers(all=True) for name in c["Names"]]
        return [n for n in names if n.startswith(f"{app}-") and n != f"{app}-next"]
    finally:
        client.close()


def wait_until(check, timeout):
    """True once `check()` is true, False if it is not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_start_first_state_by_hand_keeps_serving_and_cleans_up(lab):
    app, minion = "swap", "dev-1"
    lab.minions[minion].salt_call_cli(timeout=120).run("saltutil.sync_all")
    # PID 1 ignores SIGTERM: stopping it takes the whole stop_timeout (5 s).
    first = lab.push(app, "swap", "1.0.0", behaviour="ignores-sigterm")
    ok, states = apply_by_hand(lab, minion, app, first)
    assert ok, states
    address = next(m["address"] for m in lab.fleet if m["id"] == minion)
    with Traffic({minion: f"http://{address}:{APPS[app][0]}/version"}, timeout=CLIENT_TIMEOUT) as load:
        second = lab.push(app, "swap", "2.0.0")
        ok, states = apply_by_hand(lab, minion, app, second)
        assert ok, states
        release = next(s for key, s in states.items() if "saltcd_release" in key)
        assert release["changes"]["new"]["digest"] == second, release
        assert release["changes"]["old"]["digest"] == first, release
        # The state returned while the old container was still stopping, out of the app's name.
        assert any("-retired-" in n for n in retired(lab, minion, app)), release
        assert wait_until(lambda: not retired(lab, minion, app), 30), retired(lab, minion, app)
        ok, states = apply_by_hand(lab, minion, app, second)  # the same digest again: nothing to do
        assert ok and not next(s for k, s in states.items() if "saltcd_release" in k)["changes"], states
        crash = lab.push(app, "swap", "2.0.1", behaviour="crash")
        ok, states = apply_by_hand(lab, minion, app, crash)
        assert not ok and "failed its health gate" in json.dumps(states), states
    counts = load.stop()
    assert counts[minion]["failed"] == 0 and counts[minion]["served"] > 0, counts
    assert lab.running_digests(app)[minion] == second
    assert lab.container(minion, f"{app}-next") is None

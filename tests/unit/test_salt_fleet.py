"""Reading LocalClient's state.apply returns."""

import time

from saltcd.master.salt_fleet import SaltFleet, state_outcome


def test_no_return_placeholder_means_no_answer():
    assert state_outcome({"ret": "Minion did not return. [No response]", "out": "no_return",
                          "retcode": 1}) is None
    assert state_outcome(None) is None


def test_render_error_is_a_failure_with_the_message():
    out = state_outcome({"ret": ["Rendering SLS 'base:saltcd.deploy' failed: boom"], "retcode": 1})
    assert out["ok"] is False and "boom" in out["comment"]


def test_changed_container_and_health_comment():
    ret = {"retcode": 0, "ret": {
        "docker_image_|-saltcd-deploy-docker_image-present_|-x_|-present": {"result": True, "changes": {}},
        "docker_container_|-saltcd-deploy-docker_container-running_|-web_|-running": {
            "result": True, "changes": {"image": {"old": "a", "new": "b"}}},
        "saltcd_health_|-saltcd-deploy-saltcd_health-passing_|-u_|-passing": {
            "result": True, "changes": {}, "comment": "Healthy after 0.5s"}}}
    assert state_outcome(ret) == {"ok": True, "changed": True, "comment": "Healthy after 0.5s"}


def test_failed_state_fails_the_minion():
    ret = {"retcode": 2, "ret": {
        "saltcd_health_|-saltcd-deploy-saltcd_health-passing_|-u_|-passing": {
            "result": False, "changes": {}, "comment": "Unhealthy: 404"}}}
    assert state_outcome(ret) == {"ok": False, "changed": False, "comment": "Unhealthy: 404"}


class FakeLocal:
    """LocalClient's publish and gather: dev-1 returns at once, dev-2 never does
    (a stalled pull), dev-3 is gone; `term_job` answers like saltutil's."""

    def __init__(self):
        self.event = type("Event", (), {"cpub": True})()
        self.calls = []

    def run_job(self, minions, fun, arg, **kwargs):
        self.calls.append((fun, list(minions), arg))
        return {"jid": "20261126000000000001", "minions": list(minions)}

    def get_iter_returns(self, jid, minions, **kwargs):
        yield {"dev-1": {"ret": {}, "retcode": 0}}
        while True:  # LocalClient goes on asking find_job while dev-2 runs the job
            yield None

    def cmd(self, minions, fun, arg, **kwargs):
        self.calls.append((fun, list(minions), arg))
        return {"dev-2": {"ret": f"Signal 15 sent to job {arg[0]} at pid 4242", "retcode": 0}}


def test_a_job_past_its_limit_is_stopped_on_the_minions_still_running_it():
    fleet = SaltFleet({"pidfile": "/nonexistent"})
    fleet._local = FakeLocal()
    started = time.monotonic()
    jid, returns, overdue = fleet._run_until(["dev-1", "dev-2", "dev-3"], "state.apply", ["saltcd.deploy"],
                                             {}, timeout=60, limit=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert list(returns) == ["dev-1"] and overdue == ["dev-2", "dev-3"]
    stopped = fleet._stop_job(jid, overdue)
    assert fleet._local.calls[-1] == ("saltutil.term_job", ["dev-2", "dev-3"], [jid])
    assert stopped == {"dev-2": "state run stopped on the minion"}  # dev-3 did not answer: no answer


class RunningJobs:
    """LocalClient answering `saltutil.running` with saltcd state runs of several
    apps and lock tokens, and recording the `term_job` calls."""

    def __init__(self):
        self.stopped = []

    @staticmethod
    def _job(jid, app, env, fence):
        selector = {"app": app, "env": env, "digest": "sha256:" + "a" * 64, "fence": fence}
        return {"jid": jid, "fun": "state.apply",
                "arg": ["saltcd.deploy", {"__kwarg__": True, "pillar": {"saltcd": selector}, "queue": True}]}

    def cmd(self, minions, fun, arg, **kwargs):
        if fun == "saltutil.term_job":
            self.stopped.append((minions[0], arg[0]))
            return {}
        return {"dev-1": [self._job("1", "web", "dev", 40), self._job("2", "web", "qa", 10),
                          {"jid": "3", "fun": "test.sleep", "arg": [30]}],
                "dev-2": [self._job("4", "web", "dev", 90), self._job("5", "api", "dev", 1)],
                "dev-3": "Minion did not return"}


def test_a_takeover_stops_only_the_older_tokens_runs_of_its_app_env():
    fleet = SaltFleet({"pidfile": "/nonexistent"})
    fleet._local = RunningJobs()
    fleet.check_master = lambda: None
    assert fleet.stop_stale(["dev-1", "dev-2", "dev-3"], "web", "dev", 84) == {"dev-1": ["1"]}
    assert fleet._local.stopped == [("dev-1", "1")]

"""Reading LocalClient's state.apply returns."""

from saltcd.salt_fleet import state_outcome


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

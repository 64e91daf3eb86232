"""The runner's exit codes (the `retcode` salt-run exits with), through Salt's RunnerClient:
a plan that can't reach the registry fails; a request queued behind a running rollout
says so with its own code."""


import salt.runner

from saltcd.queue import locking
from tests.ports import free_port as closed_port

QUEUED = 2


def run(opts, fun, **kwarg):
    client = salt.runner.RunnerClient(opts)
    return client.cmd(fun, kwarg=kwarg, print_event=False, full_return=True)


def unreachable_registry(config):
    host = f"127.0.0.1:{closed_port()}"
    config["registries"] = {host: {"scheme": "http", "timeout": 2}}
    for app in config["apps"].values():
        app["repository"] = f"{host}/saltcd/{app['repository'].rsplit('/', 1)[1]}"
    return config


def test_a_plan_against_an_unreachable_registry_exits_non_zero_with_the_reason(master_opts, example_config):
    ret = run(master_opts(unreachable_registry(example_config)), "deploy.rollout", app="web", env="dev", test=True)
    assert ret["success"] is False and ret["return"]["retcode"] == 1
    assert ret["return"]["status"] == "failed"
    assert ret["return"]["reason"].startswith("digest not resolved, nothing changed:")


def test_a_request_queued_behind_a_running_rollout_has_its_own_exit_code(master_opts, example_config):
    opts = master_opts(example_config)
    # Another process runs web/dev's queue: it holds the lock.
    with locking.try_lock(locking.lock_path(opts["cachedir"], "web", "dev")) as held:
        assert held
        ret = run(opts, "deploy.rollout", app="web", env="dev")
    assert ret["return"]["status"] == "queued" and ret["return"]["retcode"] == QUEUED
    assert "runs next" in ret["return"]["reason"] and ret["return"]["request"]

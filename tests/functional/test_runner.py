"""The deploy runner through Salt's RunnerClient, with the master's config and cache."""

import salt.cache
import salt.runner

from saltcd.store import Store


def run(opts, fun, **kwarg):
    client = salt.runner.RunnerClient(opts)
    return client.cmd(fun, kwarg=kwarg, print_event=False, full_return=True)


def test_invalid_config_is_a_clear_error(master_opts, example_config):
    example_config["apps"]["web"]["health"]["port"] = "eighty"
    ret = run(master_opts(example_config), "deploy.history", app="web", env="dev")
    assert ret["success"] is False
    assert ret["return"]["error"] == ("invalid saltcd configuration: saltcd:apps:web:health:port: "
                                      "must be a port number 1-65535, got 'eighty'")


def test_unknown_app_is_a_clear_error(master_opts, example_config):
    ret = run(master_opts(example_config), "deploy.history", app="nope", env="dev")
    assert ret["success"] is False and ret["return"]["error"] == "unknown app 'nope'"


def test_history_reads_the_master_cache_newest_first(master_opts, example_config):
    opts = master_opts(example_config)
    records = Store(salt.cache.factory(opts))
    for rollout_id, status in (("20260101T000000.000000Z-aaaaaa", "succeeded"),
                               ("20260102T000000.000000Z-bbbbbb", "rolled_back")):
        records.save_rollout({"id": rollout_id, "app": "web", "env": "qa", "status": status})
    ret = run(opts, "deploy.history", app="web", env="qa", limit=1)
    assert ret["success"] is True
    assert [r["status"] for r in ret["return"]] == ["rolled_back"]


def test_nothing_to_promote_is_a_clear_error(master_opts, example_config):
    ret = run(master_opts(example_config), "deploy.promote", app="web", env_from="qa", env_to="prod")
    assert ret["success"] is False
    assert ret["return"]["error"] == "web/qa has no healthy rollout to promote"

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


def test_rejections_show_the_newest_in_full_and_the_counts(master_opts, example_config):
    import time

    from saltcd import store

    opts = master_opts(example_config)
    records = Store(salt.cache.factory(opts))
    now = time.time()
    records.add_rejection({"id": store.new_id(now), "time": now, "tag": "salt/engines/hook/saltcd/registry",
                           "source": {"kind": "registry", "origin": "registry"}, "reason": "bad token"})
    records.count_rejections({("registry", "unauthenticated: missing Authorization header", int(now)): 41})
    ret = run(opts, "deploy.rejections", limit=5)
    assert ret["success"] is True
    assert [r["reason"] for r in ret["return"]["recent"]] == ["bad token"]
    assert ret["return"]["counted"] == [{"source": "registry", "count": 41,
                                         "reason": "unauthenticated: missing Authorization header"}]
    assert ret["return"]["per_minute"][0]["count"] == 41


def test_a_rollout_outside_the_window_is_refused_with_the_opening_time(master_opts, example_config):
    dev = example_config["apps"]["web"]["environments"]["dev"]
    # A one-minute window a few hours from now: closed now, whatever the day.
    import time

    hour = (time.gmtime().tm_hour + 3) % 24
    dev["windows"] = [f"* {hour:02d}:00-{hour:02d}:01 UTC"]
    ret = run(master_opts(example_config), "deploy.rollout", app="web", env="dev")
    assert ret["success"] is False
    assert "outside its deploy windows" in ret["return"]["error"]
    assert "opens at" in ret["return"]["error"] and f"{hour:02d}:00:00 UTC" in ret["return"]["error"]
    assert "force=True" in ret["return"]["error"]

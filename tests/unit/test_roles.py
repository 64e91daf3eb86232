"""An app of several containers (roles): configuration, plan, batches, the live view."""

import pytest

from saltcd import config
from saltcd.rollout import Rollout

from .fakes import FakeClock, FakeFleet, MemoryCache, Recorder

OLD, NEW = ("sha256:" + c * 64 for c in "0a")


@pytest.fixture
def shop(raw_config):
    raw_config["apps"]["shop"] = {
        "repository": "127.0.0.1:5000/saltcd/shop",
        "environment": {"QUEUE": "default"},
        "options": {"binds": ["shop-data:/data"], "mem_limit": "256m"},
        "health": {"port": 8081},
        "roles": {
            "web": {"ports": ["8081:8080"], "strategy": "start-first"},
            "worker": {"options": {"command": "worker"}, "environment": {"QUEUE": "mail"}},
            "scheduler": {"container": "cron", "target": "dev-1", "options": {"command": "cron"}},
        },
        "environments": {"dev": {"target": "dev-*", "strategy": "start-first"}},
    }
    return raw_config


def _run(deployment, fleet, digest=NEW, test=False):
    record = {"id": "r1", "app": deployment.app, "env": deployment.env}
    return Rollout(deployment, digest, fleet, Recorder(), record, clock=FakeClock()).run(test=test)


def test_roles_take_the_apps_keys_and_their_own(shop):
    dep = config.load(shop).deployment("shop", "dev")
    web, worker, scheduler = dep.roles
    assert [r.name for r in dep.roles] == ["web", "worker", "scheduler"]  # the order batches replace them
    assert (web.container, worker.container, scheduler.container) == ("shop-web", "shop-worker", "cron")
    assert web.strategy == "start-first" and worker.strategy == "stop-first"  # no port: nothing to switch
    assert worker.environment == {"QUEUE": "mail"} and web.environment == {"QUEUE": "default"}
    assert worker.options == {"binds": ["shop-data:/data"], "mem_limit": "256m", "command": "worker"}
    assert web.health.check == "http" and web.health.port == 8081
    assert worker.health.check == "running"  # no port to probe: it must stay up
    assert scheduler.target == "dev-1" and web.target is None


@pytest.mark.parametrize("change, message", [
    ({"ports": ["8081:8080"]}, "shop:ports: an app with roles publishes no ports itself"),
    ({"roles": {"worker": {"strategy": "start-first"}}}, "roles:worker:strategy: start-first needs exactly one port"),
    ({"roles": {"worker": {"comand": "x"}}}, r"roles:worker: unknown keys \['comand'\]"),
    ({"roles": {"worker": {"options": {"comand": "x"}}}}, "roles:worker:options:comand: is not an option"),
    ({"roles": {"a": {"container": "x"}, "b": {"container": "x"}}}, "two roles name the same container"),
    ({"roles": {"Web": {}}}, "roles:Web: role names are lowercase"),
    ({"roles": {"cron": {"target": "role:cron", "tgt_type": "grain"}}},
     "roles:cron:target: tgt_type grain matches on grains"),
])
def test_a_wrong_role_is_refused_naming_its_key(shop, change, message):
    shop["apps"]["shop"].update(change)
    with pytest.raises(config.ConfigError, match=message):
        config.load(shop)


def test_an_app_without_roles_keeps_its_fingerprint(settings):
    """Containers deployed before roles existed stay current (no restart on upgrade)."""
    dep = settings.deployment("web", "dev")
    assert dep.spec() == {"ports": ["8080:8080"], "environment": {"GREETING": "hello"},
                          "restart_policy": "unless-stopped", "stop_timeout": 10, "options": {}}
    assert [r.name for r in dep.roles] == [None] and not dep.has_roles


def test_every_role_rolls_in_each_batch_and_a_targeted_role_only_where_it_is_placed(shop):
    dep = config.load(shop).deployment("shop", "dev")
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD, "qa-1": OLD})
    record = _run(dep, fleet)
    assert record["status"] == "succeeded" and record["placement"] == {"scheduler": ["dev-1"]}
    assert fleet.inspected == ["shop", "shop-web", "shop-worker", "cron"]  # the app's own too: to remove
    assert fleet.applied == [(["dev-1"], NEW), (["dev-2"], NEW)]
    roles = [[(r["role"], r.get("minions")) for r in pillar["roles"]] for pillar in fleet.pillars]
    assert roles == [[("web", None), ("worker", None), ("scheduler", ["dev-1"])]] * 2
    assert fleet.pillars[0]["previous_images"] == {"dev-1": f"127.0.0.1:5000/saltcd/shop@{OLD}"}
    fleet.applied.clear()
    assert _run(dep, fleet)["status"] == "unchanged" and fleet.applied == []  # a re-push restarts nothing


def test_a_role_whose_container_is_down_is_out_of_date(shop):
    dep = config.load(shop).deployment("shop", "dev")
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD})
    _run(dep, fleet)
    fleet.stopped.add(("dev-2", "shop-worker"))
    plan = _run(dep, fleet, test=True)["plan"]
    why = {m: what.get("why") for step in plan for m, what in step["minions"].items()}
    assert why == {"dev-1": None, "dev-2": "not running: worker"}
    fleet.applied.clear()
    assert _run(dep, fleet)["status"] == "succeeded" and (["dev-2"], NEW) in fleet.applied
    assert not fleet.stopped


def test_a_role_spec_change_says_which_role_changed(shop):
    before = config.load(shop).deployment("shop", "dev")
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD})
    _run(before, fleet)
    shop["apps"]["shop"]["roles"]["worker"]["options"]["command"] = "worker --fast"
    after = config.load(shop).deployment("shop", "dev")
    record = {"id": "r2", "app": "shop", "env": "dev"}
    specs = {before.spec_id: before.spec()}.get
    plan = Rollout(after, NEW, fleet, Recorder(), record, clock=FakeClock(), specs=specs).run(test=True)["plan"]
    assert {what["why"] for step in plan for what in step["minions"].values()} == {"spec changed: worker.command"}


def test_the_live_view_shows_each_role(shop, tmp_path):
    from saltcd.queue.controller import Controller
    from saltcd.store import Store

    settings = config.load(shop)
    fleet = FakeFleet({"dev-1": NEW, "dev-2": NEW})
    view = Controller(settings, Store(MemoryCache()), fleet, Recorder(), str(tmp_path)).status("shop", "dev")
    minions = view["shop"]["dev"]["minions"]
    assert set(minions["dev-1"]["roles"]) == {"web", "worker", "scheduler"}
    assert set(minions["dev-2"]["roles"]) == {"web", "worker"}  # the scheduler is dev-1's
    assert minions["dev-2"]["digest"] == NEW and minions["dev-2"]["healthy"]


def test_the_plan_names_the_roles_and_where_a_targeted_one_runs(shop):
    from saltcd.present import views

    dep = config.load(shop).deployment("shop", "dev")
    text = views.rollout_text(_run(dep, FakeFleet({"dev-1": OLD, "dev-2": OLD}), test=True))
    assert "roles, replaced in this order in each batch: web, worker, scheduler (on dev-1)" in text


def test_a_role_moved_elsewhere_is_removed_where_it_ran_and_placed_where_it_goes(shop):
    dep = config.load(shop).deployment("shop", "dev")
    fleet = FakeFleet({"dev-1": OLD, "dev-2": OLD})
    _run(dep, fleet)
    assert fleet.deployed == {"dev-1": {"shop-web", "shop-worker", "cron"}, "dev-2": {"shop-web", "shop-worker"}}
    shop["apps"]["shop"]["roles"]["scheduler"]["target"] = "dev-2"
    moved = config.load(shop).deployment("shop", "dev")
    record = {"id": "r2", "app": "shop", "env": "dev"}
    plan = Rollout(moved, NEW, fleet, Recorder(), record, clock=FakeClock()).run(test=True)["plan"]
    assert {m: what.get("why") for step in plan for m, what in step["minions"].items()} == {
        "dev-1": "to remove: cron", "dev-2": "not running: scheduler"}
    record = Rollout(moved, NEW, fleet, Recorder(), {**record, "id": "r3"}, clock=FakeClock()).run()
    assert record["status"] == "succeeded" and record["placement"] == {"scheduler": ["dev-2"]}
    assert fleet.deployed == {"dev-1": {"shop-web", "shop-worker"}, "dev-2": {"shop-web", "shop-worker", "cron"}}


def test_the_pillar_says_what_each_minion_no_longer_runs(shop):
    from saltcd.rollout import deploy_pillar

    dep = config.load(shop).deployment("shop", "dev")
    data, _ = deploy_pillar.split(dep.pillar(NEW, placement={"scheduler": ["dev-2"]}))
    served = deploy_pillar.build({"shop": data}, {}, resolve=None, minion="dev-1")["saltcd_deploy"]["shop"]
    assert [r["role"] for r in served["roles"]] == ["web", "worker"] and served["gone"] == ["shop", "cron"]


def test_a_rollback_to_the_spec_before_roles_runs_the_app_s_own_container_again(shop, raw_config):
    shop["apps"]["shop"].pop("roles")
    shop["apps"]["shop"]["ports"] = ["8081:8080"]
    before = config.load(shop).deployment("shop", "dev")
    shop["apps"]["shop"].pop("ports")
    shop["apps"]["shop"]["roles"] = {"web": {"ports": ["8081:8080"]}, "worker": {"options": {"command": "w"}}}
    after = config.load(shop).deployment("shop", "dev")
    pillar = after.pillar(OLD, before.spec())["saltcd"]
    (role,) = pillar["roles"]
    assert role["role"] is None and role["container"] == "shop" and role["ports"] == ["8081:8080"]
    assert role["health"]["check"] == "http" and role["health"]["port"] == 8081
    assert set(pillar["app_containers"]) == {"shop", "shop-web", "shop-worker"}  # the roles' go on rollback


def test_a_rollback_places_the_roles_as_the_release_it_goes_back_to_had_them(shop):
    before = config.load(shop).deployment("shop", "dev")
    fleet = FakeFleet({"dev-1": None, "dev-2": None})
    _run(before, fleet, digest=OLD)
    del shop["apps"]["shop"]["roles"]["scheduler"]  # the next release has no scheduler
    shop["apps"]["shop"]["roles"]["mailer"] = {"options": {"command": "mail"}}  # and a new role
    after = config.load(shop).deployment("shop", "dev")
    fleet.bad.add(after.spec_id)
    record = Rollout(after, NEW, fleet, Recorder(), {"id": "r2", "app": "shop", "env": "dev"}, clock=FakeClock(),
                     specs={before.spec_id: before.spec()}.get).run()
    assert record["status"] == "rolled_back", record.get("reason")
    back = fleet.pillars[-1]
    assert [(r["role"], r.get("minions")) for r in back["roles"]] == [
        ("web", None), ("worker", None), ("scheduler", ["dev-1"])]
    assert "shop-mailer" in back["app_containers"]  # the failed release's new role goes where it ran
    assert fleet.deployed["dev-1"] == {"shop-web", "shop-worker", "cron"}


def test_a_converge_gives_a_minion_only_the_roles_that_pick_it(shop):
    """dev-2 was left behind; the scheduler's own target (dev-1) does not pick it."""
    dep = config.load(shop).deployment("shop", "dev")
    fleet = FakeFleet({"dev-1": NEW, "dev-2": OLD})
    record = {"id": "r2", "app": "shop", "env": "dev"}
    result = Rollout(dep, NEW, fleet, Recorder(), record, clock=FakeClock()).converge(["dev-2"])
    assert result["status"] == "converged" and fleet.running["dev-2"] == NEW
    assert fleet.deployed["dev-2"] == {"shop-web", "shop-worker"}
    assert result["placement"] == {"scheduler": []}

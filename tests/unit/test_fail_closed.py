"""Someone who can push to the registry must not choose what runs where a
signature or an approval is required (issue 23): approvals release the push
that was reviewed, a signed digest is a pin, drift is the operator's choice,
waiting pushes are bounded, and targets a minion can join are refused."""

import json
import os

import pytest

from saltcd import config, errors
from saltcd.ingress import intake
from saltcd.ingress.ingress_auth import hashed_headers
from saltcd.queue import approvals, registry_client
from saltcd.queue.controller import Controller
from saltcd.rollout import deploy_pillar
from saltcd.store import Store

from .conftest import TOKEN
from .fakes import FakeClock, FakeFleet, MemoryCache, Recorder
from .test_controller import OLD, PUSH_SECRET, REPO, from_ci, hook_event, signed

D1, D2 = "sha256:" + "d1" * 32, "sha256:" + "d2" * 32
HOOK = "salt/engines/hook/saltcd/registry"


class Registry:
    """A registry whose tags move (`tag_digest`) and which holds `manifests`."""

    def __init__(self, tag_digest, manifests=()):
        self.tag_digest = tag_digest
        self.manifests = {tag_digest, *manifests}

    def __call__(self, repository, reference, settings):
        if reference.startswith("sha256:"):
            if reference in self.manifests:
                return reference
            raise registry_client.TagNotFound(f"{repository}@{reference} does not exist")
        if isinstance(self.tag_digest, Exception):
            raise self.tag_digest
        return self.tag_digest

    def push(self, digest):
        self.tag_digest = digest
        self.manifests.add(digest)


def _controller(raw_config, tmp_path, fleet, registry):
    raw_config["push_secret"] = PUSH_SECRET
    return Controller(config.load(raw_config), Store(MemoryCache()), fleet, Recorder(), str(tmp_path),
                      resolve=registry, clock=FakeClock())


@pytest.fixture
def prod(raw_config, tmp_path):
    raw_config["apps"]["web"]["environments"]["prod"]["mode"] = "manual"
    return _controller(raw_config, tmp_path, FakeFleet({"prod-1": OLD}), Registry(D1))


@pytest.fixture
def dev(raw_config, tmp_path):
    return _controller(raw_config, tmp_path, FakeFleet({"dev-1": OLD, "dev-2": OLD}), Registry(D1))


# 1. An approval releases the image that was reviewed.
def test_approval_refuses_to_choose_between_two_waiting_pushes(prod):
    prod.accept(HOOK, hook_event(tag="prod", digest=D1))           # D1 waits; the operator reviews it
    prod.resolve.push(D2)
    prod.accept(HOOK, hook_event(tag="prod", digest=D2))           # someone pushes :prod again
    with pytest.raises(errors.Refused, match="2 pushes of web are waiting") as refused:
        prod.approve("web", "prod", user="alice")
    assert D1 in str(refused.value) and D2 in str(refused.value)   # the candidates are listed
    assert prod.records.pending("web", "prod") == [] and len(prod.records.awaiting("web", "prod")) == 2
    approved = prod.approve("web", "prod", user="alice", digest=D1)
    assert approved["digest"] == D1 and approved["approved_by"] == "alice"
    record = prod.run_queue("web", "prod")["rollouts"][-1]
    assert (record["status"], record["to_digest"], record["pinned"], record["approved_by"]) == (
        "succeeded", D1, D1, "alice")
    assert prod.fleet.running["prod-1"] == D1
    superseded = [r for r in prod.records.rollouts("web", "prod") if r["status"] == "superseded"]
    assert len(superseded) == 1 and "alice approved" in superseded[0]["reason"]


def test_an_approval_of_another_digest_is_the_operators_not_the_ci_minions(prod):
    prod.accept("saltcd/push", from_ci(signed(tag="prod", digest=D1)))
    prod.resolve.push(D2)
    approved = prod.approve("web", "prod", user="alice", digest=D2)        # the tag's digest now
    assert approved["signed_digest"] is False and approved["trigger"] == {"kind": "operator", "origin": "alice"}
    record = prod.run_queue("web", "prod")["rollouts"][-1]
    assert (record["to_digest"], record["signed_digest"], record["trigger"]["kind"]) == (D2, False, "operator")


def test_request_and_a_different_digest_are_refused_together(prod):
    prod.accept(HOOK, hook_event(tag="prod", digest=D1))
    first = prod.records.awaiting("web", "prod")[0]["id"]
    prod.resolve.push(D2)
    prod.accept(HOOK, hook_event(tag="prod", digest=D2))
    with pytest.raises(errors.Refused, match=f"push {first} carries {D1}"):
        prod.approve("web", "prod", user="alice", request=first, digest=D2)
    assert len(prod.records.awaiting("web", "prod")) == 2 and prod.records.pending("web", "prod") == []


def test_approval_by_request_id(prod):
    prod.accept(HOOK, hook_event(tag="prod", digest=D1))
    first = prod.records.awaiting("web", "prod")[0]["id"]
    prod.resolve.push(D2)
    prod.accept(HOOK, hook_event(tag="prod", digest=D2))
    with pytest.raises(errors.Refused, match="no push 'nope' is waiting"):
        prod.approve("web", "prod", user="alice", request="nope")
    assert prod.approve("web", "prod", user="alice", request=first)["digest"] == D1
    assert prod.run_queue("web", "prod")["rollouts"][-1]["to_digest"] == D1


# 4. Waiting pushes are de-duplicated per digest and capped.
def test_a_digest_waits_once_and_the_waiting_list_is_capped(prod, monkeypatch):
    verdicts = [prod.accept(HOOK, hook_event(tag="prod", digest=D1)) for _ in range(3)]
    assert [w["digest"] for w in prod.records.awaiting("web", "prod")] == [D1]
    assert [len(v["accepted"]) for v in verdicts] == [1, 0, 0]
    assert f"web/prod: {D1[:19]} is already waiting for approval" in verdicts[1]["ignored"]
    monkeypatch.setattr(approvals, "MAX_AWAITING", 3)
    digests = ["sha256:" + f"{n:064x}" for n in range(2, 7)]
    for digest in digests:
        prod.resolve.push(digest)
        prod.accept(HOOK, hook_event(tag="prod", digest=digest))
    assert [w["digest"] for w in prod.records.awaiting("web", "prod")] == digests[-3:]
    gave_way = [r for r in prod.records.rollouts("web", "prod") if r["status"] == "superseded"]
    assert len(gave_way) == 3 and all("oldest gave way" in r["reason"] for r in gave_way)


# 2. A signed digest is a pin, not a hint.
def test_a_signed_digest_deploys_even_after_the_tag_moved(dev):
    dev.accept("saltcd/push", from_ci(signed(tag="dev", digest=D1)))
    dev.resolve.push(D2)                                           # the tag moves before the rollout runs
    record = dev.run_queue("web", "dev")["rollouts"][-1]
    assert (record["status"], record["to_digest"], record["signed_digest"]) == ("succeeded", D1, True)
    assert record["trigger"] == {"kind": "ci", "origin": "ci-1"}
    assert set(dev.fleet.running.values()) == {D1}


def test_a_signed_digest_the_repository_does_not_have_is_refused(dev):
    dev.resolve.manifests = {D2}                                   # D1 was never pushed to web
    dev.resolve.tag_digest = D2
    dev.accept("saltcd/push", from_ci(signed(tag="dev", digest=D1)))
    record = dev.run_queue("web", "dev")["rollouts"][-1]
    assert record["status"] == "failed" and record["reason"].startswith("signed digest refused")
    assert REPO in record["reason"] and dev.fleet.applied == []
    assert set(dev.fleet.running.values()) == {OLD}


def test_a_signed_digest_waits_through_a_cooldown_and_still_deploys(raw_config, tmp_path):
    raw_config["apps"]["web"]["environments"]["dev"]["cooldown"] = 60
    ctl = _controller(raw_config, tmp_path, FakeFleet({"dev-1": OLD}), Registry(D1))
    ctl.accept("saltcd/push", from_ci(signed(tag="dev", digest=D1)))
    assert ctl.run_queue("web", "dev")["status"] == "waiting"
    ctl.resolve.push(D2)
    request = ctl.records.pending("web", "dev")[0]
    request["received"] -= 120                                      # the cooldown has passed
    ctl.records.add_request(request)
    assert ctl.run_queue("web", "dev")["rollouts"][-1]["to_digest"] == D1


def test_a_signed_digest_in_a_manual_environment_is_what_approval_releases(prod):
    prod.accept("saltcd/push", from_ci(signed(tag="prod", digest=D1)))
    prod.resolve.push(D2)                                          # moved between review and approval
    assert prod.approve("web", "prod", user="alice")["digest"] == D1
    assert prod.run_queue("web", "prod")["rollouts"][-1]["to_digest"] == D1


# 3. Reconcile cannot bypass the door.
def _drift(ctl):
    """Let reconcile see the tag move to D2 on two passes (its rule for a lost push)."""
    assert ctl.run_queue("web", "dev")["rollouts"][-1]["to_digest"] == D1
    ctl.resolve.push(D2)
    ctl.reconcile()
    return [r for r in ctl.reconcile() if (r["app"], r["env"]) == ("web", "dev")]


def test_drift_deploy_is_todays_default_with_a_webhook_source(dev):
    dev.accept("saltcd/push", from_ci(signed(tag="dev")))
    assert dev.settings.deployment("web", "dev").drift == "deploy"
    assert [r["trigger"]["kind"] for r in _drift(dev)] == ["reconcile"]
    assert dev.run_queue("web", "dev")["rollouts"][-1]["to_digest"] == D2


def test_drift_of_an_app_with_its_own_key_and_no_webhook_source_is_recorded(raw_config, tmp_path):
    raw_config["sources"] = {}
    raw_config["apps"]["web"]["push_secret"] = PUSH_SECRET
    ctl = _controller(raw_config, tmp_path, FakeFleet({"dev-1": OLD}), Registry(D1))
    assert ctl.settings.deployment("web", "dev").drift == "record"
    ctl.accept("saltcd/push", from_ci(signed(tag="dev")))
    made = _drift(ctl)
    assert [(r["digest"], r["awaiting_approval"]) for r in made] == [(D2, True)]
    assert ctl.records.pending("web", "dev") == [] and ctl.fleet.running["dev-1"] == D1
    assert "saltcd/deploy/web/dev/awaiting_approval" in ctl.reporter.tags()
    assert ctl.approve("web", "dev", user="alice")["digest"] == D2  # a person decides


def test_drift_is_recorded_for_an_app_the_sources_may_not_announce(raw_config):
    raw_config["sources"]["registry"]["repositories"] = ["127.0.0.1:5000/saltcd/api"]
    raw_config["sources"]["hub"]["repositories"] = ["127.0.0.1:5000/saltcd/api"]
    settings = config.load(raw_config)
    assert settings.deployment("web", "dev").drift == "record"       # no source announces web
    assert settings.deployment("api", "dev").drift == "deploy"


def test_drift_ignore_leaves_a_moved_tag_alone(raw_config, tmp_path):
    raw_config["apps"]["web"]["environments"]["dev"]["drift"] = "ignore"
    ctl = _controller(raw_config, tmp_path, FakeFleet({"dev-1": OLD}), Registry(D1))
    ctl.accept("saltcd/push", from_ci(signed(tag="dev")))
    assert _drift(ctl) == [] and ctl.reconcile() == []
    assert ctl.records.pending("web", "dev") == [] and ctl.records.awaiting("web", "dev") == []


def test_drift_must_be_one_of_its_choices(raw_config):
    raw_config["apps"]["web"]["drift"] = "yolo"
    with pytest.raises(config.ConfigError, match=r"saltcd:apps:web:drift: must be one of"):
        config.load(raw_config)


# 8. Targets a minion can choose for itself.
@pytest.mark.parametrize("target, tgt_type", [
    ("role:web", "grain"), ("role:w.*", "grain_pcre"), ("G@role:web", "compound"),
    ("web* and G@env:prod", "compound"), ("L@a,b or (P@os:Deb.*)", "compound"),
    ("S@10.0.0.0/8", "compound"), ("web* and not G@x:y", "compound"),
    # Salt's delimiter forms are grain matches all the same.
    ("G|@role|web", "compound"), ("web* and G:@role:web", "compound"), ("P;@os;Deb.*", "compound"),
])
def test_targets_a_minion_can_join_are_refused(raw_config, target, tgt_type):
    raw_config["apps"]["web"]["environments"]["prod"].update({"target": target, "tgt_type": tgt_type})
    with pytest.raises(config.ConfigError, match=r"saltcd:apps:web:environments:prod:target: .*"
                                                 "allow_minion_chosen_target"):
        config.load(raw_config)
    raw_config["apps"]["web"]["environments"]["prod"]["allow_minion_chosen_target"] = True
    assert config.load(raw_config).deployment("web", "prod").target == target


@pytest.mark.parametrize("target, tgt_type", [
    ("prod-*", "glob"), ("I@role:web", "compound"), ("E@web-\\d+ and I@env:prod", "compound"),
    ("role:web", "pillar"), ("prod", "nodegroup"), ("L@a,b", "compound"),
])
def test_targets_the_master_decides_are_allowed(raw_config, target, tgt_type):
    raw_config["apps"]["web"]["environments"]["prod"].update({"target": target, "tgt_type": tgt_type})
    assert config.load(raw_config).deployment("web", "prod").tgt_type == tgt_type


def test_the_registry_down_at_push_time_still_needs_a_digest_with_two_waiting(prod):
    prod.resolve.tag_digest = registry_client.RegistryError("down")
    prod.accept(HOOK, hook_event(tag="prod", digest=D1))
    prod.accept(HOOK, hook_event(tag="prod", digest=D2))
    with pytest.raises(errors.SaltcdError, match="waiting for approval"):
        prod.approve("web", "prod", user="alice")
    assert [w["digest"] for w in prod.records.awaiting("web", "prod")] == [None, None]


# 7. Deploy data cannot outlive its rollout.
def test_an_interrupted_rollouts_deploy_data_is_withdrawn(dev):
    dead = "20260101T000000.000000Z-aaaaaa"
    entries = deploy_pillar.DeployPillar(dev.records.cache)
    dev.records.save_rollout({"id": dead, "app": "web", "env": "dev", "status": "running",
                              "minions": ["dev-1", "dev-2"]})
    entries.publish(["dev-1"], {"app": "web", "env": "dev", "digest": D1, "rollout": dead,
                                "holder": {"pid": 1, "started": "0"}})
    entries.publish(["dev-2"], {"app": "web", "env": "dev", "digest": D1, "rollout": "another"})
    assert entries.entries("dev-1") == {}                     # its process is not running it
    dev.run_queue("web", "dev")                                   # the next drain finds it running
    assert dev.history("web", "dev")[0]["status"] == "interrupted"
    assert dev.records.cache.list(f"{deploy_pillar.BANK}/dev-1") == []
    assert dev.records.cache.list(f"{deploy_pillar.BANK}/dev-2") == ["web"]  # not that rollout's


def test_a_rollout_ties_its_deploy_data_to_itself_and_its_process(dev):
    seen = []
    apply = dev.fleet.apply

    def spy(minions, pillar, *args, **kwargs):
        seen.append(dict(pillar["saltcd"]))
        return apply(minions, pillar, *args, **kwargs)

    dev.fleet.apply = spy
    dev.accept("saltcd/push", from_ci(signed(tag="dev")))
    record = dev.run_queue("web", "dev")["rollouts"][-1]
    assert {(s["rollout"], s["holder"]["pid"]) for s in seen} == {(record["id"], os.getpid())}
    assert record["holder"]["started"] == seen[0]["holder"]["started"] is not None


def test_one_event_makes_at_most_max_pushes_requests(dev, monkeypatch):
    monkeypatch.setattr(intake, "MAX_PUSHES", 3)
    events = [{"action": "push", "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                                            "repository": "saltcd/web", "tag": "dev",
                                            "digest": "sha256:" + f"{n:064x}"},
               "request": {"host": "127.0.0.1:5000"}} for n in range(10)]
    body = json.dumps({"events": events}).encode()
    verdict = dev.accept(HOOK, {"body": body, **hashed_headers({"Authorization": f"Bearer {TOKEN}"})})
    assert len(verdict["accepted"]) == 3 and "7 push(es) past the first 3 of one event" in verdict["ignored"]
    assert len(dev.records.pending("web", "dev")) == 3

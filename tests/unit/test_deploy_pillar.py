"""What the job carries and what the ext_pillar serves (saltcd.rollout.deploy_pillar)."""

import pytest

from saltcd.rollout import deploy_pillar

DIGEST = "sha256:" + "d" * 64


def test_the_job_carries_the_selector_and_nothing_secret(settings):
    pillar = settings.deployment("web", "dev").pillar(DIGEST)
    data, override = deploy_pillar.split(pillar)
    assert override == {"docker.update_mine": False,
                        "saltcd": {"app": "web", "env": "dev", "digest": DIGEST}}
    assert data == pillar["saltcd"]


def test_sdb_values_are_looked_up_and_pillar_values_added():
    looked = {"sdb://vault/web/db": "s3cret"}
    env = deploy_pillar.resolved_environment(
        "web", {"DB": "sdb://vault/web/db", "PORT": "8080"},
        {"saltcd_environment": {"web": {"EXTRA": 1}, "api": {"NOT": "mine"}}}, looked.get)
    assert env == {"DB": "s3cret", "PORT": "8080", "EXTRA": "1"}


@pytest.mark.parametrize("lookup", [lambda uri: None, lambda uri: uri,
                                    lambda uri: (_ for _ in ()).throw(KeyError("profile"))])
def test_an_unresolved_sdb_value_is_an_error_never_the_uri(lookup):
    with pytest.raises(deploy_pillar.UnresolvedSecret, match="web: environment DB: sdb://vault/web/db"):
        deploy_pillar.resolved_environment("web", {"DB": "sdb://vault/web/db"}, {}, lookup)


def test_a_minion_without_entries_gets_nothing():
    assert deploy_pillar.build({}, {}, resolve=None) == {}

"""Runs last of its worker's files (the name sorts last): after the ingress tests,
no configured secret and no push signature a test sent is in the master's job
cache, the events the lab saw, or the master's and minions' log files (see
leak_scan, which every lab also runs when it stops)."""

import hashlib
import json
import time

import pytest

from . import leak_scan
from .conftest import REGISTRY_USERS

pytestmark = pytest.mark.integration


def test_no_secret_or_signature_in_job_cache_events_or_logs(lab, webhook_token, push_secret):
    found = leak_scan.leaks(lab, leak_scan.needles(lab, webhook_token, push_secret, REGISTRY_USERS))
    assert found == [], "\n".join(found)


def test_the_reaction_hands_on_only_digests_of_signatures(lab):
    """The CI reaction's arguments (salt/run/<jid>/new, kept in the job cache)
    carry the SHA-256 of the signature, not the signature."""
    start = time.time()
    # A tag that maps to no environment: the reaction runs, nothing deploys.
    lab.ci_push("ci-1", {"repository": lab.repositories["ci"], "tag": "feature-x"})
    signature = lab.signatures[-1]
    digest = hashlib.sha256(signature.encode()).hexdigest()
    deadline, handed = time.time() + 60, []
    while time.time() < deadline and not handed:
        handed = [e for e in lab.events("salt/run/*/new", start)
                  if e.data.get("fun") == "runner.deploy.accept" and digest in json.dumps(e.data)]
        time.sleep(0.5)
    assert handed, "no CI reaction carried the digest of the signature sent"
    assert signature.split("=", 1)[1] not in json.dumps(handed[0].data)

"""The minion module reads image references with the master's grammar.

The grammar is a util (`salt/_utils/saltcd_references.py`, the master's
saltcd/config/references.py), loaded by Salt's own loader after a
`saltutil.sync_utils`, as a minion gets it; `saltcd.reference` and
`saltcd.container` call it through `__utils__`. Docker is replaced by canned
`docker inspect` answers (this tier runs no dockerd); the parsing is real.
"""

import pytest
from salt.exceptions import CommandExecutionError

DIGEST = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64


@pytest.fixture
def minion(caller):
    assert "utils.saltcd_references" in caller.cmd("saltutil.sync_utils")
    return caller


def _docker(minion, image_ref, repo_digests):
    functions = minion.sminion.functions
    functions["docker.inspect_container"] = lambda name: {
        "Id": "0123456789abcdef", "Image": "sha256:" + "e" * 64,
        "Config": {"Image": image_ref}, "State": {"Running": True}}
    functions["docker.inspect_image"] = lambda image_id: {"RepoDigests": repo_digests}


def test_the_minion_grammar_is_the_master_s(repo_root):
    shipped = repo_root / "salt" / "_utils" / "saltcd_references.py"
    assert shipped.read_bytes() == (repo_root / "saltcd" / "config" / "references.py").read_bytes()


@pytest.mark.parametrize("image, expected", [
    ("127.0.0.1:5000/saltcd/web", ("127.0.0.1:5000/saltcd/web", None, None)),
    ("127.0.0.1:5000/saltcd/web:dev", ("127.0.0.1:5000/saltcd/web", "dev", None)),
    (f"127.0.0.1:5000/saltcd/web@{DIGEST}", ("127.0.0.1:5000/saltcd/web", None, DIGEST)),
    (f"localhost:5000/web:1.0@{DIGEST}", ("localhost:5000/web", "1.0", DIGEST)),
])
def test_references_split_by_the_grammar(minion, image, expected):
    found = minion.cmd("saltcd.reference", image)
    assert (found["repository"], found["tag"], found["digest"]) == expected


def test_a_malformed_reference_is_refused(minion):
    with pytest.raises(CommandExecutionError, match="invalid repository path 'Saltcd/web'"):
        minion.cmd("saltcd.reference", "127.0.0.1:5000/Saltcd/web:dev")


def test_adopted_container_on_a_registry_with_a_port_keeps_its_digest(minion):
    """Started by hand as `127.0.0.1:5000/saltcd/web` (no tag): the registry's port
    is not a tag, so the digest is found and the container is not replaced needlessly."""
    _docker(minion, "127.0.0.1:5000/saltcd/web",
            [f"127.0.0.1:5000/saltcd/other@{OTHER}", f"127.0.0.1:5000/saltcd/web@{DIGEST}"])
    assert minion.cmd("saltcd.container", "web")["digest"] == DIGEST


def test_tagged_container_takes_its_own_repository_s_digest(minion):
    _docker(minion, "127.0.0.1:5000/saltcd/web:dev",
            [f"127.0.0.1:5000/saltcd/other@{OTHER}", f"127.0.0.1:5000/saltcd/web@{DIGEST}"])
    assert minion.cmd("saltcd.container", "web")["digest"] == DIGEST


def test_pinned_container_reports_its_pin(minion):
    _docker(minion, f"127.0.0.1:5000/saltcd/web@{DIGEST}", [f"127.0.0.1:5000/saltcd/web@{OTHER}"])
    assert minion.cmd("saltcd.container", "web")["digest"] == DIGEST

import pytest

from saltcd import references as refs

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("name, registry, path", [
    ("127.0.0.1:5000/saltcd/web", "127.0.0.1:5000", "saltcd/web"),
    ("registry.example.com/team/app", "registry.example.com", "team/app"),
    ("localhost/app", "localhost", "app"),
    ("library/nginx", "docker.io", "library/nginx"),
    ("a__b/c-d.e", "docker.io", "a__b/c-d.e"),
])
def test_repository_splits_host_and_path(name, registry, path):
    repo = refs.parse_repository(name)
    assert (repo.registry, repo.path) == (registry, path)
    assert repo.pinned(DIGEST) == f"{registry}/{path}@{DIGEST}"


@pytest.mark.parametrize("bad", [
    "", "App/Upper", "web; rm -rf /", "$(id)", "../../etc", "a//b", "-a/b",
    "host:99999999999x/app", "a" * 256, 5, None,
])
def test_bad_repositories_are_rejected(bad):
    with pytest.raises(refs.ReferenceError):
        refs.parse_repository(bad)


@pytest.mark.parametrize("tag", ["dev", "v1.2.3", "_x", "A" * 128])
def test_good_tags(tag):
    assert refs.parse_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".dev", "-dev", "a" * 129, "dev;ls", "dév", None])
def test_bad_tags(tag):
    with pytest.raises(refs.ReferenceError):
        refs.parse_tag(tag)


@pytest.mark.parametrize("digest", ["sha256:" + "g" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 64,
                                    "sha256:" + "A" * 64, DIGEST + "\n"])
def test_bad_digests(digest):
    with pytest.raises(refs.ReferenceError):
        refs.parse_digest(digest)


def test_digest_of_a_pinned_reference():
    assert refs.digest_of(f"127.0.0.1:5000/web@{DIGEST}") == DIGEST
    assert refs.digest_of("127.0.0.1:5000/web:dev") is None

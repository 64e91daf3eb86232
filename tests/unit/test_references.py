import pytest
from hypothesis import given
from hypothesis import strategies as st

from saltcd.config import references as refs

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


# --- Docker Hub names ------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "web", "library/web", "docker.io/web", "docker.io/library/web",
    "index.docker.io/library/web", "registry-1.docker.io/web",
])
def test_docker_hub_names_of_one_official_repository_are_one(name):
    repo = refs.parse_repository(name)
    assert repo == refs.Repository("docker.io", "library/web")
    assert str(repo) == "docker.io/library/web"
    assert repo.pinned(DIGEST) == f"docker.io/library/web@{DIGEST}"


def test_other_registries_keep_one_component_paths():
    assert refs.parse_repository("127.0.0.1:5000/web") == refs.Repository("127.0.0.1:5000", "web")
    assert refs.parse_repository("web", "127.0.0.1:5000") == refs.Repository("127.0.0.1:5000", "web")


def _no_host_part(path):
    """A first component with `.` or `:`, or `localhost`, would be a registry host."""
    first, sep, _ = path.partition("/")
    return not sep or ("." not in first and ":" not in first and first != "localhost")


# Paths of the distribution grammar: components of [a-z0-9]+ joined by separators.
_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_component = st.builds(lambda first, rest: first + "".join(s + a for s, a in rest), _alnum,
                       st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), _alnum),
                                max_size=3))
_hub_paths = st.lists(_component, min_size=1, max_size=4).map("/".join).filter(_no_host_part)


@given(_hub_paths)
def test_docker_hub_normalisation_property(path):
    assert refs.PATH_RE.fullmatch(path)
    repo = refs.parse_repository(path)
    expected = path if "/" in path else "library/" + path
    assert repo == refs.Repository("docker.io", expected)
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert refs.parse_repository(f"{host}/{path}") == repo
    assert refs.parse_repository(str(repo)) == repo  # canonical names are fixed points


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5000/saltcd/web", ("127.0.0.1:5000", "saltcd/web", None, None)),
    ("127.0.0.1:5000/saltcd/web:dev", ("127.0.0.1:5000", "saltcd/web", "dev", None)),
    ("web@sha256:" + "a" * 64, ("docker.io", "library/web", None, "sha256:" + "a" * 64)),
    ("localhost:5000/a:qa@sha256:" + "b" * 64, ("localhost:5000", "a", "qa", "sha256:" + "b" * 64)),
])
def test_parse_reference_takes_a_registry_port_for_no_tag(text, expected):
    repository, tag, digest = refs.parse_reference(text)
    assert (repository.registry, repository.path, tag, digest) == expected


@pytest.mark.parametrize("text", ["", "web:", "web@sha256:xyz", "Web:dev", "web:dev:qa", None])
def test_parse_reference_rejects_what_does_not_parse(text):
    with pytest.raises(refs.ReferenceError):
        refs.parse_reference(text)

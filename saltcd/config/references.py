"""Image references, parsed with the grammar of the distribution project.

Everything that comes from an event (repository, tag, digest) goes through these
functions before it is used anywhere: a value that does not match is rejected,
never repaired.
"""

import re
from dataclasses import dataclass

# reference.go of github.com/distribution/reference, transcribed.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
PATH_RE = re.compile(rf"^{_PATH}$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
NAME_MAX = 255

# Docker Hub answers to several names; docker itself normalises them to one, and
# so do we, so that `web`, `library/web` and `docker.io/library/web` match the same
# app. (Where the API really lives is the registry client's business.)
DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
OFFICIAL_PREFIX = "library/"


class ReferenceError(ValueError):
    """An image reference, repository, tag or digest that does not parse."""


@dataclass(frozen=True)
class Repository:
    """A repository name split into its registry host and its path."""

    registry: str
    path: str

    def __str__(self):
        return f"{self.registry}/{self.path}"

    def pinned(self, digest):
        """The reference that pins this repository to one digest."""
        return f"{self}@{parse_digest(digest)}"


def canonical_registry(host):
    """`docker.io` for any of Docker Hub's host names, else the host as given."""
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def parse_repository(name, default_registry=DOCKER_HUB):
    """Split `host[:port]/path` into a Repository, or raise ReferenceError.

    As in docker, the first component is a registry host only if it contains a
    `.` or a `:` or is `localhost`; otherwise the name lives on `default_registry`.
    Docker Hub names are canonical: any of its host names becomes `docker.io`, and
    a one-component path there is an official image (`web` -> `library/web`).
    """
    if not isinstance(name, str) or not name:
        raise ReferenceError("repository must be a non-empty string")
    if len(name) > NAME_MAX:
        raise ReferenceError(f"repository longer than {NAME_MAX} characters")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
        if not DOMAIN_RE.fullmatch(registry):
            raise ReferenceError(f"invalid registry host {registry!r}")
    else:
        registry, path = default_registry, name
    if not PATH_RE.fullmatch(path):
        raise ReferenceError(f"invalid repository path {path!r}")
    registry = canonical_registry(registry)
    if registry == DOCKER_HUB and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return Repository(registry, path)


def parse_tag(tag):
    """Return the tag if it matches `[\\w][\\w.-]{0,127}`, else raise."""
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise ReferenceError(f"invalid tag {str(tag)[:40]!r}")
    return tag


def parse_digest(digest):
    """Return the digest if it is `sha256:` and 64 lowercase hex digits, else raise."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise ReferenceError(f"invalid digest {str(digest)[:80]!r}")
    return digest


def digest_of(reference):
    """The digest part of `repo@sha256:...`, or None when the reference has none."""
    if not isinstance(reference, str) or "@" not in reference:
        return None
    candidate = reference.rsplit("@", 1)[1]
    return candidate if DIGEST_RE.fullmatch(candidate) else None


def parse_reference(text):
    """Split `[host[:port]/]path[:tag][@digest]` into (Repository, tag, digest); tag and
    digest may be None. Raises ReferenceError when any part does not parse."""
    if not isinstance(text, str):
        raise ReferenceError("image reference must be a string")
    name, at, digest = text.partition("@")
    # A tag follows the last ':' only when no '/' comes after it: in
    # `127.0.0.1:5000/saltcd/web` the ':' belongs to the registry's port.
    head, colon, tail = name.rpartition(":")
    tag = None
    if colon and "/" not in tail:
        name, tag = head, tail
    return (parse_repository(name),
            parse_tag(tag) if tag is not None else None,
            parse_digest(digest) if at else None)

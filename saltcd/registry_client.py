"""Asking a registry which digest a tag points to right now.

Events are hints; the registry is the truth. Deploying the digest resolved here
(`repo@sha256:...`) means every minion runs exactly the same image even if the
tag moves during the rollout.
"""

import base64
import logging
import urllib.error
import urllib.request

from saltcd import references
from saltcd.notifications import MANIFEST_MEDIA_TYPES

log = logging.getLogger(__name__)

ACCEPT = ", ".join(sorted(MANIFEST_MEDIA_TYPES))


class RegistryError(RuntimeError):
    """The registry could not tell the digest: unreachable, refused, or no such tag."""


class TagNotFound(RegistryError):
    """The registry answered, and the tag does not exist."""


def manifest_url(repository, tag, settings):
    """The manifest URL of `repository:tag` at its registry."""
    references.parse_tag(tag)
    return f"{settings.scheme}://{repository.registry}/v2/{repository.path}/manifests/{tag}"


def resolve_digest(repository, tag, settings):
    """Return the digest `repository:tag` has at its registry, or raise RegistryError.

    `settings` is a config.Registry (scheme, optional basic credentials, timeout).
    """
    url = manifest_url(repository, tag, settings)
    request = urllib.request.Request(url, method="HEAD", headers={"Accept": ACCEPT})
    if settings.username:
        token = base64.b64encode(f"{settings.username}:{settings.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as response:
            digest = response.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise TagNotFound(f"{repository}:{tag} does not exist at the registry") from None
        raise RegistryError(f"registry {repository.registry} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(f"registry {repository.registry} unreachable: {reason}") from None
    try:
        return references.parse_digest(digest)
    except references.ReferenceError:
        raise RegistryError(
            f"registry {repository.registry} sent no usable Docker-Content-Digest"
        ) from None

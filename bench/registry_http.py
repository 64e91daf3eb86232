"""The registry's HTTP API, for pushes whose moment we control.

A timed push is one manifest PUT: the moment the registry accepts it is the
moment it sends the notification saltcd reacts to. Images are copied between
repositories by cross-repository blob mounts, so nothing is rebuilt.
"""

import hashlib
import json
import urllib.error
import urllib.request

from sandbox import loopback

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])
TIMEOUT = 30


class RegistryError(RuntimeError):
    """The registry refused or failed a request."""


def _call(method, url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with loopback.OPENER.open(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        raise RegistryError(f"{method} {url}: HTTP {exc.code} {exc.read()[:200]!r}") from None


def split(repository):
    """'127.0.0.1:5000/bench/app' -> ('http://127.0.0.1:5000', 'bench/app')."""
    host, _, name = repository.partition("/")
    return f"http://{host}", name


def get_manifest(repository, reference):
    """(manifest bytes, media type, digest) of repository:reference or @digest."""
    base, name = split(repository)
    _, headers, body = _call("GET", f"{base}/v2/{name}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
    media_type = headers.get("Content-Type", "").split(";")[0]
    return body, media_type, "sha256:" + hashlib.sha256(body).hexdigest()


def put_manifest(repository, tag, manifest, media_type):
    """Push `manifest` as repository:tag; returns the digest the registry reports."""
    base, name = split(repository)
    _, headers, _ = _call("PUT", f"{base}/v2/{name}/manifests/{tag}", data=manifest,
                          headers={"Content-Type": media_type})
    return headers.get("Docker-Content-Digest")


def copy_image(source, target, digest, tag):
    """Make source@digest available as target:tag (blobs mounted, manifest put)."""
    manifest, media_type, _ = get_manifest(source, digest)
    parsed = json.loads(manifest)
    base, target_name = split(target)
    _, source_name = split(source)
    for blob in [parsed["config"], *parsed["layers"]]:
        status, _, _ = _call("POST", f"{base}/v2/{target_name}/blobs/uploads/"
                                     f"?mount={blob['digest']}&from={source_name}", data=b"")
        if status != 201:
            raise RegistryError(f"mounting {blob['digest']} into {target_name}: HTTP {status}")
    pushed = put_manifest(target, tag, manifest, media_type)
    if pushed != digest:
        raise RegistryError(f"{target}:{tag} is {pushed}, expected {digest}")
    return pushed

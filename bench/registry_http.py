"""The registry's HTTP API, for pushes whose moment we control.

A timed push is one manifest PUT: the moment the registry accepts it is the
moment it sends the notification saltcd reacts to. Images are copied between
repositories by cross-repository blob mounts, so nothing is rebuilt. The
realistic bench's big images are a small built image plus one layer of random
data uploaded here (`with_filler`): docker build and push would copy and gzip
every byte twice more, about four times as long.
"""

import hashlib
import io
import json
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib

from sandbox import loopback

# manifest media type -> (its gzipped layers' media type, its config's)
PARTS = {
    "application/vnd.docker.distribution.manifest.v2+json": (
        "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.container.image.v1+json"),
    "application/vnd.oci.image.manifest.v1+json": (
        "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.config.v1+json"),
}
MANIFEST_TYPES = ", ".join(PARTS)
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


def _sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def split(repository):
    """'127.0.0.1:5000/bench/app' -> ('http://127.0.0.1:5000', 'bench/app')."""
    host, _, name = repository.partition("/")
    return f"http://{host}", name


def get_manifest(repository, reference):
    """(manifest bytes, media type, digest) of repository:reference or @digest."""
    base, name = split(repository)
    _, headers, body = _call("GET", f"{base}/v2/{name}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
    media_type = headers.get("Content-Type", "").split(";")[0]
    return body, media_type, _sha256(body)


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


def get_blob(repository, digest):
    base, name = split(repository)
    return _call("GET", f"{base}/v2/{name}/blobs/{digest}")[2]


def put_blob(repository, data):
    """Upload `data` as one blob (a monolithic upload); return its digest."""
    base, name = split(repository)
    digest = _sha256(data)
    status, headers, _ = _call("POST", f"{base}/v2/{name}/blobs/uploads/", data=b"")
    where = {k.lower(): v for k, v in headers.items()}.get("location")
    if status != 202 or not where:
        raise RegistryError(f"starting an upload to {name}: HTTP {status}, Location {where!r}")
    location = urllib.parse.urljoin(base, where)
    separator = "&" if "?" in location else "?"
    _call("PUT", f"{location}{separator}digest={digest}", data=data,
          headers={"Content-Type": "application/octet-stream"})
    return digest


def filler_layer(megabytes, path="filler"):
    """(gzipped tar, its uncompressed digest) of one file of `megabytes` MB of
    random data: no other layer shares it and nothing compresses it. Stored
    deflate blocks (level 0): compressing random bytes saves nothing (the pull
    unpacks them a little faster than docker's own gzip of random bytes,
    docs/performance.md, "Realistic images")."""
    body = os.urandom(megabytes << 20)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(body), 0o644
        tar.addfile(info, io.BytesIO(body))
    del body
    plain = raw.getbuffer()
    packer = zlib.compressobj(0, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    return packer.compress(plain) + packer.flush(), _sha256(plain)


def with_filler(repository, digest, tag, megabytes):
    """Push repository:tag, the image repository@digest plus a layer of
    `megabytes` MB of random data; return its digest."""
    raw, media_type, _ = get_manifest(repository, digest)
    if media_type not in PARTS:
        raise RegistryError(f"{repository}@{digest} is a {media_type}, not an image manifest")
    layer_type, config_type = PARTS[media_type]
    manifest = json.loads(raw)
    config = json.loads(get_blob(repository, manifest["config"]["digest"]))
    layer, diff_id = filler_layer(megabytes)
    config["rootfs"]["diff_ids"].append(diff_id)
    config.setdefault("history", []).append({"created_by": f"saltcd bench: {megabytes} MB of random data"})
    config_bytes = json.dumps(config).encode()
    manifest["config"] = {"mediaType": config_type, "size": len(config_bytes),
                          "digest": put_blob(repository, config_bytes)}
    manifest["layers"].append({"mediaType": layer_type, "size": len(layer), "digest": put_blob(repository, layer)})
    body = json.dumps(manifest).encode()
    pushed = put_manifest(repository, tag, body, media_type)
    if pushed != _sha256(body):
        raise RegistryError(f"{repository}:{tag} is {pushed}, expected {_sha256(body)}")
    return pushed

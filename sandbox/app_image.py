"""The example web app image, built ``FROM scratch`` around the host's busybox.

No base image is pulled from anywhere: the build context holds
``/bin/busybox`` and a start script. The app contract: it listens on
``$PORT`` (default 8080), ``GET /health`` answers 200 "ok" while healthy,
``GET /version`` answers the version string.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from contextlib import closing
from pathlib import Path

import docker

log = logging.getLogger(__name__)

BUSYBOX = Path("/bin/busybox")
BEHAVIOURS = ("healthy", "crash", "unhealthy", "degrades", "ignores-sigterm", "dies")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY start.sh /start.sh
COPY www /www
ENV PATH=/bin PORT={port} DEGRADE_AFTER=4
EXPOSE {port}
LABEL org.opencontainers.image.version="{version}" io.saltcd.behaviour="{behaviour}"
ENTRYPOINT ["/bin/busybox", "sh", "/start.sh"]
"""

# sh is PID 1: it traps TERM so that `docker stop` is quick (PID 1 gets no
# default signal handling), and waits for httpd running in the background.
START_SH = """\
/bin/busybox --install -s /bin
behaviour={behaviour}
case "$behaviour" in
  crash)
    echo "crashing on purpose" >&2
    exit 1
    ;;
  unhealthy)
    rm -f /www/health
    ;;
  degrades)
    (sleep "${{DEGRADE_AFTER:-4}}" && rm -f /www/health && echo "health gone" >&2) &
    ;;
  dies)
    # Serves /health, then the server exits and so does the container (non-zero: 143).
    (sleep "${{DEGRADE_AFTER:-4}}" && echo "dying on purpose" >&2 && killall httpd) &
    ;;
esac
httpd -f -p "${{PORT:-8080}}" -h /www &
pid=$!
# ignores-sigterm: like many real images, PID 1 does nothing on TERM, so
# `docker stop` waits the whole stop timeout and then kills it.
if [ "$behaviour" = ignores-sigterm ]; then trap '' TERM INT; else trap 'kill "$pid"; exit 0' TERM INT; fi
echo "serving version $(cat /www/version) on ${{PORT:-8080}} ($behaviour)" >&2
wait "$pid"
"""


class ImageError(RuntimeError):
    """Building, tagging or pushing the app image failed."""


def _write_context(ctx: Path, version: str, behaviour: str, port: int) -> None:
    shutil.copy2(BUSYBOX, ctx / "busybox")
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(version=version, behaviour=behaviour, port=port))
    (ctx / "start.sh").write_text(START_SH.format(behaviour=behaviour))
    www = ctx / "www"
    www.mkdir()
    (www / "version").write_text(version)
    (www / "health").write_text("ok")


def build_and_push(
    docker_url: str,
    repository: str,
    tag: str,
    version: str,
    behaviour: str = "healthy",
    port: int = 8080,
    auth_config: dict | None = None,
) -> str:
    """Build the app image as ``repository:tag`` on ``docker_url``, push it, return its digest.

    ``auth_config`` ({"username", "password"}): credentials with push rights,
    sent with this push only (nothing is written to a docker config.json).
    """
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {behaviour!r}")
    if not VERSION_RE.match(version):
        raise ValueError(f"invalid version {version!r}")
    ref = f"{repository}:{tag}"
    with closing(docker.DockerClient(base_url=docker_url, timeout=300)) as client:
        with tempfile.TemporaryDirectory(prefix="saltcd-app-") as tmp:
            _write_context(Path(tmp), version, behaviour, int(port))
            log.info("building %s (version %s, %s)", ref, version, behaviour)
            try:
                client.images.build(path=tmp, tag=ref, rm=True, forcerm=True, pull=False)
            except docker.errors.BuildError as exc:
                raise ImageError(f"building {ref} failed: {exc}") from exc
        return _push(client, repository, tag, auth_config)


def tag_and_push(docker_url: str, repository: str, digest: str, new_tag: str,
                 auth_config: dict | None = None) -> str:
    """Tag the local image ``repository@digest`` as ``repository:new_tag`` and push it.

    Pulls nothing: the image must be on that engine (e.g. built there).
    Returns the pushed digest, which is the given one.
    """
    if not DIGEST_RE.match(digest):
        raise ValueError(f"invalid digest {digest!r}")
    with closing(docker.DockerClient(base_url=docker_url, timeout=300)) as client:
        try:
            image = client.images.get(f"{repository}@{digest}")
        except docker.errors.ImageNotFound as exc:
            raise ImageError(f"{repository}@{digest} is not on {docker_url}") from exc
        image.tag(repository, new_tag)
        pushed = _push(client, repository, new_tag, auth_config)
    # Same config and layers make the same manifest, hence the same digest.
    # An explicit check, not `assert`: it must hold under `python -O` too.
    if pushed != digest:
        raise ImageError(f"pushing {repository}:{new_tag} gave {pushed}, expected {digest}")
    return pushed


def _push(client: docker.DockerClient, repository: str, tag: str, auth_config: dict | None = None) -> str:
    """Push ``repository:tag``; return the manifest digest the registry reported."""
    digest = None
    log.info("pushing %s:%s", repository, tag)
    extra = {"auth_config": auth_config} if auth_config else {}
    for message in client.api.push(repository, tag=tag, stream=True, decode=True, **extra):
        # Errors arrive inside the stream, not as an HTTP error.
        if "error" in message:
            raise ImageError(f"pushing {repository}:{tag} failed: {message['error']}")
        aux = message.get("aux") or {}
        if aux.get("Digest"):
            digest = aux["Digest"]
    if not digest:
        raise ImageError(f"pushing {repository}:{tag} reported no digest")
    log.info("pushed %s:%s as %s", repository, tag, digest)
    return digest

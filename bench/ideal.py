"""The ideal rollout: one Python process doing the Docker work itself.

For each minion's engine, batch by batch (minions of a batch in parallel):
pull by digest, create the new container, stop and remove the old one, start
the new one, poll its health URL. No Salt, no records: the physical floor
saltcd is compared against.

The parallel-pull ideal (`rollout(..., prepull=True)`) first pulls on every
host at once, then replaces one batch at a time. Both get the same waits as
saltcd: `settle` seconds of staying healthy per minion, and `watch` seconds
after the last batch.
"""

import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor

import docker

from saltcd.config.batches import plan_batches
from sandbox import loopback


class IdealError(RuntimeError):
    """A step of the ideal rollout failed (it has no rollback: it is a yardstick)."""


# saltcd's gate (salt/_utils/saltcd_minion.py, wait_healthy) waits FIRST_WAIT after a
# failed probe, doubling up to the interval; the ideal polls the same way (a
# unit test keeps the two schedules equal).
FIRST_WAIT = 0.05


def healthy(url, timeout, interval):
    """Poll url until it answers 200, as saltcd's gate does; False after timeout."""
    deadline = time.monotonic() + timeout
    wait = min(FIRST_WAIT, interval)
    while True:
        try:
            with loopback.OPENER.open(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(wait)
        wait = min(wait * 2, interval)


def pull(docker_url, spec, digest):
    """Pull repo@digest on one engine."""
    client = docker.DockerClient(base_url=docker_url, timeout=600)
    try:
        client.images.pull(f"{spec['repository']}@{digest}")
    finally:
        client.close()


def replace(docker_url, spec, digest, health_url, settle=0, pulled=False):
    """One minion: the container `spec["container"]` ends up running repo@digest, healthy
    (and still healthy `settle` seconds later)."""
    image = f"{spec['repository']}@{digest}"
    name = spec["container"]
    client = docker.DockerClient(base_url=docker_url, timeout=600)
    try:
        if not pulled:
            client.images.pull(image)
        try:
            old = client.containers.get(name)
        except docker.errors.NotFound:
            old = None
        if old is not None and old.attrs["Config"]["Image"] == image and old.status == "running":
            return False  # already there: nothing to replace
        host_port, container_port = spec["ports"][0].split(":")
        new = client.containers.create(
            image, name=f"{name}-next", environment=dict(spec["environment"]),
            ports={f"{container_port}/tcp": int(host_port)},
            restart_policy={"Name": "unless-stopped"})
        if old is not None:
            old.stop(timeout=int(spec["stop_timeout"]))
            old.remove()
        new.rename(name)
        new.start()
        health = spec["health"]
        if not healthy(health_url, health["timeout"], health["interval"]):
            raise IdealError(f"{health_url} not healthy within {health['timeout']} s")
        if settle:
            time.sleep(settle)
            if not healthy(health_url, 0, health["interval"]):
                raise IdealError(f"{health_url} not healthy {settle} s after it was")
        return True
    finally:
        client.close()


def rollout(minions, spec, digest, batch, settle=0, watch=0, prepull=False):
    """Roll digest out over minions [{"id", "docker_host", "address"}] in saltcd's batch plan
    (pulling on all of them at once first when `prepull`)."""
    by_id = {m["id"]: m for m in minions}
    port = spec["ports"][0].split(":")[0]
    path = spec["health"]["path"]
    if prepull:
        with ThreadPoolExecutor(max_workers=len(minions)) as pool:
            for future in [pool.submit(pull, m["docker_host"], spec, digest) for m in minions]:
                future.result()
    for wave in plan_batches(list(by_id), batch):
        with ThreadPoolExecutor(max_workers=len(wave)) as pool:
            futures = [pool.submit(replace, by_id[m]["docker_host"], spec, digest,
                                   f"http://{by_id[m]['address']}:{port}{path}", settle, prepull)
                       for m in wave]
        for future in futures:
            future.result()
    if watch:
        time.sleep(watch)

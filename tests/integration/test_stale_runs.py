"""What an interrupted run left running is stopped by the next one
(tests/stale_runs.py): a real dockerd with a container, and a real registry,
left in a lab folder whose owner is gone, are stopped and the folder removed;
a folder whose owner still runs is left alone."""

import shutil
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import pytest

from sandbox import app_image, processes
from sandbox.engines import DockerHost
from sandbox.registry import LocalRegistry
from tests import stale_runs
from tests.ports import free_port

pytestmark = pytest.mark.integration

# Clear of the sandbox (10-19), the two lab slots (40-59) and test_sandbox_parts (61).
ADDRESS, INDEX = "127.0.0.71", 71


def _dead_pid():
    """The pid of a process that has come and gone (an interrupted run's pytest)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _folder():
    return Path(tempfile.mkdtemp(prefix="scd-it-", dir="/tmp"))


def test_an_interrupted_runs_daemons_are_stopped_and_its_folder_removed(lab_root):
    stale, live = _folder(), _folder()
    host = DockerHost("stale-1", ADDRESS, stale / "hosts" / "stale-1", INDEX)
    registry = LocalRegistry(stale / "registry", port=free_port())
    bystander = None
    try:
        stale_runs.record_docker_hosts(stale, [host])
        host.start()
        registry.start()
        repository = f"{registry.host}/stale/app"
        app_image.build_and_push(host.url, repository, "v1", "v1")
        with closing(host.client()) as client:
            container = client.containers.run(f"{repository}:v1", detach=True)
            container_pid = client.api.inspect_container(container.id)["State"]["Pid"]
        dockerd, registry_pid = host.pid, registry.pid
        (stale / stale_runs.OWNER).write_text(f"{_dead_pid()}\n", encoding="ascii")
        # A session still running: its folder and what names it stay.
        stale_runs.claim(live)
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(live / "x")],
                                     start_new_session=True)

        swept = stale_runs.sweep()

        assert stale in swept and live not in swept
        for what, pid in (("dockerd", dockerd), ("registry", registry_pid), ("container", container_pid)):
            assert not processes.alive(pid), f"the stale {what} (pid {pid}) still runs"
        assert not stale.exists()
        assert not Path("/sys/class/net", host.bridge).exists(), "the stale host's bridge is still there"
        assert processes.alive(bystander.pid) and live.exists()
    finally:
        if bystander is not None:
            bystander.kill()
            bystander.wait()
        registry.stop()
        host.purge()
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)

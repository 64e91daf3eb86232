"""What an interrupted run left running is stopped by the next one
(tests/stale_runs.py): a real dockerd with a container, and a real registry,
left in a lab folder whose owner is gone, are stopped and the folder removed.
Left alone: a folder whose owner still runs, one open to other users, one
without an owner file, and a `tail -f` of a log in the swept folder."""

import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from sandbox import app_image, processes
from sandbox.docker_hosts import DockerHost
from sandbox.registry import LocalRegistry
from tests import stale_runs
from tests.ports import free_port

pytestmark = pytest.mark.integration

# Clear of the sandbox (10-19), the two lab slots (40-59) and test_sandbox_parts (61).
ADDRESS, INDEX = "127.0.0.71", 71


def _dead_pid():
    """The pid of a process that has come and gone (an interrupted run's test process)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _orphan(folder):
    """Make folder look like the session folder of a run that is gone."""
    (folder / stale_runs.OWNER).write_text(f"{_dead_pid()} 0\n", encoding="ascii")
    return folder


def test_an_interrupted_runs_daemons_are_stopped_and_its_folder_removed(lab_root, tmp_path):
    stale = stale_runs.session_folder("scd-it-", tmp=tmp_path)
    live = stale_runs.session_folder("scd-it-", tmp=tmp_path)
    open_to_all = _orphan(stale_runs.session_folder("scd-it-", tmp=tmp_path))
    open_to_all.chmod(0o755)
    no_owner = stale_runs.session_folder("scd-it-", tmp=tmp_path)
    (no_owner / stale_runs.OWNER).unlink()
    host = DockerHost("stale-1", ADDRESS, stale / "hosts" / "stale-1", INDEX)
    registry = LocalRegistry(stale / "registry", port=free_port())
    bystanders = []
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
        _orphan(stale)
        # Someone reading a log of the stale run, and a process of a session still running.
        for argv in (["tail", "-f", str(stale / "registry" / "registry.log")],
                     [sys.executable, "-c", "import time; time.sleep(300)", str(live / "x")]):
            bystanders.append(subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL))

        swept = stale_runs.sweep(tmp=tmp_path)

        assert swept == [stale]
        for what, pid in (("dockerd", dockerd), ("registry", registry_pid), ("container", container_pid)):
            assert not processes.alive(pid), f"the stale {what} (pid {pid}) still runs"
        assert not stale.exists()
        assert not Path("/sys/class/net", host.bridge).exists(), "the stale host's bridge is still there"
        assert all(processes.alive(b.pid) for b in bystanders), "a process the sweep had no business with was stopped"
        assert live.exists() and open_to_all.exists() and no_owner.exists()
    finally:
        for bystander in bystanders:
            bystander.kill()
            bystander.wait()
        registry.stop()
        host.purge()

"""Which processes a sweep of an interrupted run's folder stops (tests/stale_runs.py):
the daemons the tests start from it, never a reader of its files. The sweep
itself runs against real daemons in tests/integration/test_stale_runs.py."""

from pathlib import Path

import pytest

from tests import stale_runs

FOLDER = Path("/tmp/scd-sf-abc")


@pytest.mark.parametrize("argv", [
    # Salt's processes set their title: /proc/<pid>/cmdline is then one string.
    ["/venv/bin/python /tmp/scd-sf-abc/scripts/cli_salt_master.py --config-dir=/tmp/scd-sf-abc/m/conf MWorker-1"],
    ["/venv/bin/python3.11", "/tmp/scd-sf-abc/scripts/cli_salt_minion.py", "--config-dir=/tmp/scd-sf-abc/x"],
    ["/tmp/scd-sf-abc/venv/bin/python", "/tmp/scd-sf-abc/venv/bin/salt-master", "-c", "/tmp/scd-sf-abc/conf"],
    ["dockerd", "--data-root", "/tmp/scd-sf-abc/hosts/dev-1/data"],
    ["containerd", "--config", "/tmp/scd-sf-abc/hosts/dev-1/exec/containerd/containerd.toml"],
    ["docker-registry", "serve", "/tmp/scd-sf-abc/registry/config.yml"],
    ["/usr/sbin/haproxy", "-W", "-f", "/tmp/scd-sf-abc/proxies/dev-1/haproxy.cfg"],
])
def test_the_daemons_started_from_the_folder_are_stopped(argv):
    assert stale_runs._started_from(FOLDER, argv)  # pylint: disable=protected-access


@pytest.mark.parametrize("argv", [
    ["tail", "-f", "/tmp/scd-sf-abc/registry/registry.log"],
    ["less", "/tmp/scd-sf-abc/registry/registry.log"],
    ["vim", "/tmp/scd-sf-abc/m/conf/master"],
    ["python3", "-c", "pass", "/tmp/scd-sf-abc/x"],
    ["dockerd", "--data-root", "/tmp/scd-sf-abcdef/hosts/dev-1/data"],  # another folder
    ["dockerd", "--data-root", "/var/lib/docker"],                       # the machine's own engine
    [],
])
def test_nothing_else_is(argv):
    assert not stale_runs._started_from(FOLDER, argv)  # pylint: disable=protected-access


def test_a_folder_is_made_only_with_a_prefix_a_sweep_looks_for(tmp_path):
    folder = stale_runs.session_folder("scd-it-", tmp=tmp_path)
    assert folder.parent == tmp_path and folder.stat().st_mode & 0o077 == 0
    assert stale_runs.owner_alive(folder) is True
    with pytest.raises(ValueError, match="never find it"):
        stale_runs.session_folder("scd-other-", tmp=tmp_path)

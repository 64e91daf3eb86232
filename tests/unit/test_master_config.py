"""The master.d wiring `python -m saltcd.master_config` prints."""

import os
from pathlib import Path

import pytest
import yaml

from saltcd import master_config
from saltcd.master import extension


def _printed(capsys, *argv):
    master_config.main(list(argv))
    return yaml.safe_load(capsys.readouterr().out)


def test_wiring_points_at_the_installed_state_tree_and_reactor(capsys):
    conf = _printed(capsys)
    tree = Path(conf["file_roots"]["base"][0])
    for served in ("saltcd/deploy.sls", "saltcd/map.jinja", "orch/deploy.sls",
                   "_modules/saltcd.py", "_states/saltcd_health.py"):
        assert (tree / served).is_file(), served
    reactions = {tag: files for entry in conf["reactor"] for tag, files in entry.items()}
    assert set(reactions) == {"saltcd/ingress/*", "saltcd/push"}
    for files in reactions.values():
        assert all(os.path.isabs(f) and os.path.isfile(f) for f in files)


def test_salt_api_hooks_are_wired_only_when_asked():
    """A minion can fire salt/netapi/hook/... too: nothing reacts to it unless the
    operator uses salt-api for webhooks."""
    def reactions(conf):
        return {tag for entry in conf["reactor"] for tag in entry}

    assert "salt/netapi/hook/saltcd/*" not in reactions(master_config.wiring())
    assert reactions(master_config.wiring(salt_api=True)) == {
        "saltcd/ingress/*", "salt/netapi/hook/saltcd/*", "saltcd/push"}


def test_wiring_needs_no_module_dirs():
    """The runner, engine and minion modules come through the salt.loader entry point."""
    conf = master_config.wiring()
    assert not {"runner_dirs", "engines_dirs", "module_dirs", "states_dirs"} & set(conf)
    assert {"saltcd_webhook": {"address": "127.0.0.1", "port": 8787}} in conf["engines"]
    assert {"saltcd_drains": {}} in conf["engines"]
    assert conf["schedule"]["saltcd-resume"]["function"] == "deploy.resume"
    assert conf["schedule"]["saltcd-resume"]["run_on_start"] is False


def test_webhook_address_and_port_are_options(capsys):
    conf = _printed(capsys, "--webhook-address", "0.0.0.0", "--webhook-port", "9000")
    assert {"saltcd_webhook": {"address": "0.0.0.0", "port": 9000}} in conf["engines"]


def test_root_serves_a_checkout_instead(repo_root, capsys):
    conf = _printed(capsys, "--root", str(repo_root))
    assert conf["file_roots"]["base"] == [str(repo_root / "salt")]
    assert conf["reactor"][-1] == {"saltcd/push": [str(repo_root / "reactor" / "ci_push.sls")]}


def test_a_root_without_saltcd_folders_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="salt/ folder is missing"):
        master_config.wiring(tmp_path)


def test_loader_entry_point_names_existing_folders():
    dirs = extension.loader_dirs()
    assert set(dirs) == {"runners", "engines", "pillar", "modules", "states", "output"}
    expected = {"runners": "deploy.py", "engines": "saltcd_drains.py", "pillar": "saltcd.py",
                "modules": "saltcd.py", "states": "saltcd_health.py", "output": "saltcd_out.py"}
    for ext_type, paths in dirs.items():
        assert isinstance(paths, list) and len(paths) == 1
        assert (Path(paths[0]) / expected[ext_type]).is_file()


def test_wiring_serves_deploy_data_through_the_saltcd_ext_pillar():
    assert {"saltcd": {}} in master_config.wiring()["ext_pillar"]

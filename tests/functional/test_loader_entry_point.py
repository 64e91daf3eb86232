"""saltcd's Salt modules load through its `salt.loader` entry point, with no
runner_dirs, engines_dirs or synced extension modules: the way a master and a
minion with saltcd pip-installed load them."""

from importlib.metadata import entry_points

import pytest
import salt.config
import salt.loader

DIR_OPTIONS = ("runner_dirs", "engines_dirs", "module_dirs", "states_dirs")


def _without_module_dirs(opts, tmp_path):
    for option in DIR_OPTIONS:
        opts.pop(option, None)
    opts.update({
        "root_dir": str(tmp_path),
        "cachedir": str(tmp_path / "cache"),
        "pki_dir": str(tmp_path / "pki"),
        "sock_dir": str(tmp_path / "sock"),
        # Empty: nothing synced, so only the entry point can provide saltcd's modules.
        "extension_modules": str(tmp_path / "extmods"),
        "grains": {},
    })
    return opts


@pytest.fixture
def master_opts(tmp_path):
    return _without_module_dirs(salt.config.master_config(None), tmp_path)


@pytest.fixture
def minion_opts(tmp_path):
    opts = _without_module_dirs(salt.config.minion_config(None), tmp_path)
    opts.update({"id": "dev-1", "file_client": "local"})
    return opts


def test_the_entry_point_is_registered():
    found = {ep.name: ep.value for ep in entry_points(group="salt.loader")}
    assert found.get("saltcd") == "saltcd.master.extension:loader_dirs"


def test_master_loads_the_deploy_runner(master_opts):
    runners = salt.loader.runner(master_opts)
    for function in ("rollout", "rollback", "approve", "promote", "status", "history",
                     "accept", "resume"):
        assert f"deploy.{function}" in runners, function


def test_every_runner_function_shows_its_cli_example(master_opts):
    """`salt-run -d deploy` is the operator's manual: each function says how it is run."""
    import inspect  # pylint: disable=import-outside-toplevel

    runners = salt.loader.runner(master_opts)
    functions = [key for key in runners if key.startswith("deploy.")]
    assert len(functions) >= 12, functions
    for key in functions:
        usage = (inspect.getdoc(runners[key]) or "").partition("CLI Example")[2]
        assert ".. code-block:: bash" in usage and "salt-run deploy." in usage, key


def test_master_loads_the_drain_engine(master_opts):
    engines = salt.loader.engines(master_opts, {}, {}, salt.loader.utils(master_opts), None)
    assert "saltcd_drains.start" in engines


def test_minion_loads_the_execution_module_and_health_state(minion_opts):
    utils = salt.loader.utils(minion_opts)
    modules = salt.loader.minion_mods(minion_opts, utils=utils)
    assert "saltcd.container" in modules and "saltcd.status" in modules
    states = salt.loader.states(minion_opts, modules, utils, salt.loader.serializers(minion_opts))
    assert "saltcd_health.passing" in states


def test_a_minion_with_saltcd_installed_works_before_its_utils_are_synced(minion_opts):
    """Salt reads no entry point for utils: the modules fall back to the utils of
    the installed package (saltcd.master.extension.minion_utils), so such a
    minion answers without a sync, as it did when the modules held the code."""
    utils = salt.loader.utils(minion_opts)
    assert "saltcd_minion.reference" not in utils  # nothing synced
    modules = salt.loader.minion_mods(minion_opts, utils=utils)
    # A util that calls back into the minion's functions (__salt__): dockermod's
    # inspect_container, answered here as the engine would for a stopped container.
    modules["docker.inspect_container"] = lambda name: {
        "Id": "c0ffee", "State": {"Running": False, "ExitCode": 3}, "Config": {"Image": "web@sha256:" + "a" * 64}}
    assert modules["saltcd.container"]("web")["exit_code"] == 3
    assert modules["saltcd.reference"]("registry.example.com:5000/team/web:dev") == {
        "registry": "registry.example.com:5000", "repository": "registry.example.com:5000/team/web", "tag": "dev",
        "digest": None}

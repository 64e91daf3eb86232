"""Shared pytest set-up: the repository root, and salt-factories' own fixtures."""

import pathlib
import shutil
import sys

import pytest

from saltcd import compat
from tests import stale_runs

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Salt 3006 answers `import tornado` with its vendored tornado 4 (an import
# hook). The webhook engine imports the real package past it and leaves it in
# `sys.modules` (saltcd.compat.tornado), as it must in its own process; tests
# that load the engine in-process share theirs with Salt's clients, which then
# bound the real tornado where Salt expects its own and hung. After each test
# the `tornado` names are put back as Salt left them (nothing to do on 3007+).
_TORNADO_AS_SALT_LEFT_IT = {name: module for name, module in sys.modules.items()
                            if name == "tornado" or name.startswith("tornado.")}


def _put_tornado_back():
    if not compat._vendored_tornado_hooks():  # pylint: disable=protected-access
        return
    for name in [n for n in sys.modules if n == "tornado" or n.startswith("tornado.")]:
        if sys.modules[name] is not _TORNADO_AS_SALT_LEFT_IT.get(name):
            del sys.modules[name]
    sys.modules.update(_TORNADO_AS_SALT_LEFT_IT)


@pytest.fixture(autouse=True)
def _tornado_as_salt_left_it():
    yield
    _put_tornado_back()


def pytest_collection_finish(session):  # pylint: disable=unused-argument
    """A test module that loads the engine at import did so while collected."""
    _put_tornado_back()


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def swept():
    """What an interrupted earlier run left running is stopped before anything
    starts (tests/stale_runs.py); the folders it swept."""
    return stale_runs.sweep()


@pytest.fixture(scope="session")
def salt_factories_default_root_dir(swept):
    """Where salt-factories puts its daemons' config, keys and logs: a folder of
    our own, removed at the end (its default, the temp dir itself, kept a
    folder per daemon from every run). Short, for unix socket paths."""
    root = stale_runs.session_folder("scd-sf-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def event_listener():
    """salt-factories' event store, keeping events for the whole session (its
    default forgets them after 120 s): the leak scan reads every event the
    ingress tests caused."""
    from saltfactories.plugins.event_listener import EventListener

    with EventListener(timeout=3600) as listener:
        yield listener


# The integration files that take longest (minutes each), longest first. `make
# test` hands whole files to two workers in collection order
# (--no-loadscope-reorder), so these start first and the quick unit,
# functional and bench files fill in at the end, and the two workers end
# close together instead of one running a long file alone.
LONGEST_FIRST = ("test_safe_rollouts.py", "test_start_first.py", "test_trustworthy_ingress.py",
                 "test_real_apps.py", "test_ha_masters.py", "test_app_roles.py", "test_bounded_and_timed.py",
                 "test_wheel_install.py", "test_prepull.py", "test_lost_notification.py", "test_push_to_running.py",
                 "test_registry_auth.py")


def _file_order(item):
    path = item.path
    if path.parent.name != "integration":
        return 2, 0
    return (0, LONGEST_FIRST.index(path.name)) if path.name in LONGEST_FIRST else (1, 0)


def pytest_collection_modifyitems(items):
    """Long integration files first, then the other integration files, then the
    rest; a stable sort, so each file keeps its own order."""
    items.sort(key=_file_order)


def pytest_unconfigure(config):
    """Salt flushes its buffered log handlers at exit, after pytest closed the
    captured streams; don't print a traceback per record for that."""
    import logging

    logging.raiseExceptions = False

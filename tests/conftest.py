"""Shared pytest set-up: the repository root, and salt-factories' own fixtures."""

import pathlib
import shutil
import tempfile

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def salt_factories_default_root_dir():
    """Where salt-factories puts its daemons' config, keys and logs: a folder of
    our own, removed at the end (its default, the temp dir itself, kept a
    folder per daemon from every run). Short, for unix socket paths."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="scd-sf-", dir="/tmp"))
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


def pytest_unconfigure(config):
    """Salt flushes its buffered log handlers at exit, after pytest closed the
    captured streams; don't print a traceback per record for that."""
    import logging

    logging.raiseExceptions = False

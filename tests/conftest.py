"""Shared pytest set-up: the repository root, and salt-factories' own fixtures."""

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


def pytest_unconfigure(config):
    """Salt flushes its buffered log handlers at exit, after pytest closed the
    captured streams; don't print a traceback per record for that."""
    import logging

    logging.raiseExceptions = False

"""saltcd's Salt-side files as plain modules (Salt's dunders not set), for tests
that drive their code in-process or read their constants: engines
(`_engines/*.py`) and minion execution modules (`salt/_modules/*.py`)."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = REPO / "_engines"
MINION_MODULES = REPO / "salt" / "_modules"


def _fresh(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def engine(name):
    """A fresh module object of `_engines/<name>.py`."""
    return _fresh(ENGINES / f"{name}.py", f"{name}_under_test")


def minion_module(name):
    """A fresh module object of `salt/_modules/<name>.py` (each call its own: a
    test may patch it)."""
    return _fresh(MINION_MODULES / f"{name}.py", f"{name}_minion_under_test")

"""saltcd's Salt engines (`_engines/*.py`) as plain modules, for tests that
drive an engine's code in-process or read its constants."""

import importlib.util
from pathlib import Path

ENGINES = Path(__file__).resolve().parents[1] / "_engines"


def load(name):
    """A fresh module object of `_engines/<name>.py` (Salt's dunders not set)."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", ENGINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

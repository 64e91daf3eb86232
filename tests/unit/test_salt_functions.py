"""The loader modules only adapt Salt's calling convention; what Salt publishes
from them is all they define, and each published function shows how it is used.

The rule, for every module of salt/_modules and salt/_states, as Salt's own
loader loads it:

- every public name the module defines (not imported, not `__virtual__` /
  `__virtualname__`) is a function Salt publishes, so helpers are `_private`
  or live in salt/_utils;
- every function Salt publishes from it is defined there (an imported function
  would be published too) and has a docstring with its usage: an execution
  module function a "CLI Example:" with a ``.. code-block:: bash`` that calls
  ``<module>.<function>``, a state function a ``.. code-block:: yaml`` SLS
  example that uses ``<module>.<function>:``.
"""

import inspect
import types

import pytest
import salt.loader

from tests import salt_side

KINDS = {"modules": "_modules", "states": "_states"}
ASIDE = {"__virtual__", "__virtualname__"}


def _files(kind):
    return sorted(path.stem for path in (salt_side.STATE_TREE / KINDS[kind]).glob("*.py"))


CASES = [(kind, name) for kind in KINDS for name in _files(kind)]


@pytest.fixture(scope="module")
def minion(tmp_path_factory):
    return salt_side.minion(tmp_path_factory.mktemp("minion"))


def _published(minion, kind, name):
    """{function: the loaded function} Salt publishes from module `name` (raw: no
    __virtual__, so it is keyed by its file name, which every one of them keeps)."""
    loaded = salt.loader.raw_mod(minion.opts, name, minion.functions, mod=kind)
    return {key.split(".", 1)[1]: function for key, function in loaded.items()}


def _defined(namespace):
    """Public names bound in a module's namespace other than imported modules and classes."""
    return {key for key, value in namespace.items()
            if not key.startswith("_") and not isinstance(value, (types.ModuleType, type))}


@pytest.mark.parametrize("kind, name", CASES)
def test_every_public_name_is_a_published_salt_function_with_its_usage(minion, kind, name):
    published = _published(minion, kind, name)
    assert published, f"Salt publishes nothing from salt/{KINDS[kind]}/{name}.py"
    namespace = next(iter(published.values())).__globals__
    module_name = namespace["__name__"]
    assert _defined(namespace) - ASIDE == set(published), \
        f"{name}: public helpers or constants (make them _private, or move them to salt/_utils)"
    for function_name, function in published.items():
        assert function.__module__ == module_name, f"{name}.{function_name} is imported, not defined there"
        doc = inspect.getdoc(function) or ""
        if kind == "modules":
            usage = doc.partition("CLI Example:")[2]
            assert ".. code-block:: bash" in usage and f"{name}.{function_name}" in usage, \
                f"{name}.{function_name}: its docstring needs a CLI Example calling it"
        else:
            usage = doc.partition(".. code-block:: yaml")[2]
            assert f"{name}.{function_name}:" in usage, \
                f"{name}.{function_name}: its docstring needs an SLS example using it"


def test_the_loader_publishes_them_under_those_names(minion):
    """With __virtual__ run, as a minion loads them."""
    states = minion.states()
    for kind, name in CASES:
        loader = minion.functions if kind == "modules" else states
        for function_name in _published(minion, kind, name):
            assert f"{name}.{function_name}" in loader, f"{name}.{function_name}"


def test_the_reference_grammar_is_a_util_not_salt_functions(minion):
    assert "saltcd_references.parse_reference" in minion.utils
    assert "saltcd_references.parse_reference" not in minion.functions

"""The package is cut along a push's path, and its imports only point down:
each subpackage imports from the layers below it, never above (see
docs/layout.md). A module moved or an import added against the flow fails here."""

import ast
import pathlib

import saltcd

PACKAGE = pathlib.Path(saltcd.__file__).parent
# Bottom to top. The foundation: words, errors, the Salt-line shims, the
# operator's configuration and the store. Then the push's path.
LAYERS = (
    {"vocabulary", "errors", "compat"},
    {"config"},
    {"store"},
    {"ingress"},
    {"rollout"},
    {"queue"},
    {"present"},
    {"master"},  # the running master: wires every part below to Salt
    # Commands: the CI job's side (signs a push for the ingress) and the
    # operator's (prints the master config saltcd needs).
    {"ci_push", "master_config"},
)


def _layer(part):
    return next(i for i, names in enumerate(LAYERS) if part in names)


def _imports(path):
    """The saltcd parts (first name below saltcd) a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "saltcd":
                found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("saltcd.")}
    return found - {"__version__"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "files":
            continue
        yield rel.parts[0].removesuffix(".py"), rel, path


def test_every_part_of_the_package_has_a_layer():
    parts = {part for part, _, _ in _modules()} - {"__init__"}
    assert parts == set().union(*LAYERS)


def test_imports_only_point_down_the_path():
    upward = [f"{rel} imports saltcd.{target}"
              for part, rel, path in _modules() if part != "__init__"
              for target in _imports(path) if _layer(target) > _layer(part)]
    assert upward == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from saltcd.present import views\nfrom saltcd import store, vocabulary\n")
    assert _imports(module) == {"present", "store", "vocabulary"}

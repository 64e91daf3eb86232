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
    # Several masters' shared store and lease locks (etcd), under the store's interface.
    {"ha"},
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


def _parts(dotted):
    """The saltcd part a dotted module name is in (`saltcd.queue.holds` -> `queue`), else None."""
    names = dotted.split(".")
    return names[1] if names[0] == "saltcd" and len(names) > 1 else None


def _literal_import(call):
    """importlib.import_module("saltcd...") (or import_module("saltcd...")) with a literal name."""
    name = getattr(call.func, "attr", getattr(call.func, "id", None))
    arg = call.args[0] if call.args else None
    return (name == "import_module" and isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            and _parts(arg.value) is not None)


def _imports(path, module="saltcd.m"):
    """The saltcd parts (first name below saltcd) a module imports: absolute and
    relative imports, lazy ones inside functions, and importlib.import_module
    with a literal name. `module`: the module's own dotted name (for relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{base}" if base else package
            if base == "saltcd":
                found |= {alias.name for alias in node.names}
            elif _parts(base):
                found.add(_parts(base))
        elif isinstance(node, ast.Import):
            found |= {_parts(a.name) for a in node.names if _parts(a.name)}
        elif isinstance(node, ast.Call) and _literal_import(node):
            found.add(_parts(node.args[0].value))
    return found - {"__version__"}


def _modules():
    """(part, path relative to the package, dotted name, path) of every module in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "files":
            continue
        dotted = ".".join(("saltcd", *rel.with_suffix("").parts)).removesuffix(".__init__")
        yield rel.parts[0].removesuffix(".py"), rel, dotted, path


def test_every_part_of_the_package_has_a_layer():
    parts = {part for part, _, _, _ in _modules()} - {"__init__"}
    assert parts == set().union(*LAYERS)


def test_imports_only_point_down_the_path():
    # saltcd/__init__.py is the bottom of all: it may import nothing of saltcd's.
    upward = [f"{rel} imports saltcd.{target}"
              for part, rel, dotted, path in _modules()
              for target in _imports(path, dotted)
              if part == "__init__" or _layer(target) > _layer(part)]
    assert upward == []


def test_the_layer_check_sees_every_form_of_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from saltcd.present import views\nfrom saltcd import store, vocabulary\n"
                      "from ..master import wiring\nfrom . import holds\nimport saltcd.ingress.intake\n"
                      "def f():\n    importlib.import_module('saltcd.rollout.prepull')\n")
    assert _imports(module, "saltcd.queue.controller") == {
        "present", "store", "vocabulary", "master", "queue", "ingress", "rollout"}

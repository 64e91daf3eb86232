"""saltcd as a Salt extension: where its Salt files are, and the `salt.loader` entry point.

The repository's top-level folders (`salt/`, `reactor/`, `_runners/`,
`_engines/`, `_pillar/`) are the source; the wheel ships them under `saltcd/files/<folder>`
(see pyproject.toml). An editable install or a plain checkout has no
`saltcd/files`: the folders are found at the checkout's top instead.

Salt imports this module in every master and minion process that builds a
loader, so it imports nothing heavy.
"""

from importlib.resources import files
from pathlib import Path

FOLDERS = ("salt", "reactor", "_runners", "_engines", "_pillar", "_output")


def _base():
    """saltcd/files in an installed wheel, else the checkout saltcd is imported from."""
    package = Path(str(files("saltcd")))
    if (package / "files").is_dir():
        return package / "files"
    # Not site-packages' parent (Salt itself lives in site-packages/salt): a checkout.
    if (package.parent / "pyproject.toml").is_file():
        return package.parent
    raise FileNotFoundError(f"saltcd's Salt files are neither in {package / 'files'} nor in a checkout")


def folder(name, root=None):
    """The absolute path of one of saltcd's Salt folders (`salt`, `reactor`, ...).

    `root`: a checkout to take it from instead of the installed package.
    """
    if name not in FOLDERS:
        raise ValueError(f"not a saltcd folder: {name!r}")
    path = (Path(root) if root is not None else _base()).resolve() / name
    if not path.is_dir():
        raise FileNotFoundError(f"saltcd's {name}/ folder is missing: {path}")
    return str(path)


def loader_dirs():
    """Salt's `salt.loader` entry point: the folders of saltcd's Salt modules.

    The minion modules are the ones the state tree serves (`salt://_modules`,
    `salt://_states`), so a minion without saltcd installed can sync them.
    Their code, `salt://_utils`, is not listed: Salt's utils loader reads no
    entry point (`salt.loader.utils` builds its dirs with `load_extensions=False`,
    in 3006 to 3008), so a minion gets saltcd's utils only by a sync
    (`saltutil.sync_utils`, which the runner does where they are missing), or,
    with saltcd installed, from `minion_utils`.
    """
    tree = folder("salt")
    return {
        "runners": [folder("_runners")],
        "engines": [folder("_engines")],
        "pillar": [folder("_pillar")],  # the master's `saltcd` ext_pillar
        "output": [folder("_output")],  # the `saltcd` outputter the deploy runner picks
        "modules": [str(Path(tree) / "_modules")],
        "states": [str(Path(tree) / "_states")],
    }


_MINION_UTILS = []
# saltcd's utils (salt/_utils): a loader limited to them loads in milliseconds,
# one over every util Salt ships took 3 s on its first call, in every job's process.
MINION_UTILS = ("saltcd_minion", "saltcd_haproxy", "saltcd_release", "saltcd_references")


def minion_utils(opts, functions):
    """saltcd's minion utils (`salt://_utils`), loaded by Salt's own loader from
    this installed package: what a minion with saltcd installed calls until a
    sync brings them (its modules come through the entry point, the utils
    cannot). `functions`: the calling module's execution modules (its
    `__salt__`), which the utils reach as `__salt__`, as Salt's minion_mods gives
    its own utils loader. One loader per process."""
    if not _MINION_UTILS:
        import salt.loader  # pylint: disable=import-outside-toplevel

        _MINION_UTILS.append(salt.loader.utils({**opts, "utils_dirs": [str(Path(folder("salt")) / "_utils")]},
                                                whitelist=MINION_UTILS))
    _MINION_UTILS[0].pack["__salt__"] = functions
    return _MINION_UTILS[0]

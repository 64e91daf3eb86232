"""saltcd's minion code through Salt's own loader, as a minion that synced it
has it: the repository's salt/_utils as `__utils__`, salt/_modules as
`__salt__` and salt/_states as the state functions. No file is loaded by path.

A test reaches a function by its Salt name (`loaders.functions["saltcd.container"]`)
or by attribute (`loaders.utils.saltcd_haproxy.render`), replaces a Salt function
by assigning it (`loaders.functions["docker.retcode"] = fake`), and patches what
a util module looks up by name in the module's globals
(`loaders.utils["saltcd_minion.wait_healthy"].__globals__`)."""

import types
from pathlib import Path

import salt.config
import salt.loader

REPO = Path(__file__).resolve().parents[1]
STATE_TREE = REPO / "salt"  # its _modules, _states and _utils


def minion_opts(root, **settings):
    """A minion's opts whose extension folders are the repository's state tree,
    with every path of its own under `root`; `settings` go over them (a minion
    config key such as `saltcd_proxy`)."""
    root = Path(root)
    opts = salt.config.minion_config(None)
    opts.update({
        "id": "test-minion",
        "file_client": "local",
        "root_dir": str(root),
        "cachedir": str(root / "cache"),
        "pki_dir": str(root / "pki"),
        "sock_dir": str(root / "sock"),
        "extension_modules": str(root / "extmods"),
        # `<dir>/_modules`, `<dir>/_states`, `<dir>/_utils` of each (salt.loader._module_dirs).
        "module_dirs": [str(STATE_TREE)],
        "utils_dirs": [],
        "grains": {},
        **settings,
    })
    return opts


def minion(root, **settings):
    """Salt's loaders of a minion (see `minion_opts`): `opts`, `utils`,
    `functions` (execution modules), and `states()` (state modules, built on
    demand over those functions)."""
    opts = minion_opts(root, **settings)
    utils = salt.loader.utils(opts)
    functions = salt.loader.minion_mods(opts, utils=utils)

    def states():
        return salt.loader.states(opts, functions, utils, salt.loader.serializers(opts))

    return types.SimpleNamespace(opts=opts, utils=utils, functions=functions, states=states)

"""
saltcd's switch for start-first replacement: HAProxy, driven through its runtime API.

Only Salt's calling convention: the client is saltcd's minion util
``saltcd_haproxy`` (salt://_utils). Where HAProxy lives on the minion is config
key ``saltcd_proxy`` (minion config, grains or pillar; ``config.get``).

CLI Example:

.. code-block:: bash

    salt 'dev-*' saltcd_haproxy.route web
"""

import os

from salt.exceptions import CommandExecutionError

__virtualname__ = "saltcd_haproxy"


def __virtual__():
    return __virtualname__


def _util(function):
    # "is not available": the runner then syncs this minion (saltcd.master.salt_fleet).
    name = f"saltcd_haproxy.{function}"
    utils = __utils__ if _synced(name.split(".")[0]) else _installed_utils()
    if name not in utils:
        raise CommandExecutionError(f"{name} is not available: saltcd's minion utils are not synced "
                                    "(saltutil.sync_utils)")
    return utils[name]


def _synced(module):
    """Is saltcd's util `module` among this minion's own utils (synced, in
    utils_dirs, or in a module_dirs folder's _utils)? Asked of the disk: a key
    __utils__ lacks makes Salt load every util it ships before it says no,
    seconds in every job's process."""
    dirs = [os.path.join(__opts__["extension_modules"], "utils"), *(__opts__.get("utils_dirs") or []),
            *(os.path.join(folder, "_utils") for folder in __opts__.get("module_dirs") or [])]
    return any(os.path.isfile(os.path.join(folder, f"{module}.py")) for folder in dirs)


def _installed_utils():
    """saltcd's utils from its installed package, on a minion with saltcd
    installed that was not synced yet (saltcd.master.extension.minion_utils)."""
    try:
        from saltcd.master import extension  # pylint: disable=import-outside-toplevel
    except ImportError:  # saltcd is not installed here: only a sync brings them
        return {}
    # __salt__ here is Salt's name for the caller's loader; the util loader needs the loader itself.
    return extension.minion_utils(__opts__, __salt__.value())


def _call(function, *args, **kwargs):
    return _util(function)(settings(), *args, **kwargs)


def settings():
    """This minion's ``saltcd_proxy`` settings over the defaults.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.settings
    """
    return _util("settings")(__salt__["config.get"]("saltcd_proxy", {}))


def command(line, socket_path=None, timeout=None):
    """Send one runtime API command and return HAProxy's answer (text).

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.command "show backend"
    """
    return _call("command", line, socket_path=socket_path, timeout=timeout)


def route(container):
    """{slot: {"address", "live"}} of the app's backend in the running HAProxy, or {}.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.route web
    """
    return _call("route", container)


def live(container):
    """(slot, address) of the slot the app's traffic goes to, or (None, None).

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.live web
    """
    return _call("live", container)


def reload():
    """Reload HAProxy (seamless: the old worker finishes its connections).

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.reload
    """
    return _call("reload")


def ensure_frontend(container, port, upstream=None, bind=None):
    """Make HAProxy serve the app on ``bind:port`` (a new backend routes to
    ``upstream``, ``host:port``). True if it reloaded HAProxy.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.ensure_frontend web 8080
    """
    return _call("ensure_frontend", container, port, upstream=upstream, bind=bind)


def switch(container, upstream, port, bind=None):
    """Route new requests of the app to ``upstream`` (``host:port``); the live slot
    drains. Returns {"new": slot, "old": slot or None, "old_address"}.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.switch web 127.0.0.1:32768 8080
    """
    return _call("switch", container, upstream, port, bind=bind)


def drained(container, slot):
    """Connections the slot still serves; 0 when it has none.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.drained web a
    """
    return _call("drained", container, slot)


def wait_drained(container, slot, seconds):
    """Wait (at most ``seconds``) until the slot serves nothing. Returns what is left.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.wait_drained web a 10
    """
    return _call("wait_drained", container, slot, seconds)


def retire(container, slot):
    """Put a slot in maintenance (its container is about to stop).

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd_haproxy.retire web a
    """
    return _call("retire", container, slot)

"""
Start-first replacement of an app's container behind the host's HAProxy, and
the other container changes of a deploy: containers a minion no longer runs,
and release hooks.

Only Salt's calling convention: the code is saltcd's minion util
``saltcd_release`` (salt://_utils/saltcd_release.py, which tells how a
start-first replacement goes). Each state's docstring shows it in an SLS.
"""

import os

from salt.exceptions import CommandExecutionError


def __virtual__():
    return "saltcd_release"


def _util(function):
    name = f"saltcd_release.{function}"
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


def gone(name, stop_timeout=10):
    """Container ``name``, which this minion no longer runs for its app (a role
    moved to other minions or removed), stopped and removed if saltcd created
    it (it carries saltcd's spec label); a container without the label is left
    alone. Applied by saltcd.deploy before it replaces the roles this minion runs.

    .. code-block:: yaml

        saltcd-deploy-saltcd_release-gone-shop-scheduler:
          saltcd_release.gone:
            - name: shop-scheduler
    """
    return _util("gone")(__salt__, __opts__["test"], name, stop_timeout=stop_timeout)


def hook(name, image, command, environment=None, options=None, timeout=600):
    """Run ``command`` once in a new container ``name`` of ``image`` with the app's
    ``environment`` and ``options``, wait for it to exit (at most ``timeout``
    s), remove it. Passes when it exits 0; the comment ends with its last lines.

    .. code-block:: yaml

        saltcd-hook-before:
          saltcd_release.hook:
            - name: web-hook-before
            - image: registry.example.com/web@sha256:...
            - command: ["./manage.py", "migrate"]
            - timeout: 600
    """
    return _util("hook")(__salt__, __opts__["test"], name, image, command, environment=environment,
                         options=options, timeout=timeout)


def start_first(name, image, ports, environment=None, restart_policy="unless-stopped", stop_timeout=10,
                drain=10, health=None, options=None):
    """Replace container ``name`` with ``image`` start-first, behind the host's
    HAProxy: ``ports`` is the app's one ``"HOST:CONTAINER"`` port (HAProxy binds
    HOST), ``drain`` the seconds requests in flight on the old container may
    take, ``health`` the gate's ``{path, timeout, interval, settle, status,
    check, command}``, ``options`` the app's docker_container.running options.

    .. code-block:: yaml

        saltcd-deploy-saltcd_release-start_first:
          saltcd_release.start_first:
            - name: web
            - image: registry.example.com/web@sha256:...
            - ports: ["8080:8080"]
            - drain: 10
    """
    return _util("start_first")(__salt__, __opts__["test"], name, image, ports, environment=environment,
                                restart_policy=restart_policy, stop_timeout=stop_timeout, drain=drain,
                                health=health, options=options)

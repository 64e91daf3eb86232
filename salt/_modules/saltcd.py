"""
saltcd's minion side: what does this minion's container run, and is it healthy?

Only Salt's calling convention: the code is saltcd's minion util
``saltcd_minion`` (salt://_utils), with the master's image reference grammar
(``saltcd_references``). The runner syncs them to minions that lack them.

CLI Example:

.. code-block:: bash

    salt 'dev-*' saltcd.container web
"""

import os

from salt.exceptions import CommandExecutionError


def __virtual__():
    return "saltcd"


def _util(function):
    # "is not available": the runner then syncs this minion (saltcd.master.salt_fleet).
    utils = __utils__ if _synced(function.split(".")[0]) else _installed_utils()
    if function not in utils:
        raise CommandExecutionError(f"{function} is not available: saltcd's minion utils are not synced "
                                    "(saltutil.sync_utils)")
    return utils[function]


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


def fence(app, env, token):
    """Check a rollout step's lock token for app/env against the highest this minion
    has seen (kept in its cachedir), and raise that mark: returns "" when the step
    may run, else why it may not. Used by saltcd's deploy state when its masters
    share an etcd store (a rollout's pillar then carries ``fence``).

    CLI Example:

    .. code-block:: bash

        salt 'dev-*' saltcd.fence web dev 1042
    """
    folder = os.path.join(__opts__["cachedir"], "saltcd", "fence")
    return _util("saltcd_minion.fence")(folder, app, env, token) or ""


def reference(image):
    """Split an image reference ``[host[:port]/]path[:tag][@digest]`` with saltcd's
    grammar: ``{"registry", "repository", "tag", "digest"}`` (tag and digest may
    be None). Raises ``CommandExecutionError`` when it does not parse.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd.reference 127.0.0.1:5000/saltcd/web:dev
    """
    return _util("saltcd_minion.reference")(_util("saltcd_references.parse_reference"), image)


def container(name):
    """Describe container ``name``: exists, running, digest, spec (the fingerprint
    saltcd labelled it with), id, started_at, exit code.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd.container web
    """
    return _util("saltcd_minion.container")(__salt__, name)


def containers(names):
    """``container`` of each of ``names`` (an app's roles), in one call: ``{name: info}``.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd.containers '[web, web-worker]'
    """
    return _util("saltcd_minion.containers")(__salt__, names)


def probe(url, timeout=2, status=200):
    """One HTTP GET of ``url``: ``{"healthy": bool, "status": code, "error": text}``.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd.probe http://127.0.0.1:8080/health
    """
    return _util("saltcd_minion.probe")(url, timeout=timeout, status=status)


def health_probe(check, url, container=None, status=200, command=None, timeout=2):
    """One probe of a container's health, by ``check``: ``http`` (GET ``url``,
    expect ``status``), ``tcp`` (``url``'s host and port accept a connection),
    ``command`` (``command`` run in ``container`` exits 0), ``docker`` (the
    image's own HEALTHCHECK says healthy), ``running`` (``container`` runs).

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd.health_probe tcp tcp://127.0.0.1:6379
        salt '*' saltcd.health_probe command '' container=web command='["sh", "-c", "test -f /tmp/ready"]'
    """
    return _util("saltcd_minion.health_probe")(__salt__, check, url, container=container, status=status,
                                               command=command, timeout=timeout)


def health_url(check, port, path="/health", host="127.0.0.1"):
    """Where ``check`` probes: ``http://host:port/path`` or ``tcp://host:port``
    (grain ``saltcd:health_host`` overrides ``host``).

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd.health_url http 8080 /health
    """
    return _util("saltcd_minion.health_url")(__grains__, check, port, path, host)


def status(name, port, path="/health", host="127.0.0.1", timeout=2, check="http", command=None):
    """The container ``name`` and one probe of its health (``check``), in one call.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd.status web 8080 /health
    """
    return _util("saltcd_minion.status")(__salt__, __grains__, name, port, path, host, timeout=timeout,
                                         check=check, command=command)


def statuses(probes):
    """``status`` of several containers in one call: ``probes`` is a list of
    ``{name, check, port, path, host, command}``; returns ``{name: info}``.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd.statuses '[{name: web, check: http, port: 8080, path: /health}]'
    """
    return _util("saltcd_minion.statuses")(__salt__, __grains__, probes)


def wait_healthy(url, container=None, timeout=30, interval=1, settle=0, status=200, check="http",
                 command=None):
    """Wait until the container is healthy by ``check`` (see ``health_probe``),
    then stay healthy for ``settle`` s; fail fast when ``container`` has exited.
    The health gate of both deploy strategies: ``{"healthy": bool, "comment": text}``.

    CLI Example:

    .. code-block:: bash

        salt '*' saltcd.wait_healthy http://127.0.0.1:8080/health container=web settle=5
    """
    return _util("saltcd_minion.wait_healthy")(__salt__, url, container=container, timeout=timeout,
                                               interval=interval, settle=settle, status=status, check=check,
                                               command=command)

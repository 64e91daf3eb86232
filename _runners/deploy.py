"""
saltcd: health-gated rolling deployments of Docker images, driven by events.

Configure apps under ``saltcd:`` in the master config (see
``config.example.yaml``), point the reactor at ``reactor/*.sls``, and either
push an image tag or run a rollout by hand:

.. code-block:: bash

    salt-run deploy.rollout app=web env=dev
    salt-run deploy.rollout app=web env=dev test=True
    salt-run deploy.status
    salt-run deploy.history app=web env=dev limit=5

Each function's steps are saltcd.master.runner's: this module documents them
and hands it Salt's dunders.
"""

from saltcd.master import runner

__virtualname__ = "deploy"


def __virtual__():
    return __virtualname__


def _call():
    """This call's Salt context, for saltcd.master.runner."""
    dunders = globals()
    return runner.Call(__opts__, __context__, dunders.get("__jid_event__"),  # noqa: F821 - Salt's dunders
                       dunders.get("__user__"), __virtualname__)


def accept(tag, data):
    """
    Take a push event (registry webhook, a CI minion's ``saltcd/push``), persist
    its requests and start their rollouts in the background. Called by the
    reactor with the event's tag and data; not meant to be run by hand (a push
    not wrapped as a minion's is refused): operators use ``deploy.rollout``.

    CLI Example (what to run instead):

    .. code-block:: bash

        salt-run deploy.rollout app=web env=dev
    """
    return _call().accept(tag, data)


def drain(app, env):
    """
    Run the pending requests of one app/env (newest digest wins) while holding
    its lock; returns at once if another process holds it.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.drain app=web env=dev
    """
    return _call().drain(app, env)


def rollout(app, env, test=False, force=False):
    """
    Roll the image tag of ``env`` out to ``app``'s minions now, in gated batches.
    With ``test=True``, only show the plan: batches, minions, old -> new digest.
    Outside the environment's deploy ``windows`` it is refused (saying when the
    next window opens) unless ``force=True``; its ``cooldown`` does not apply.

    Exit code: 0 when it succeeded, was unchanged or (``test=True``) planned;
    1 when it failed, rolled back, paused, or its digest could not be resolved
    (also with ``test=True``); 2 when another rollout of this app/env is
    running: the request is queued and runs next (``status: queued``).

    CLI Example:

    .. code-block:: bash

        salt-run deploy.rollout app=web env=dev
        salt-run deploy.rollout app=web env=dev test=True
        salt-run deploy.rollout app=web env=prod force=True
    """
    return _call().rollout(app, env, test, force)


def rollback(app, env):
    """
    Roll ``env`` back by hand, through the same gated batches: to its last good
    digest if a rollout left it mixed, else to the good digest before that.
    Deploy windows and cooldown never hold a rollback: it is the way out.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.rollback app=web env=prod
    """
    return _call().rollback(app, env)


def approve(app, env, digest=None, force=False, request=None):
    """
    Deploy the push waiting in a manual environment (prod by default), exactly
    the digest the registry had when it was pushed (``deploy.status`` shows
    it), recording who approved it; the other waiting pushes are recorded as
    superseded. With several pushes waiting it is refused (and lists them)
    unless ``request=`` (a push's id) or ``digest=`` says which. Refused when
    the tag has moved since, unless ``digest=`` names the one to deploy (a
    waiting push's digest or the tag's digest now); and outside the deploy
    windows unless ``force=True``.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.approve app=web env=prod
        salt-run deploy.approve app=web env=prod digest=sha256:0123...
        salt-run deploy.approve app=web env=prod request=20261126T093633.123456Z-1a2b3c
    """
    return _call().approve(app, env, digest, force, request)


def promote(app, env_from=None, env_to=None, **kwargs):
    """
    Deploy to ``to`` exactly the digest that last completed a healthy rollout in
    ``from`` (by digest, not by re-reading a moving tag). Refuses when ``from``
    has none. Outside ``to``'s deploy windows it is refused unless ``force=True``.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.promote app=web from=qa to=prod
    """
    # `from` is a Python keyword: it arrives in kwargs.
    return _call().promote(app, env_from or kwargs.get("from"), env_to or kwargs.get("to"), kwargs.get("force"))


def rejections(limit=20, minutes=60):
    """
    Rejected events: the newest ``limit`` in full (when, from where, why; never a
    secret), and counts per source and reason, in total and per minute over the
    last ``minutes`` (older ones are kept as counts only, see ``rejections_keep``).

    CLI Example:

    .. code-block:: bash

        salt-run deploy.rejections limit=5
    """
    return _call().rejections(limit, minutes)


def resume():
    """
    Start the rollouts of every app/env that has pending requests (after a master
    restart, for instance); then queue and start one for every auto environment
    whose tag moved at the registry without saltcd hearing of it (a lost
    notification; a manual environment's is recorded for approval instead).
    Requests held by a cooldown or a deploy window start here once their time
    has come. The shipped master config runs it every 30 s.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.resume
    """
    return _call().resume()


def status(app=None, env=None):
    """
    Live from the minions: the digest each one runs, whether it is healthy, and
    whether each environment is converged on its last good digest; queued
    requests (with when they run, if a cooldown or window holds them) and
    pushes awaiting approval (the digest an approval would deploy).

    CLI Example:

    .. code-block:: bash

        salt-run deploy.status
        salt-run deploy.status app=web env=prod
    """
    return _call().status(app, env)


def history(app, env, limit=20, detail=False, rollout=None):  # pylint: disable=redefined-outer-name
    """
    Rollouts of one app/env, newest first: trigger, from -> to digest, times,
    per-batch per-minion results and outcome. A person sees one line per
    rollout; ``detail=True`` (or ``rollout=<id>``, that one only) adds the
    per-batch per-minion lines. ``--out=json`` gives the full records.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.history app=web env=dev limit=5
        salt-run deploy.history app=web env=dev detail=True
        salt-run deploy.history app=web env=dev rollout=20261126T220000.000000Z-abcdef
    """
    return _call().history(app, env, limit, detail, rollout)


def watch(app, env, timeout=1800):
    """
    Follow the running (or else the next) rollout of ``app``/``env`` from any
    shell: its progress as batches complete, then its outcome; the exit code is
    non-zero unless it succeeded. Gives up after ``timeout`` seconds. What it
    shows is read from saltcd's rollout record; the events are only the cue.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.watch app=web env=dev
    """
    return _call().watch(app, env, timeout)


def report(app, env, rollout=None, path=None, limit=20):  # pylint: disable=redefined-outer-name
    """
    Write a self-contained HTML page of one rollout (the newest by default): a
    timeline of its batches per minion with the outcome, and the environment's
    recent history. Returns the page's path (default: under the master's
    cachedir, ``saltcd-reports/``).

    CLI Example:

    .. code-block:: bash

        salt-run deploy.report app=web env=dev
        salt-run deploy.report app=web env=dev rollout=20261126T220000.000000Z-abcdef path=/tmp/web.html
    """
    return _call().report(app, env, rollout, path, limit)

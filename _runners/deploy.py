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

The logic lives in the ``saltcd`` Python package; this module only binds it to
the master (opts, cache, event bus, LocalClient).
"""

import logging
import time

from saltcd import binding, config, errors

log = logging.getLogger(__name__)

__virtualname__ = "deploy"


def __virtual__():
    return __virtualname__


_GOOD = ("succeeded", "unchanged", "planned")


def _nonzero(result):
    """Mark the job failed: `success` for orchestrate, `retcode` for salt-run's exit code."""
    __context__["retcode"] = 1
    return {**result, "retcode": 1}


def _fail(message):
    return _nonzero({"result": False, "error": message})


def _guarded(function):
    """function(controller), with saltcd's own errors (invalid configuration, unknown
    app/env, nothing to promote...) turned into a clear, non-zero return. Anything
    else is a bug: it propagates with its traceback rather than pass for "not found"."""
    try:
        with binding.controller_for(__opts__, globals().get("__jid_event__")) as ctl:
            return function(ctl)
    except config.ConfigError as exc:
        return _fail(f"invalid saltcd configuration: {exc}")
    except errors.SaltcdError as exc:
        return _fail(str(exc))


def _start_drain(ctl, app, env):
    """Ask the saltcd_drains engine to run app/env's queue; the caller returns now.

    The engine is a long-lived master process: no Python start-up per push, and
    a burst of pushes to one app/env costs one worker, not one process each.
    """
    tag = binding.drain_tag(app, env)
    ctl.reporter.fire(tag, {"app": app, "env": env})
    return {"requested": tag}


def accept(tag, data):
    """
    Take a push event (registry webhook, CI ``saltcd/push``, operator), persist
    its requests and start their rollouts in the background. Called by the reactor.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.accept saltcd/push '{"repository": "127.0.0.1:5000/saltcd/web", "tag": "dev"}'
    """

    def run(ctl):
        verdict = ctl.accept(tag, data)
        started = []
        runnable = [r for r in verdict["accepted"] if not r["awaiting_approval"]]
        for pair in sorted({(r["app"], r["env"]) for r in runnable}):
            started.append({"app": pair[0], "env": pair[1], **_start_drain(ctl, *pair)})
        verdict["drains"] = started
        return _nonzero(verdict) if verdict["rejected"] else verdict

    return _guarded(run)


def drain(app, env):
    """
    Run the pending requests of one app/env (newest digest wins) while holding
    its lock; returns at once if another process holds it.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.drain app=web env=dev
    """
    return _guarded(lambda ctl: _mark_outcome(ctl.drain(app, env)))


def _mark_outcome(drained):
    """Mark the job failed when the last rollout it ran did not succeed."""
    last = drained["rollouts"][-1] if drained["rollouts"] else None
    return _nonzero(drained) if last and last["status"] not in _GOOD else drained


def _own_rollout(drained, request):
    """The record of `request` among what a drain ran, non-zero unless it went well."""
    mine = [r for r in drained["rollouts"] if r.get("request") == request["id"]]
    if not mine:
        return {"status": "queued", "request": request["id"],
                "reason": "another rollout of this app/env is running; this request runs next"}
    return mine[-1] if mine[-1]["status"] in _GOOD else _nonzero(mine[-1])


def rollout(app, env, test=False, force=False):
    """
    Roll the image tag of ``env`` out to ``app``'s minions now, in gated batches.
    With ``test=True``, only show the plan: batches, minions, old -> new digest.
    Outside the environment's deploy ``windows`` it is refused (saying when the
    next window opens) unless ``force=True``; its ``cooldown`` does not apply.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.rollout app=web env=dev
        salt-run deploy.rollout app=web env=dev test=True
        salt-run deploy.rollout app=web env=prod force=True
    """

    def run(ctl):
        if test:
            plan = ctl.plan(app, env)
            return plan if plan["status"] in _GOOD else _nonzero(plan)
        request = ctl.request(app, env, user=_user(), force=_flag(force))
        return _own_rollout(ctl.drain(app, env), request)

    return _guarded(run)


def rollback(app, env):
    """
    Roll ``env`` back by hand, through the same gated batches: to its last good
    digest if a rollout left it mixed, else to the good digest before that.
    Deploy windows and cooldown never hold a rollback: it is the way out.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.rollback app=web env=prod
    """

    def run(ctl):
        digest, why = ctl.rollback_target(app, env)
        request = ctl.request(app, env, user=_user(), kind="rollback",
                              digest=digest, reason=f"manual rollback to {digest[:19]}: {why}")
        return _own_rollout(ctl.drain(app, env), request)

    return _guarded(run)


def approve(app, env, digest=None, force=False):
    """
    Deploy the newest push waiting in a manual environment (prod by default),
    exactly the digest the registry had when it was pushed (``deploy.status``
    shows it), recording who approved it; older waiting pushes are recorded as
    superseded. Refused when the tag has moved since, unless ``digest=`` names
    the one to deploy (a waiting push's digest or the tag's digest now); and
    outside the deploy windows unless ``force=True``.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.approve app=web env=prod
        salt-run deploy.approve app=web env=prod digest=sha256:0123...
    """

    def run(ctl):
        request = ctl.approve(app, env, user=_user(), digest=digest, force=_flag(force))
        return _own_rollout(ctl.drain(app, env), request)

    return _guarded(run)


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
    source = env_from or kwargs.get("from")
    target = env_to or kwargs.get("to")
    if not source or not target:
        return _fail("promote needs from=<env> and to=<env>")

    def run(ctl):
        request = ctl.promote(app, source, target, user=_user(), force=_flag(kwargs.get("force")))
        return _own_rollout(ctl.drain(app, target), request)

    return _guarded(run)


def rejections(limit=20, minutes=60):
    """
    Rejected events: the newest ``limit`` in full (when, from where, why; never a
    secret), and counts per source and reason, in total and per minute over the
    last ``minutes`` (older ones are kept as counts only, see ``rejections_keep``).

    CLI Example:

    .. code-block:: bash

        salt-run deploy.rejections limit=5
    """

    def run(ctl):
        per_minute = ctl.records.rejection_counts()
        totals = {}
        for row in per_minute:
            totals[(row["source"], row["reason"])] = totals.get((row["source"], row["reason"]), 0) + row["count"]
        since = time.time() - int(minutes) * 60
        return {
            "recent": ctl.records.rejections(limit=int(limit)),
            "counted": [{"source": s, "reason": r, "count": n} for (s, r), n in sorted(totals.items())],
            "per_minute": [row for row in per_minute if row["minute"] + 60 > since],
        }

    return _guarded(run)


def _flag(value):
    """`force=True` from the command line arrives as a bool, or a string from some callers."""
    return value is True or str(value).lower() in ("true", "1", "yes")


def _user():
    """Who runs this function, for the record: the job's user (`sudo_<name>` under sudo)."""
    return globals().get("__user__") or __opts__.get("user") or "operator"


def resume():
    """
    Start the rollouts of every app/env that has pending requests (after a master
    restart, for instance), after queueing one for every auto environment whose
    tag moved at the registry without saltcd hearing of it (a lost
    notification). Requests held by a cooldown or a deploy window start here
    once their time has come. The shipped master config runs it every 30 s.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.resume
    """

    def run(ctl):
        reconciled = [{k: r[k] for k in ("id", "app", "env", "tag", "reason")} for r in ctl.reconcile()]
        pairs = ctl.due_pairs()
        return {"reconciled": reconciled,
                "started": [{"app": a, "env": e, **_start_drain(ctl, a, e)} for a, e in pairs]}

    return _guarded(run)


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
    return _guarded(lambda ctl: ctl.status(app, env))


def history(app, env, limit=20):
    """
    Rollouts of one app/env, newest first: trigger, from -> to digest, times,
    per-batch per-minion results and outcome.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.history app=web env=dev limit=5
    """
    return _guarded(lambda ctl: ctl.history(app, env, limit))

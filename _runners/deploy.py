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
import os
import time

from saltcd import config, errors, vocabulary
from saltcd.master import wiring

log = logging.getLogger(__name__)

__virtualname__ = "deploy"


def __virtual__():
    return __virtualname__




def _nonzero(result, code=1):
    """Mark the job failed (or queued, QUEUED_RETCODE): `success` for orchestrate,
    `retcode` for salt-run's exit code."""
    __context__["retcode"] = code
    return {**result, "retcode": code}


def _fail(message):
    return _nonzero({"result": False, "error": message})


# What a person running `salt-run deploy.<function>` sees: the `saltcd` outputter's view.
_VIEWS = {"status": "status", "history": "history", "rollout": "rollout", "rollback": "rollout",
          "approve": "rollout", "promote": "rollout", "watch": "rollout", "report": "report"}


def _person_view():
    """The view when salt-run runs this very function with no --out, else None.

    Only then: orchestrate, the reactor, salt-api and `--out=json|yaml` get the
    return exactly as it is, while a person gets tables (the runner's own
    `__outputter__` is not honoured by RunnerClient; a return's `outputter` key is).
    """
    fun = str(__opts__.get("fun") or "")
    if __opts__.get("output") or not fun.startswith(f"{__virtualname__}."):
        return None
    return _VIEWS.get(fun.split(".", 1)[1])


def _for_a_person(result, **options):
    """`result` wrapped for the `saltcd` outputter when a person looks (see _person_view)."""
    view = _person_view()
    if view is None:
        return result
    shown = {"outputter": "saltcd", "view": view, "shown": result, **options}
    if isinstance(result, dict) and "retcode" in result:
        shown["retcode"] = result["retcode"]  # salt-run's exit code
    return shown


class _ProgressForAPerson:
    """__jid_event__ whose progress lines salt-run prints with the `saltcd` outputter."""

    def __init__(self, events):
        self.events = events

    def fire_event(self, data, tag):
        return self.events.fire_event({**data, "outputter": "saltcd"}, tag)


def _progress_events():
    events = globals().get("__jid_event__")
    return _ProgressForAPerson(events) if events is not None and _person_view() else events


def _guarded(function, **view_options):
    """_guarded_return(function), shown by the `saltcd` outputter to a person."""
    return _for_a_person(_guarded_return(function), **view_options)


def _guarded_return(function):
    """function(controller), with saltcd's own errors (invalid configuration, unknown
    app/env, nothing to promote...) turned into a clear, non-zero return. Anything
    else is a bug: it propagates with its traceback rather than pass for "not found"."""
    try:
        with wiring.controller_for(__opts__, _progress_events()) as ctl:
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
    tag = vocabulary.queue_tag(app, env)
    ctl.reporter.fire(tag, {"app": app, "env": env})
    return {"requested": tag}


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
    return _nonzero(drained) if last and last["status"] not in vocabulary.GOOD else drained


# salt-run's exit code when the request was queued behind a running rollout of
# the same app/env: not a failure, not done yet (0: done and good, 1: failed).
QUEUED_RETCODE = 2


def _own_rollout(drained, request):
    """The record of `request` among what a drain ran, non-zero unless it went well
    (QUEUED_RETCODE when another process holds the app/env and runs it next)."""
    mine = [r for r in drained["rollouts"] if r.get("request") == request["id"]]
    if not mine:
        return _nonzero({"status": "queued", "request": request["id"],
                         "reason": "another rollout of this app/env is running; this request runs next "
                                   "(deploy.history shows its outcome)"}, QUEUED_RETCODE)
    return mine[-1] if mine[-1]["status"] in vocabulary.GOOD else _nonzero(mine[-1])


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

    def run(ctl):
        if test:
            plan = ctl.plan(app, env)
            return plan if plan["status"] in vocabulary.GOOD else _nonzero(plan)
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

    def run(ctl):
        approved = ctl.approve(app, env, user=_user(), digest=digest, force=_flag(force), request=request)
        return _own_rollout(ctl.drain(app, env), approved)

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
    restart, for instance); then queue and start one for every auto environment
    whose tag moved at the registry without saltcd hearing of it (a lost
    notification; a manual environment's is recorded for approval instead).
    Requests held by a cooldown or a deploy window start here once their time
    has come. The shipped master config runs it every 30 s.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.resume
    """

    return _guarded(lambda ctl: ctl.resume(lambda app, env: _start_drain(ctl, app, env)))


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

    def run(ctl):
        if rollout:
            record = ctl.records.rollout(app, env, rollout)
            return [record] if record else _fail(f"{app}/{env} has no rollout {rollout!r}")
        return ctl.history(app, env, limit)

    return _guarded(run, detail=_flag(detail) or bool(rollout))


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
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    from saltcd.present import follow  # pylint: disable=import-outside-toplevel

    def run(ctl):
        ctl.settings.deployment(app, env)  # unknown app/env: a clear error
        prefix = vocabulary.deploy_tag(app, env)
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True) as bus:
            bus.connect_pub()  # subscribed before the store is read: no step falls in between
            record = follow.follow(lambda: bus.get_event(wait=1, tag=prefix, full=True, auto_reconnect=True),
                                   ctl.records, ctl.reporter.progress, app, env, float(timeout))
        if record is None or record.get("status") == "running":
            return _nonzero({"status": "timeout", "app": app, "env": env, "rollout": record and record["id"],
                             "reason": f"no outcome within {timeout} s; the rollout goes on"})
        return record if record.get("status") in vocabulary.GOOD else _nonzero(record)

    return _guarded(run)


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
    from saltcd.present import report as pages  # pylint: disable=import-outside-toplevel

    def run(ctl):
        recent = ctl.history(app, env, limit)
        chosen = ctl.records.rollout(app, env, rollout) if rollout else pages.newest_run(recent)
        if chosen is None:
            return _fail(f"{app}/{env} has no rollout {rollout!r}" if rollout else f"{app}/{env} has no rollout yet")
        target = path or os.path.join(__opts__["cachedir"], "saltcd-reports", f"{app}-{env}-{chosen['id']}.html")
        pages.write(target, chosen, recent)
        return {"path": target, "rollout": chosen["id"], "app": app, "env": env, "status": chosen.get("status")}

    return _guarded(run)

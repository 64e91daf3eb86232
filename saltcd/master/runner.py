"""What the `deploy` runner's functions do, given one call's Salt context.

_runners/deploy.py only documents each function (its CLI examples are what
`salt-run -d deploy` shows) and hands Salt's dunders to a :class:`Call`. Here:
saltcd's errors become a clear, non-zero return; the return goes to the
`saltcd` outputter when a person runs salt-run, as it is to everyone else;
and each function's steps.
"""

import os
import time

from saltcd import config, errors, vocabulary
from saltcd.master import wiring

# salt-run's exit code when the request was queued behind a running rollout of
# the same app/env: not a failure, not done yet (0: done and good, 1: failed).
QUEUED_RETCODE = 2

# What a person running `salt-run deploy.<function>` sees: the `saltcd` outputter's view.
VIEWS = {"status": "status", "history": "history", "rollout": "rollout", "rollback": "rollout",
         "approve": "rollout", "promote": "rollout", "watch": "rollout", "report": "report"}


def flag(value):
    """`force=True` from the command line arrives as a bool, or a string from some callers."""
    return value is True or str(value).lower() in ("true", "1", "yes")


class _ProgressForAPerson:
    """__jid_event__ whose progress lines salt-run prints with the `saltcd` outputter."""

    def __init__(self, events):
        self.events = events

    def fire_event(self, data, tag):
        return self.events.fire_event({**data, "outputter": "saltcd"}, tag)


class Call:
    """One call of a runner function: the master's opts, the job's `__context__`
    (its `retcode`), its `__jid_event__` (progress) and who runs it."""

    def __init__(self, opts, context, jid_event=None, user=None, runner="deploy"):
        self.opts = opts
        self.context = context
        self.jid_event = jid_event
        self.user = user or opts.get("user") or "operator"
        self.runner = runner

    # -- how a return is made --------------------------------------------

    def nonzero(self, result, code=1):
        """Mark the job failed (or queued, QUEUED_RETCODE): `success` for orchestrate,
        `retcode` for salt-run's exit code."""
        self.context["retcode"] = code
        return {**result, "retcode": code}

    def fail(self, message):
        return self.nonzero({"result": False, "error": message})

    def person_view(self):
        """The view when salt-run runs this very function with no --out, else None.

        Only then: orchestrate, the reactor, salt-api and `--out=json|yaml` get the
        return exactly as it is, while a person gets tables (the runner's own
        `__outputter__` is not honoured by RunnerClient; a return's `outputter` key is).
        """
        fun = str(self.opts.get("fun") or "")
        if self.opts.get("output") or not fun.startswith(f"{self.runner}."):
            return None
        return VIEWS.get(fun.split(".", 1)[1])

    def for_a_person(self, result, **options):
        """`result` wrapped for the `saltcd` outputter when a person looks (see person_view)."""
        view = self.person_view()
        if view is None:
            return result
        shown = {"outputter": "saltcd", "view": view, "shown": result, **options}
        if isinstance(result, dict) and "retcode" in result:
            shown["retcode"] = result["retcode"]  # salt-run's exit code
        return shown

    def guarded(self, function, **view_options):
        """guarded_return(function), shown by the `saltcd` outputter to a person."""
        return self.for_a_person(self.guarded_return(function), **view_options)

    def guarded_return(self, function):
        """function(controller), with saltcd's own errors (invalid configuration, unknown
        app/env, nothing to promote...) turned into a clear, non-zero return. Anything
        else is a bug: it propagates with its traceback rather than pass for "not found"."""
        events = self.jid_event
        if events is not None and self.person_view():
            events = _ProgressForAPerson(events)
        try:
            with wiring.controller_for(self.opts, events) as ctl:
                return function(ctl)
        except config.ConfigError as exc:
            return self.fail(f"invalid saltcd configuration: {exc}")
        except errors.SaltcdError as exc:
            return self.fail(str(exc))

    def mark_outcome(self, drained):
        """Mark the job failed when the last rollout it ran did not succeed."""
        last = drained["rollouts"][-1] if drained["rollouts"] else None
        return self.nonzero(drained) if last and last["status"] not in vocabulary.GOOD else drained

    def own_rollout(self, drained, request):
        """The record of `request` among what a drain ran, non-zero unless it went well
        (QUEUED_RETCODE when another process holds the app/env and runs it next)."""
        mine = [r for r in drained["rollouts"] if r.get("request") == request["id"]]
        if not mine:
            return self.nonzero({"status": "queued", "request": request["id"],
                                 "reason": "another rollout of this app/env is running; this request runs next "
                                           "(deploy.history shows its outcome)"}, QUEUED_RETCODE)
        return mine[-1] if mine[-1]["status"] in vocabulary.GOOD else self.nonzero(mine[-1])

    # -- the functions ---------------------------------------------------

    def accept(self, tag, data):
        def run(ctl):
            verdict = ctl.accept(tag, data)
            runnable = [r for r in verdict["accepted"] if not r["awaiting_approval"]]
            verdict["drains"] = [{"app": app, "env": env, **start_queue(ctl, app, env)}
                                 for app, env in sorted({(r["app"], r["env"]) for r in runnable})]
            return self.nonzero(verdict) if verdict["rejected"] else verdict

        return self.guarded(run)

    def drain(self, app, env):
        return self.guarded(lambda ctl: self.mark_outcome(ctl.run_queue(app, env)))

    def rollout(self, app, env, test=False, force=False):
        def run(ctl):
            if test:
                plan = ctl.plan(app, env)
                return plan if plan["status"] in vocabulary.GOOD else self.nonzero(plan)
            request = ctl.request(app, env, user=self.user, force=flag(force))
            return self.own_rollout(ctl.run_queue(app, env), request)

        return self.guarded(run)

    def rollback(self, app, env):
        def run(ctl):
            digest, why = ctl.rollback_target(app, env)
            request = ctl.request(app, env, user=self.user, kind="rollback",
                                  digest=digest, reason=f"manual rollback to {digest[:19]}: {why}")
            return self.own_rollout(ctl.run_queue(app, env), request)

        return self.guarded(run)

    def approve(self, app, env, digest=None, force=False, request=None):
        def run(ctl):
            approved = ctl.approve(app, env, user=self.user, digest=digest, force=flag(force), request=request)
            return self.own_rollout(ctl.run_queue(app, env), approved)

        return self.guarded(run)

    def promote(self, app, source, target, force=False):
        if not source or not target:
            return self.fail("promote needs from=<env> and to=<env>")

        def run(ctl):
            request = ctl.promote(app, source, target, user=self.user, force=flag(force))
            return self.own_rollout(ctl.run_queue(app, target), request)

        return self.guarded(run)

    def rejections(self, limit=20, minutes=60):
        def run(ctl):
            per_minute = ctl.records.rejection_counts()
            totals = {}
            for row in per_minute:
                key = (row["source"], row["reason"])
                totals[key] = totals.get(key, 0) + row["count"]
            since = time.time() - int(minutes) * 60
            return {
                "recent": ctl.records.rejections(limit=int(limit)),
                "counted": [{"source": s, "reason": r, "count": n} for (s, r), n in sorted(totals.items())],
                "per_minute": [row for row in per_minute if row["minute"] + 60 > since],
            }

        return self.guarded(run)

    def resume(self):
        return self.guarded(lambda ctl: ctl.resume(lambda app, env: start_queue(ctl, app, env)))

    def status(self, app=None, env=None):
        return self.guarded(lambda ctl: ctl.status(app, env))

    def history(self, app, env, limit=20, detail=False, rollout=None):
        def run(ctl):
            if rollout:
                record = ctl.records.rollout(app, env, rollout)
                return [record] if record else self.fail(f"{app}/{env} has no rollout {rollout!r}")
            return ctl.history(app, env, limit)

        return self.guarded(run, detail=flag(detail) or bool(rollout))

    def watch(self, app, env, timeout=1800):
        import salt.utils.event  # pylint: disable=import-outside-toplevel

        from saltcd.present import follow  # pylint: disable=import-outside-toplevel

        def run(ctl):
            ctl.settings.deployment(app, env)  # unknown app/env: a clear error
            prefix = vocabulary.deploy_tag(app, env)
            with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True) as bus:
                bus.connect_pub()  # subscribed before the store is read: no step falls in between
                record = follow.follow(lambda: bus.get_event(wait=1, tag=prefix, full=True, auto_reconnect=True),
                                       ctl.records, ctl.reporter.progress, app, env, float(timeout))
            if record is None or record.get("status") == "running":
                return self.nonzero({"status": "timeout", "app": app, "env": env, "rollout": record and record["id"],
                                     "reason": f"no outcome within {timeout} s; the rollout goes on"})
            return record if record.get("status") in vocabulary.GOOD else self.nonzero(record)

        return self.guarded(run)

    def report(self, app, env, rollout=None, path=None, limit=20):
        from saltcd.present import report as pages  # pylint: disable=import-outside-toplevel

        def run(ctl):
            recent = ctl.history(app, env, limit)
            chosen = ctl.records.rollout(app, env, rollout) if rollout else pages.newest_run(recent)
            if chosen is None:
                return self.fail(f"{app}/{env} has no rollout {rollout!r}" if rollout
                                 else f"{app}/{env} has no rollout yet")
            target = path or os.path.join(self.opts["cachedir"], "saltcd-reports", f"{app}-{env}-{chosen['id']}.html")
            pages.write(target, chosen, recent)
            return {"path": target, "rollout": chosen["id"], "app": app, "env": env, "status": chosen.get("status")}

        return self.guarded(run)


def start_queue(ctl, app, env):
    """Ask the saltcd_drains engine to run app/env's queue; the caller returns now.

    The engine is a long-lived master process: no Python start-up per push, and
    a burst of pushes to one app/env costs one worker, not one process each.
    """
    tag = vocabulary.queue_tag(app, env)
    ctl.reporter.fire(tag, {"app": app, "env": env})
    return {"requested": tag}

"""The rollout: one digest onto one environment, batch by batch, health-gated.

This module knows nothing about Salt's clients. It talks to a *fleet* (see
salt_fleet.SaltFleet for the real one) and reports through a *reporter*, so the
whole policy — plan, gate, failure budget, rollback — is tested with fakes and
runs unchanged against real minions.

A fleet provides:
- `targets(target, tgt_type) -> [minion ids]` — who should run the app;
- `inspect(minions, containers) -> {minion: {container: info} or None}` — what
  runs now (info: {"exists", "running", "digest", "spec", "id", "started_at"};
  None: no answer); `observe` below makes one view per minion of its roles;
- `apply(minions, pillar, timeout, test, limit, published) -> {minion: outcome or None}` —
  the deploy SLS, given up on after `limit` wall-clock seconds, calling
  `published()` (if given) once, right after the publish, whether or not the
  job went out (outcome:
  {"ok", "changed", "comment", "timed_out"}; None: no answer);
- `status(minions, checks) -> {minion: {container: info with "health"} or None}`
  — what runs now and one probe of each (container, Health) of `checks` (the watch).
A fleet may also provide `puller(pillar)` (saltcd.rollout.prepull): then the minions of
later batches pull the image while the first batches run.
A reporter provides `fire(tag, data)` (events) and `progress(text)`.
"""

import math
import time
import types

from saltcd import vocabulary
from saltcd.config import batches, container_spec
from saltcd.rollout import holder, prepull

NO_ANSWER = "no answer within the timeout"


class Interrupted(RuntimeError):
    """The master stopped answering under a rollout; its request stays pending."""


def finished_event(record):
    """(tag, data) of the `finished` event that closes `record`: every rollout
    ends with one, however it ended (run to the end, crashed, or its digest
    never resolved)."""
    return vocabulary.deploy_tag(record["app"], record["env"], "finished"), {
        "rollout": record["id"], "app": record["app"], "env": record["env"],
        "digest": record.get("to_digest"), "status": record["status"], "reason": record.get("reason"),
        "failed": record.get("failed_minions", []), "minions": record.get("minions", [])}


def failure_budget(max_failures, total):
    """How many minions may fail: a count, or a share of `total` rounded down."""
    if isinstance(max_failures, str) and max_failures.endswith("%"):
        return math.floor(total * int(max_failures[:-1]) / 100)
    return int(max_failures)


def short(digest):
    """`sha256:0123456789ab` — enough to tell digests apart in a log line."""
    return digest[:19] if digest else "none"


class Rollout:
    """Run one rollout and keep its record (a plain dict, saved through `save`)."""

    def __init__(self, deployment, digest, fleet, reporter, record, save=lambda record: None,
                 last_good=None, clock=time, specs=lambda spec_id: None, left_behind=None):
        self.deployment = deployment
        self.placement = {}  # role -> the minions its own target picks (targeted roles only)
        # The release is digest + spec; `specs(id)` finds an earlier spec (to say
        # what changed, and to roll back to it), None when it is not known.
        self.spec = deployment.spec()
        self.spec_id = deployment.spec_id
        self.specs = specs
        self.clock = clock  # monotonic() and sleep() of the watch; tests pass a fake
        # Where a minion goes back to when it ran nothing (or this digest) before.
        self.last_good = last_good
        # Minions an earlier rollout left behind: {minion: {"digest", "spec"}}, the
        # release each should run, which a rollback gives them rather than what
        # they ran (saltcd.queue.left_behind).
        self.left_behind = left_behind or {}
        self.digest = digest
        self.fleet = fleet
        self.reporter = reporter
        self.record = record
        self.save = save
        self.prepull = None  # the pulls ahead while they run (saltcd.rollout.prepull)
        self.record.update({"to_digest": digest, "to_spec": self.spec_id, "status": "running"})
        # A journal taken over from another master keeps what its batches did.
        self.record.setdefault("batches", [])
        self.record.setdefault("failed_minions", [])

    def _planned(self, info):
        """What the plan says of one minion, from what it runs now (`info`)."""
        change = not self._current(info)
        return {"from": (info or {}).get("digest"), "to": self.digest, "answered": info is not None,
                "change": change, **({"why": self._why(info)} if change else {})}

    def _current(self, info):
        """Do this minion's containers (see `observe`) run this rollout's release (digest and spec)?"""
        return runs(info, self.digest, self.spec_id)

    def _why(self, info):
        """Why a minion changes: a new digest, a role's container that is not up, or
        the spec (with what changed in it)."""
        if not info or info.get("digest") != self.digest:
            return "new digest"
        down = [name for name, part in (info.get("roles") or {}).items() if not part.get("running")]
        if down or not info.get("running"):
            return f"not running: {', '.join(down)}" if down else "not running"
        if info.get("gone"):
            return f"to remove: {', '.join(info['gone'])}"
        return "spec changed: " + ", ".join(
            container_spec.changes(self.specs(info.get("spec")) if info.get("spec") else None, self.spec))

    # helpers
    def _event(self, suffix, **data):
        payload = {"rollout": self.record["id"], "app": self.deployment.app,
                   "env": self.deployment.env, "digest": self.digest, **data}
        self.reporter.fire(vocabulary.deploy_tag(self.deployment.app, self.deployment.env, suffix), payload)

    def _finish(self, status, reason=None):
        """Close the record; every rollout ends with one `finished` event saying how."""
        self._end_prepull()
        self.record.update({"status": status, "ended": time.time()})
        if reason:
            self.record["reason"] = reason
        self.save(self.record)
        if status != "planned":
            self.reporter.fire(*finished_event(self.record))
        return self.record

    def _pillar(self, digest, spec=None, previous=None):
        """The deploy data of `digest` (with `spec`, else the app's own; `previous`:
        what each minion ran), tied to this rollout and the process running it:
        the ext_pillar serves it only while both last (saltcd.rollout.deploy_pillar)."""
        placed = self.placement if spec is None else placement(self.fleet, _spec_roles(spec),
                                                               self.record.get("minions", []))
        return holder.tie(self.deployment.pillar(digest, spec, placed, previous),
                          self.record["id"], self.record.get("holder"))

    # pulling ahead (saltcd.rollout.prepull)
    def _start_prepull(self, plan):
        """Start pulling on the minions of batch 2 on that will change (batch 1's
        own deploy pulls at once); each batch claims its minions (_run_batch)."""
        dep = self.deployment
        later = [m for step in plan[1:] for m, what in sorted(step["minions"].items()) if what["change"]]
        if not dep.prepull or not later or not hasattr(self.fleet, "puller"):
            return
        self.prepull = prepull.Prepull(lambda: self.fleet.puller(self._pillar(self.digest)), later,
                                       dep.prepull, dep.state_timeout, self.record,
                                       notify=lambda minion, result: self._event("pulled", minion=minion, **result))
        self.record["prepull"] = self.prepull.report()
        self.reporter.progress(f"{dep.app}/{dep.env}: pulling {short(self.digest)} ahead on "
                               f"{', '.join(later)} ({dep.prepull} at once)")
        self.prepull.start()

    def abandon(self):
        """After an exception escaped `run`: stop what still runs in the background
        (pulls ahead), so that the caller can close the record and move on."""
        self._end_prepull()

    def _end_prepull(self):
        """Stop pulling, withdraw what the pulls still hold, keep their results."""
        if self.prepull is None:
            return
        self.record["prepull"] = self.prepull.stop()
        self.prepull = None
        failed = sorted(m for m, r in self.record["prepull"]["minions"].items() if r.get("ok") is False)
        if failed:
            self.reporter.progress(f"{self.deployment.app}/{self.deployment.env}: the pull ahead "
                                   f"failed on {', '.join(failed)} (their batch pulled again)")

    # planning
    def plan(self, minions, before):
        """The batches with, per minion, what it runs now and whether it would change."""
        plan = []
        for number, batch in enumerate(batches.plan_batches(minions, self.deployment.batch), 1):
            plan.append({
                "number": number,
                "minions": {
                    minion: self._planned(before.get(minion))
                    for minion in batch
                },
            })
        return plan

    def run(self, test=False):
        """Plan, then (unless `test`) apply batch by batch; return the record.

        Only the first batch's minions are asked what they run before its job
        goes out; the rest are asked while it runs (`_ask_the_rest`), so the
        first state run does not wait for an answer from every minion of the
        environment (on a fleet of dozens, that answer is most of the wait).
        A plan (`test`) or a first batch with nothing to change asks everyone
        first: a plan shows every minion, and a no-op must find no work
        anywhere before it ends `unchanged`.
        """
        dep = self.deployment
        minions = sorted(self.fleet.targets(dep.target, dep.tgt_type))
        self.placement = placement(self.fleet, dep.roles, minions)
        if dep.has_roles:
            self.record["roles"] = [role.name for role in dep.roles]
        if self.placement:
            self.record["placement"] = {role: sorted(ms) for role, ms in self.placement.items()}
            minions = [m for m in minions if roles_on(dep, self.placement, m)]  # no role: nothing to run
        self.record["minions"] = minions
        if not minions:
            return self._finish("failed", f"target {dep.target!r} ({dep.tgt_type}) matches no minion"
                                + (" that any role's target picks" if self.placement else ""))
        first = batches.plan_batches(minions, dep.batch)[0]
        before = observe(self.fleet, dep, first, self.placement)
        rest = [m for m in minions if m not in first]
        if rest and (test or all(self._current(before.get(m)) for m in first)):
            before.update(observe(self.fleet, dep, rest, self.placement))
            rest = []
        self._learn(minions, before)
        hook_minion = dep.hooks.get("minion") or first[0]
        self.record["hooks"] = {kind: {"command": dep.hooks[kind], "minion": hook_minion}
                                for kind in vocabulary.HOOK_KINDS if dep.hooks.get(kind)}
        if test:
            return self._finish("planned")
        if all(self._current(before.get(m)) for m in minions):
            self.reporter.progress(
                f"{dep.app}/{dep.env}: every minion already runs {short(self.digest)}; nothing to do")
            return self._finish("unchanged")
        self.save(self.record)
        if not rest:
            self._begin()
        problem = self._hook("before", hook_minion, minions)
        if problem:
            return self._finish("failed", f"before hook failed on {hook_minion}: {problem}; nothing replaced")
        return self._batches(minions, before, hook_minion, rest=rest)

    def resume(self):
        """Go on with the rollout this record journals, begun by a master that died.

        Every step is idempotent (pull by digest, a container replaced only when it
        runs something else, the gate, the hooks as the docs require them), so
        the step that was in flight is run again: the before hook unless the
        journal says it passed, then the first batch without a result, then the
        rest. A rollback that had begun is run again whole. What each minion ran
        before comes from the journal, so a rollback restores that."""
        dep, record = self.deployment, self.record
        minions = record["minions"]
        self.placement = {role: set(ms) for role, ms in (record.get("placement") or {}).items()}
        before = {m: {"digest": record["from_digests"].get(m), "spec": (record.get("from_specs") or {}).get(m)}
                  for m in minions}
        hook_minion = (record.get("hooks", {}).get("before") or record.get("hooks", {}).get("after")
                       or {}).get("minion") or dep.hooks.get("minion") or minions[0]
        self._stop_stale(minions)
        rolled = [b for b in record["batches"] if b["kind"] == "rollback"]
        if rolled:
            record["batches"] = [b for b in record["batches"] if b["kind"] != "rollback"]
            return self._rollback(before, record.get("reason") or "taken over during its rollback")
        spent = len(record["failed_minions"]) > failure_budget(dep.max_failures, len(minions))
        if spent and FAILURE_POLICIES[dep.on_failure]:
            # The dead master had spent the budget, and died before its policy's first step.
            return self._stop(f"{len(record['failed_minions'])} minion(s) failed before the takeover: "
                              + ", ".join(record["failed_minions"]), before)
        if not record["batches"] and not record.get("hooks", {}).get("before", {}).get("ok"):
            problem = self._hook("before", hook_minion, minions)
            if problem:
                return self._finish("failed", f"before hook failed on {hook_minion}: {problem}; nothing replaced")
        return self._batches(minions, before, hook_minion, first=len(record["batches"]))

    def _stop_stale(self, minions):
        """Stop what the dead master still has running on the minions (its step in
        flight, its pulls ahead): Salt queues this master's steps behind them."""
        stop = getattr(self.fleet, "stop_stale", None)
        token = (self.record.get("holder") or {}).get("token")
        if stop is None or token is None:
            return
        stopped = stop(minions, self.deployment.app, self.deployment.env, token)
        if stopped and self.record.get("takeovers"):
            self.record["takeovers"][-1]["stopped"] = stopped

    def _batches(self, minions, before, hook_minion, first=0, rest=()):
        """The batches of the plan from number `first` on, the watch, the after
        hook, and the end: what `run` and `resume` share."""
        dep = self.deployment
        budget = failure_budget(dep.max_failures, len(minions))
        for number in range(first, len(self.record["plan"])):
            # The plan is read afresh each batch: `_ask_the_rest` completes it during the first.
            step = self.record["plan"][number]
            published = self._ask_the_rest(minions, rest, before) if number == 0 and rest else None
            outcome = self._run_batch(step, self.digest, published=published)
            self.record["failed_minions"].extend(outcome["failed"])
            if len(self.record["failed_minions"]) > budget and FAILURE_POLICIES[dep.on_failure]:
                return self._stop(f"batch {step['number']} failed on {_failures(outcome)}", before)
        if len(self.record["failed_minions"]) <= budget:
            problems = self._watch(minions)
            self.record["failed_minions"].extend(m for m in problems if m not in self.record["failed_minions"])
            if len(self.record["failed_minions"]) > budget and FAILURE_POLICIES[dep.on_failure]:
                return self._stop("watch after the last batch: " + "; ".join(
                    f"{m} {what}" for m, what in sorted(problems.items())), before)
        if len(self.record["failed_minions"]) <= budget:
            problem = self._hook("after", hook_minion, minions)
            if problem:
                reason = f"after hook failed on {hook_minion}: {problem}"
                if FAILURE_POLICIES[dep.on_failure]:
                    return self._stop(reason, before)
                return self._finish("failed", reason)
        failed = self.record["failed_minions"]
        status = "failed" if len(failed) > budget else "succeeded"
        if status == "succeeded":
            # A minion that did not answer (within the budget) still runs what it ran.
            self._leave_behind(self._silent(), lambda m: (self.digest, self.spec_id))
        return self._finish(status, f"{len(failed)} minion(s) failed: {', '.join(failed)}" if failed else None)

    def _silent(self):
        """The minions that did not answer in this record's rollout batches."""
        return sorted({m for b in self.record["batches"] if b["kind"] == "batch"
                       for m, result in b["minions"].items() if not result.get("answered", True)})

    def _leave_behind(self, minions, release):
        """Record the minions this rollout could not reach, and the release
        (`release(minion)`: (digest, spec id) or None) each should run: the
        controller keeps them, and `deploy.resume` brings each one there once it
        answers again (`converge`)."""
        left = {}
        for minion in minions:
            found = release(minion)
            if found:
                left[minion] = {"digest": found[0], "spec": found[1], "rollout": self.record["id"]}
        if left:
            self.record["left_behind"] = left

    def converge(self, minions, spec_id=None):
        """Bring `minions`, left behind by an earlier rollout (they did not answer
        it), to this record's digest with the spec `spec_id` (the app's own if
        None or no longer known): batch by batch, gated like a rollout. Nothing is
        rolled back: what they run is already wrong. Those still silent stay left
        behind; one that fails is reported (the record ends `failed`) and not
        tried again."""
        dep = self.deployment
        spec, spec_id = converge_spec(spec_id, self.spec_id, self.specs)
        if self.record.get("takeovers"):
            self._stop_stale(minions)  # the dead master's step would hold this one up
        self.placement = placement(self.fleet, dep.roles, minions)
        self.record.update({"minions": list(minions), "to_spec": spec_id,
                            "placement": {role: sorted(ms) for role, ms in self.placement.items()}})
        before = observe(self.fleet, dep, minions, self.placement)
        # A converge taken over keeps what the minions ran when it began.
        self.record.setdefault("from_digests", {m: (before.get(m) or {}).get("digest") for m in minions})
        self.record.setdefault("from_specs", {m: (before.get(m) or {}).get("spec") for m in minions})
        due = [m for m in minions if before.get(m) is not None and not runs(before[m], self.digest, spec_id)]
        self.save(self.record)
        done = sum(1 for b in self.record["batches"] if b["kind"] == "converge")
        for number, batch in enumerate(batches.plan_batches(due, dep.batch) if due else [], done + 1):
            step = {"number": number, "minions": {m: {"from": before[m].get("digest"), "to": self.digest}
                                                  for m in batch}}
            self._run_batch(step, self.digest, kind="converge", spec=spec)
        # Each minion by its last word: silent now, or failed in its last batch.
        last = {m: result for b in self.record["batches"] if b["kind"] == "converge"
                for m, result in b["minions"].items()}
        silent = sorted({m for m in minions if before.get(m) is None}
                        | {m for m in due if not last[m].get("answered", True)})
        failed = sorted(m for m in due if m not in silent and not last[m]["ok"])
        brought = sorted(set(due) - set(silent) - set(failed))
        self.record["failed_minions"] = failed
        self._leave_behind(silent, lambda m: (self.digest, spec_id))
        reason = "; ".join(part for part in (
            f"brought {', '.join(brought)} to {short(self.digest)}" if brought else "",
            f"failed on {', '.join(failed)}" if failed else "",
            f"still not answering: {', '.join(silent)}" if silent else "") if part)
        return self._finish("failed" if failed else "converged", reason or "every minion already ran it")

    def _hook(self, kind, minion, minions):
        """Run release hook `kind` on `minion` if the app has one: None when it passed
        (or there is none), else why it failed. Recorded and announced either way."""
        if kind not in self.record.get("hooks", {}):
            return None
        if minion not in minions:
            problem = f"{minion} is not a minion of {self.deployment.env}"
            outcome = None
        else:
            self.reporter.progress(f"{self.deployment.app}/{self.deployment.env}: {kind} hook on {minion}")
            started = time.time()
            outcome = self.fleet.hook(minion, self._pillar(self.digest), kind, self.deployment.hooks["timeout"])
            problem = None if outcome and outcome.get("ok") else (
                (outcome or {}).get("comment") or NO_ANSWER)
            self.record["hooks"][kind].update(seconds=round(time.time() - started, 3))
        self.record["hooks"][kind].update(ok=problem is None, comment=(outcome or {}).get("comment") or problem)
        self.save(self.record)
        self._event("hook", kind=kind, minion=minion, ok=problem is None,
                    comment=self.record["hooks"][kind]["comment"])
        return problem

    def _learn(self, minions, before):
        """Record what each minion runs (as far as asked) and the plan that follows."""
        self.record["from_digests"] = {m: (before.get(m) or {}).get("digest") for m in minions}
        self.record["from_specs"] = {m: (before.get(m) or {}).get("spec") for m in minions}
        self.record["plan"] = self.plan(minions, before)

    def _begin(self):
        """Every minion has answered: say the rollout started, and pull ahead."""
        self._event("started", minions=self.record["minions"],
                    batches=[sorted(b["minions"]) for b in self.record["plan"]],
                    from_digests=self.record["from_digests"])
        self._start_prepull(self.record["plan"])

    def _ask_the_rest(self, minions, rest, before):
        """What the first batch's `apply` calls once its job is out: ask the other
        minions what they run (`before` gets their answers, for the plan and any
        rollback), then begin. The first batch's returns wait on the event bus
        meanwhile."""
        def ask():
            before.update(observe(self.fleet, self.deployment, rest, self.placement))
            self._learn(minions, before)
            self.save(self.record)
            self._begin()
        return ask

    def _run_batch(self, step, digest, kind="batch", published=None, spec=None):
        """Apply one batch (of `digest` with `spec`, else the app's) and gate on its
        health; record and report the results (`published`: see `_ask_the_rest`)."""
        dep = self.deployment
        batch = sorted(step["minions"])
        self.reporter.progress(f"{dep.app}/{dep.env} {kind} {step['number']}: {', '.join(batch)} -> {short(digest)}")
        started = time.time()
        if self.prepull is not None:
            self.prepull.claim(batch)  # the batch owns these minions' deploy data now
        previous = {m: step["minions"][m]["from"] for m in batch}
        results = self.fleet.apply(batch, self._pillar(digest, spec, previous), dep.state_timeout, False,
                                   limit=dep.batch_deadline, published=published)
        minions = {}
        for minion in batch:
            result = results.get(minion)
            answered = result is not None
            if not answered:
                result = {"ok": False, "changed": False, "comment": NO_ANSWER}
            minions[minion] = {
                "from": step["minions"][minion]["from"],
                "to": digest,
                "answered": answered,
                "ok": bool(result["ok"]),
                "changed": bool(result["changed"]),
                "comment": result["comment"],
                "timed_out": bool(result.get("timed_out")),
            }
            state = "healthy" if result["ok"] else "FAILED"
            self.reporter.progress(
                f"  {minion}: {short(minions[minion]['from'])} -> {short(digest)} "
                f"{'replaced' if result['changed'] else 'unchanged'}, {state}"
                + ("" if result["ok"] else f" ({result['comment']})")
            )
        failed = [m for m in batch if not minions[m]["ok"]]
        timed_out = [m for m in batch if minions[m]["timed_out"]]
        entry = {"kind": kind, "number": step["number"], "started": started,
                 "ended": time.time(), "minions": minions, "failed": failed,
                 "timed_out": timed_out, "deadline": dep.batch_deadline}
        self.record["batches"].append(entry)
        self.save(self.record)
        self._event(kind, number=step["number"], minions=minions, failed=failed,
                    healthy=not failed, to_digest=digest, timed_out=timed_out,
                    deadline=dep.batch_deadline)
        return entry

    def _watch(self, minions):
        """Watch the whole environment for `watch_seconds` after the last batch.

        Polls `fleet.status` every health interval; returns {minion: what went
        wrong} for containers that exited, restarted, were replaced or failed
        their health probe (a minion that does not answer Salt is not held
        against its container). Recorded as `watch` and reported as an event.
        """
        dep = self.deployment
        seconds = dep.watch_seconds
        if not seconds:
            return {}
        self.reporter.progress(f"{dep.app}/{dep.env}: watching {', '.join(minions)} for {seconds:g} s")
        started, ends = time.time(), self.clock.monotonic() + seconds
        first, problems = {}, {}
        checks = [(role.container, role.health) for role in dep.roles]
        while True:
            for minion, infos in self.fleet.status(minions, checks).items():
                for role in roles_on(dep, self.placement, minion) if infos is not None else ():
                    info = infos.get(role.container) or {"exists": False}
                    problem = watch_problem(first.setdefault((minion, role.container), info), info)
                    if problem and minion not in problems:
                        problems[minion] = f"{role.name}: {problem}" if role.name else problem
            left = ends - self.clock.monotonic()
            if problems or left <= 0:
                break
            self.clock.sleep(min(dep.health.interval, left))
        outcome = "failed" if problems else "passed"
        self.record["watch"] = {"started": started, "ended": time.time(), "seconds": seconds,
                                "outcome": outcome, "problems": problems}
        self.save(self.record)
        self._event("watch", seconds=seconds, outcome=outcome, problems=problems)
        for minion, problem in sorted(problems.items()):
            self.reporter.progress(f"  {minion}: {problem}")
        return problems

    def _stop(self, reason, before):
        """The failure budget is spent: act on the deployment's failure policy."""
        dep = self.deployment
        failed = self.record["failed_minions"]
        self._event("failed", failed=failed, reason=reason, action=dep.on_failure)
        return FAILURE_POLICIES[dep.on_failure](self, before, reason)

    def _pause(self, before, reason):
        """Stop where we are: the changed minions keep the new digest, for a person to look at."""
        return self._finish("paused", reason + "; paused, nothing rolled back")

    def _previous_release(self, info):
        """(digest, spec id) a minion goes back to, or None: what it ran before, or
        the last good digest (with the current spec) when it ran nothing, or only
        this rollout's digest with no earlier spec to go back to."""
        previous, spec_id = info.get("digest"), info.get("spec")
        if previous and previous != self.digest:
            return previous, spec_id
        if previous and spec_id and spec_id != self.spec_id:
            return previous, spec_id  # a spec-only rollout: the same digest, the spec before
        if self.last_good and self.last_good != self.digest:
            return self.last_good, None
        return None

    def _release_before(self, minion, before):
        """The release a rollback gives `minion`: the one an earlier rollout left it
        behind for, else what it ran before (see _previous_release)."""
        owed = self.left_behind.get(minion)
        if owed:
            return owed["digest"], owed.get("spec")
        return self._previous_release(before.get(minion) or {})

    def _rollback(self, before, reason):
        """Give every minion touched by this rollout its previous digest back, gated."""
        # A minion that never answered cannot be reached to roll it back either:
        # report it instead of failing the rollback on it.
        touched, unreachable = [], []
        for batch in (b for b in self.record["batches"] if b["kind"] == "batch"):
            for minion, result in batch["minions"].items():
                (touched if result.get("answered", True) else unreachable).append(minion)
        if unreachable:
            # A minion restarted while its batch ran answers again by now: it may
            # run this rollout's digest (replaced before it died), so it goes back too.
            back = observe(self.fleet, self.deployment, unreachable, self.placement)
            touched += [m for m in unreachable if back.get(m) is not None]
            unreachable = [m for m in unreachable if back.get(m) is None]
        self.record["unreachable"] = sorted(unreachable)
        if unreachable:
            reason += f"; not answering, left as they are: {', '.join(sorted(unreachable))}"
        by_release, nowhere = {}, []
        for minion in touched:
            release = self._release_before(minion, before)
            if release:
                by_release.setdefault(release, []).append(minion)
            else:
                nowhere.append(minion)
        if nowhere:
            reason += f"; no earlier good digest for {', '.join(sorted(nowhere))}"
        unknown = sorted({s for _, s in by_release if s and self.specs(s) is None})
        if unknown:
            reason += f"; earlier spec(s) {', '.join(unknown)} not known, rolled back with the current one"
        # What each minion went back to: the history's answer to "which release, exactly".
        self.record["rolled_back_to"] = {m: {"digest": previous, "spec": spec_id or None}
                                         for (previous, spec_id), ms in by_release.items() for m in ms}
        still_failed = []
        for (previous, spec_id), minions in sorted(by_release.items(), key=lambda item: tuple(map(str, item[0]))):
            spec = self.specs(spec_id) if spec_id else None
            for number, batch in enumerate(batches.plan_batches(minions, self.deployment.batch), 1):
                step = {"number": number, "minions": {m: {"from": self.digest, "to": previous} for m in batch}}
                still_failed.extend(self._run_batch(step, previous, kind="rollback", spec=spec)["failed"])
        self.record["rollback_failed"] = still_failed + sorted(nowhere)
        # Those it could not reach or roll back (silent, or their Docker engine
        # down) go back once they can: `deploy.resume` converges them.
        self._leave_behind(sorted({*unreachable, *still_failed}), lambda m: self._release_before(m, before))
        status = "rolled_back" if not self.record["rollback_failed"] else "failed"
        self._event("rolled_back", status=status, minions=sorted(m for ms in by_release.values() for m in ms),
                    failed=still_failed, reason=reason)
        if still_failed:
            reason += f"; rollback failed on {', '.join(still_failed)}"
        elif by_release:
            reason += "; rolled back"
        return self._finish(status, reason)


# What a spent failure budget does (`on_failure`), by name: a method
# (rollout, before, reason) -> the finished record, or None to carry on with the
# next batch (the rollout then ends failed), for each name the configuration
# accepts (vocabulary.FAILURE_POLICIES).
FAILURE_POLICIES = {
    "rollback": Rollout._rollback,
    "pause": Rollout._pause,
    "continue": None,
}


def _failures(entry):
    """`dev-1 (Unhealthy: 404), dev-2 (...)`: who failed in a batch, and why."""
    return ", ".join(f"{m} ({entry['minions'][m]['comment']})" for m in entry["failed"])


def watch_problem(first, now):
    """What went wrong with a container between two looks at it, or None."""
    if not now.get("exists", True):
        return "lost its container"
    if not now.get("running"):
        return f"container exited (exit code {now.get('exit_code')})"
    if now.get("id") != first.get("id"):
        return f"container replaced ({(first.get('id') or '')[:12]} -> {(now.get('id') or '')[:12]})"
    if (now.get("started_at"), now.get("restart_count")) != (first.get("started_at"), first.get("restart_count")):
        return f"container restarted (restart count {first.get('restart_count')} -> {now.get('restart_count')})"
    health = now.get("health") or {}
    if not health.get("healthy"):
        return f"failed its health probe ({health.get('status') or health.get('error')})"
    return None


def converge_spec(spec_id, current_id, specs):
    """(spec to deploy, its id) for a converge to `spec_id`: None and `current_id`
    (the app's own spec) when `spec_id` is None, the current one, or no longer
    kept (`specs(id)` is None); else that spec and `spec_id`."""
    spec = specs(spec_id) if spec_id and spec_id != current_id else None
    return spec, (spec_id if spec is not None else current_id)


def runs(info, digest, spec=None):
    """True if the inspected container (or a minion's roles, see `observe`) runs
    `digest` (with the spec fingerprinted `spec`, if given) and is up."""
    return (bool(info) and info.get("digest") == digest and bool(info.get("running"))
            and not info.get("mixed") and (spec is None or info.get("spec") == spec))


def placement(fleet, roles, minions):
    """{role: the minions of `minions` its own target picks}, for the roles (config
    Roles, or a spec's, see _spec_roles) that have one."""
    chosen = set(minions)
    return {role.name: sorted(chosen & set(fleet.targets(role.target, role.tgt_type)))
            for role in roles if role.target}


def _spec_roles(spec):
    """The roles of a recorded spec (name, target, tgt_type), as `placement` reads them."""
    return [types.SimpleNamespace(name=r.get("role"), target=r.get("target"), tgt_type=r.get("tgt_type", "glob"))
            for r in spec.get("roles") or []]


def roles_on(deployment, placed, minion):
    """The roles `minion` runs, in order: those without a target, and the targeted ones that picked it."""
    return [role for role in deployment.roles if role.name not in placed or minion in placed[role.name]]


def observe(fleet, deployment, minions, placed):
    """{minion: what it runs, as one view of all its roles' containers, or None (no answer)}.

    The view is the first role's container info, `running` only if every
    role's container is, `mixed` when they differ in digest or spec (so the
    minion is out of date), and per role (with roles) under `roles`. An app
    without roles sees its one container as it is."""
    names = deployment.containers
    out = {}
    for minion, infos in fleet.inspect(minions, names).items():
        if infos is None:
            out[minion] = None
            continue
        mine = roles_on(deployment, placed, minion)
        if not mine:  # a minion no role picks runs nothing of the app
            out[minion] = {"exists": False, "running": False, "digest": None}
            continue
        parts = {role.name: infos.get(role.container) or {"exists": False, "running": False, "digest": None}
                 for role in mine}
        view = dict(next((p for p in parts.values() if p.get("exists")), next(iter(parts.values()))))
        view["running"] = all(p.get("running") for p in parts.values())
        # The app's containers saltcd made that this minion no longer runs (a role
        # moved elsewhere, the app's own once it has roles): the release removes them.
        view["gone"] = [name for name in names if name not in {role.container for role in mine}
                        and (infos.get(name) or {}).get("exists") and (infos.get(name) or {}).get("spec")]
        view["mixed"] = len({(p.get("digest"), p.get("spec")) for p in parts.values()}) > 1 or bool(view["gone"])
        if deployment.has_roles:
            view["roles"] = {name: {k: p.get(k) for k in ("exists", "running", "digest", "spec")}
                             for name, p in parts.items()}
        out[minion] = view
    return out

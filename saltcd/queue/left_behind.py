"""Minions a rollout could not reach: brought to the release they should run
once they answer again.

A minion that does not answer during its batch (killed, restarted, cut off)
may still run anything: what it ran before, the new digest it was given just
before it went silent, or a half-finished switch. A rollout that then rolls
back cannot reach it either. The rollout records such minions in its record's
`left_behind` with the release each should run (the rollback's target, or the
rollout's own release when it succeeded without them); the controller keeps
them per app/env, and `deploy.resume` (every 30 s from the master's schedule)
asks them what they run. One that answers and runs something else gets a
`converge` request: a rollout of just those minions to that release, queued,
locked, fenced and recorded like any other (not held by cooldowns or windows:
like a rollback, it restores a release that ran).

A part of the queue's Controller (saltcd.queue.controller), as a mixin: it
uses the controller's settings, records, fleet and locks."""

import logging

from saltcd import rollout
from saltcd.ingress import intake

log = logging.getLogger(__name__)

KIND = "converge"  # the trigger kind of the requests made here
MAX_TRIES = 5  # converges of one minion that end with it silent again, before it is given up


def is_converge(request):
    return request["trigger"].get("kind") == KIND


class LeftBehind:
    """The controller's memory of unreached minions, and their catch-up."""

    def settle_left_behind(self, app, env, record):
        """After a rollout: forget the minions it reached, remember those it left
        behind. A converge reached every minion it was given, save those it left
        behind again (counted: after MAX_TRIES they are given up)."""
        converge = is_converge(record)
        if converge or record.get("status") == "unchanged":  # an unchanged one heard every minion
            reached = set(record.get("minions") or [])
        else:
            reached = {m for b in record.get("batches", []) for m, result in b["minions"].items()
                       if result.get("answered", True)}
        known = self.records.left_behind(app, env)
        kept = {m: release for m, release in known.items() if m not in reached}
        for minion, release in (record.get("left_behind") or {}).items():
            tries = known.get(minion, {}).get("tries", 0) + 1 if converge else 0
            if tries >= MAX_TRIES:
                log.warning("saltcd: %s/%s: %s answered, then went silent in %d converges: given up (a rollout "
                            "reaches it)", app, env, minion, tries)
                continue
            kept[minion] = {**release, "tries": tries}
        if kept != known:
            self.records.set_left_behind(app, env, kept)
        if record.get("left_behind"):
            log.warning("saltcd: %s/%s: rollout %s left %s behind (no answer, or not rolled back); "
                        "deploy.resume brings them to their release when it can", app, env, record["id"],
                        ", ".join(sorted(record["left_behind"])))

    def queue_left_behind(self):
        """Queue a `converge` request for every app/env with left-behind minions
        that answer again and run something other than their release; return them.
        An app/env with queued work that may run now is left alone: its rollout
        reaches them. One pass at a time (across masters with a shared store)."""
        made = []
        with self.locks.hold(KIND) as held:
            if held is None:
                return made
            for dep in self.settings.deployments():
                try:
                    known = self.records.left_behind(dep.app, dep.env)
                    if known and not self._runnable_work(dep.app, dep.env):
                        request = self._converge_request(dep, known)
                        if request:
                            made.append(request)
                except Exception:  # pylint: disable=broad-except
                    # One app/env's trouble (its minions, Salt) must not stop the pass.
                    log.exception("saltcd: %s/%s: could not look at its left-behind minions", dep.app, dep.env)
        return made

    def _runnable_work(self, app, env):
        """True if app/env has a queued request that may run now (a held one does not
        reach the minions before its time)."""
        return any(self.hold(request) is None for request in self.records.pending(app, env))

    def effective_spec(self, dep, spec_id):
        """The id of the spec a converge to `spec_id` deploys (rollout.converge_spec)."""
        return rollout.converge_spec(spec_id, dep.spec_id, lambda sid: self.records.spec(dep.app, dep.env, sid))[1]

    def _converge_request(self, dep, known):
        app, env = dep.app, dep.env
        targeted = set(self.fleet.targets(dep.target, dep.tgt_type))
        placed = rollout.placement(self.fleet, dep.roles, sorted(targeted & set(known)))
        # A minion no longer targeted (or that no role picks) is not the env's.
        asked = sorted(m for m in known if m in targeted and rollout.roles_on(dep, placed, m))
        seen = rollout.observe(self.fleet, dep, asked, placed) if asked else {}
        due = {m: known[m] for m in asked if seen.get(m) is not None and not rollout.runs(
            seen[m], known[m]["digest"], self.effective_spec(dep, known[m].get("spec")))}
        self._forget(app, env, known, [m for m in known if m not in due and seen.get(m) is not None
                                       or m not in asked])
        if not due:
            return None
        # One release per request (nearly always there is one: the rollback's
        # target); the others are taken on the next pass.
        releases = sorted({(r["digest"], r.get("spec")) for r in due.values()}, key=str)
        digest, spec = max(releases, key=lambda rel: sum((r["digest"], r.get("spec")) == rel for r in due.values()))
        minions = sorted(m for m, r in due.items() if (r["digest"], r.get("spec")) == (digest, spec))
        rollouts = sorted({due[m]["rollout"] for m in minions})
        request = intake.operator_request(self.settings, app, env, user="deploy.resume")
        request.update({
            "digest": digest, "spec": spec, "minions": minions, "left_behind": {m: due[m] for m in minions},
            "trigger": {"kind": KIND, "origin": "deploy.resume"},
            "reason": f"rollout {', '.join(rollouts)} left {', '.join(minions)} behind (no answer, or not "
                      f"rolled back); now run{'s' if len(minions) == 1 else ''} "
                      f"{', '.join(sorted({rollout.short(seen[m].get('digest')) for m in minions}))}: "
                      f"brought to {rollout.short(digest)}"})
        self.records.add_request(request)
        log.warning("saltcd: %s/%s: %s", app, env, request["reason"])
        return request

    def _forget(self, app, env, known, minions):
        """Drop `minions` (they got there, or left the env) from what is left behind,
        re-read first: a rollout may have settled meanwhile."""
        if not minions:
            return
        now = self.records.left_behind(app, env)
        kept = {m: r for m, r in now.items() if not (m in minions and r == known.get(m))}
        if kept != now:
            self.records.set_left_behind(app, env, kept)

    def still_behind(self, request):
        """The minions of a converge request still left behind for the same release
        (a rollout may have reached them since it was queued)."""
        now = self.records.left_behind(request["app"], request["env"])
        given = request.get("left_behind") or {}
        return [m for m in request["minions"] if m in now and m in given
                and (now[m]["digest"], now[m].get("spec")) == (given[m]["digest"], given[m].get("spec"))]

    def to_run(self, pending):
        """Of the queued requests (oldest first), the one to run: the newest, but a
        converge never over a rollout of the whole environment that may run now
        (it reaches the converge's minions); a held one waits, the converge runs."""
        whole = [r for r in pending if not is_converge(r)]
        if whole and (len(whole) == len(pending) or self.hold(whole[-1]) is None):
            return whole[-1]
        return [r for r in pending if is_converge(r)][-1]

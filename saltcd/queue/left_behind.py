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
locked, fenced and recorded like any other.

A part of the queue's Controller (saltcd.queue.controller), as a mixin: it
uses the controller's settings, records and fleet."""

import logging

from saltcd import rollout
from saltcd.ingress import intake

log = logging.getLogger(__name__)

KIND = "converge"  # the trigger kind of the requests made here


class LeftBehind:
    """The controller's memory of unreached minions, and their catch-up."""

    def settle_left_behind(self, app, env, record):
        """After a rollout: forget the minions it reached, remember those it left behind."""
        reached = {m for b in record.get("batches", []) for m, result in b["minions"].items()
                   if result.get("answered", True)}
        if record.get("status") == "unchanged":  # every minion answered: it runs the release
            reached = set(record.get("minions") or [])
        known = self.records.left_behind(app, env)
        kept = {m: release for m, release in known.items() if m not in reached}
        kept.update(record.get("left_behind") or {})
        if kept != known:
            self.records.set_left_behind(app, env, kept)
        if record.get("left_behind"):
            log.warning("saltcd: %s/%s: rollout %s left %s behind (no answer, or not rolled back); "
                        "deploy.resume brings them to their release when it can", app, env, record["id"],
                        ", ".join(sorted(record["left_behind"])))

    def queue_left_behind(self):
        """Queue a `converge` request for every app/env with left-behind minions
        that answer again and run something other than their release; return them.
        An app/env with queued work is left alone: its rollout reaches them."""
        made = []
        for dep in self.settings.deployments():
            known = self.records.left_behind(dep.app, dep.env)
            if known and not self.records.has_pending(dep.app, dep.env):
                request = self._converge_request(dep, known)
                if request:
                    made.append(request)
        return made

    def _converge_request(self, dep, known):
        app, env = dep.app, dep.env
        targeted = set(self.fleet.targets(dep.target, dep.tgt_type))
        asked = sorted(m for m in known if m in targeted)  # one no longer targeted is not the env's
        seen = rollout.observe(self.fleet, dep, asked, rollout.placement(self.fleet, dep.roles, asked)) \
            if asked else {}
        due = {m: known[m] for m in asked if seen.get(m) is not None
               and not rollout.runs(seen[m], known[m]["digest"], known[m].get("spec"))}
        kept = {m: known[m] for m in asked if seen.get(m) is None or m in due}
        if kept != known:
            self.records.set_left_behind(app, env, kept)
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
            "digest": digest, "spec": spec, "minions": minions,
            "trigger": {"kind": KIND, "origin": "deploy.resume"},
            "reason": f"rollout {', '.join(rollouts)} left {', '.join(minions)} behind (no answer, or not "
                      f"rolled back); now run{'s' if len(minions) == 1 else ''} "
                      f"{', '.join(sorted({rollout.short(seen[m].get('digest')) for m in minions}))}: "
                      f"brought to {rollout.short(digest)}"})
        self.records.add_request(request)
        log.warning("saltcd: %s/%s: %s", app, env, request["reason"])
        return request

    @staticmethod
    def to_run(pending):
        """Of the queued requests (oldest first), the one to run: the newest, but a
        converge never over a rollout of the whole environment (which reaches its minions)."""
        whole = [r for r in pending if r["trigger"].get("kind") != KIND]
        return (whole or pending)[-1]

"""What `deploy.status` and `deploy.history` show: the digests the minions
run (asked live), the queue, and the pushes awaiting approval.

A part of the queue's Controller (saltcd.queue.controller), as a mixin: it
uses the controller's settings, records, fleet and reporter."""

import itertools
import logging

from saltcd import rollout
from saltcd.errors import NotFound
from saltcd.queue.approvals import awaiting_view
from saltcd.queue.holds import when

log = logging.getLogger(__name__)


def _live_view(fleet, dep, minions):
    """{minion: what it runs now and whether it is healthy (None: no answer)}: the
    first role's container, healthy only if every role's is, and each role's own
    view for an app with roles. `digest` is None when its roles run different ones."""
    placed = rollout.placement(fleet, dep.roles, minions)
    minions = [m for m in minions if rollout.roles_on(dep, placed, m)]  # no role: runs nothing of it
    checks = [(role.container, role.health) for role in dep.roles]
    out = {}
    for minion, infos in (fleet.status(minions, checks) if minions else {}).items():
        if infos is None:
            out[minion] = None
            continue
        parts = {role.name: infos.get(role.container) or {"exists": False, "running": False}
                 for role in rollout.roles_on(dep, placed, minion)}
        first = next(iter(parts.values()), {})
        digests = {p.get("digest") for p in parts.values()}
        view = {"digest": first.get("digest") if len(digests) == 1 else None,
                "running": bool(parts) and all(p.get("running") for p in parts.values()),
                "healthy": bool(parts) and all((p.get("health") or {}).get("healthy") for p in parts.values()),
                "container_id": (first.get("id") or "")[:12], "started_at": first.get("started_at")}
        if dep.has_roles:
            view["roles"] = {name: {"digest": p.get("digest"), "running": p.get("running"),
                                    "healthy": bool((p.get("health") or {}).get("healthy")),
                                    "container_id": (p.get("id") or "")[:12]} for name, p in parts.items()}
        out[minion] = view
    return out


class StatusViews:
    """The controller's status and history views."""

    # reading
    def status(self, app=None, env=None):
        """Live state of every (or one) app/env: digest and health per minion."""
        out = {}
        for dep in self.settings.deployments():
            if (app and dep.app != app) or (env and dep.env != env):
                continue
            minions = self.fleet.targets(dep.target, dep.tgt_type)
            live = _live_view(self.fleet, dep, minions) if minions else {}
            good = self.records.env_state(dep.app, dep.env).get("last_good")
            running = [r["id"] for r in self.records.running_rollouts(dep.app, dep.env)]
            out.setdefault(dep.app, {})[dep.env] = {
                "last_good": good,
                "converged": bool(minions) and good is not None and all(
                    info and info.get("digest") == good and info["healthy"] for info in live.values()),
                # Read from the history, not by probing the lock: taking it, even
                # briefly, would turn a drain starting at that moment away.
                "rollout_running": running[-1:],
                "pending": [self._pending_view(r) for r in self.records.pending(dep.app, dep.env)],
                "awaiting_approval": [awaiting_view(r) for r in self.records.awaiting(dep.app, dep.env)],
                # Minions a rollout could not reach, and the release each should run.
                "left_behind": self.records.left_behind(dep.app, dep.env),
                "mode": dep.mode,
                "minions": {m: info if info else {"answered": False} for m, info in sorted(live.items())},
            }
        return out

    def history(self, app, env, limit=20):
        """Rollout records of app/env, newest first."""
        self.settings.deployment(app, env)
        return list(itertools.islice(self.records.recent(app, env), max(int(limit), 0)))

    def _pending_view(self, request):
        """A queued request as deploy.status shows it: when it runs, and why not yet."""
        view = {"id": request["id"], "tag": request["tag"], "trigger": request["trigger"],
                "received": request.get("received"), "pinned": request.get("digest")}
        try:
            held = self.hold(request)
        except NotFound:
            held = None
        if held:
            view.update(held)
            view["runs_at"] = when(held["not_before"]) if held["not_before"] else None
        return view

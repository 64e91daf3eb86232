"""Lost notifications: `deploy.resume` finds tags that moved at the
registry without saltcd hearing of it, and starts what is due.

A part of the queue's Controller (saltcd.queue.controller), as a mixin: it
uses the controller's settings, records, fleet and reporter."""

import logging

from saltcd import rollout, store
from saltcd.ingress import intake
from saltcd.queue import registry_client

log = logging.getLogger(__name__)


class Drift:
    """The controller's catch-up with tags that moved without a notification."""

    def resume(self, start):
        """`deploy.resume`: start every app/env whose queue may run now, then
        converge minions rollouts left behind (saltcd.queue.left_behind) and
        reconcile, then start what those queued. `start(app, env)` asks for
        a drain and returns what to report. Due work goes first: a released or
        interrupted rollout does not wait for the sweep over every tag at the
        registry (reconcile leaves an app/env with queued work alone anyway)."""
        started = {pair: start(*pair) for pair in self.due_pairs()}
        converging = self.queue_left_behind()
        reconciled = self.reconcile()
        if reconciled or converging:  # else the queues are as the first walk found them
            for pair in self.due_pairs():
                if pair not in started:
                    started[pair] = start(*pair)
        return {"reconciled": [{k: r[k] for k in ("id", "app", "env", "tag", "reason")} for r in reconciled],
                "converging": [{k: r[k] for k in ("id", "app", "env", "minions", "reason")} for r in converging],
                "started": [{"app": app, "env": env, **what} for (app, env), what in started.items()]}

    def reconcile(self):
        """Queue a request for every auto environment whose tag moved at the registry
        without saltcd hearing of it, and record an awaiting-approval push (once
        per digest) for every manual one; return those requests.

        The webhook answers the registry before the reactor runs, so a full
        reactor queue or a master restart can drop a notification; the registry
        still has the tag. A tag counts as moved when it differs from what the
        last tag-driven rollout resolved (whatever that rollout's outcome, so a
        bad image that was rolled back is not retried, and a pinned manual
        rollback is not undone) on two passes in a row: a push whose
        notification is merely in flight has been resolved by then. For a
        manual environment what saltcd heard of is the digest of the last push
        it recorded (or rollout it resolved). A tag saltcd never resolved is
        compared with what the first pass found it at (its baseline; a tag not
        there yet counts): what ran before saltcd watched is left alone, and a
        first push whose notification was lost is caught like any other.
        Environments with queued work are left alone. What a moved tag does is
        the environment's `drift`: `deploy` it (auto environments), `record` it
        as a push waiting for approval (always so in manual ones), or `ignore`
        it: a tag nobody announced is the registry pusher's word alone. One pass at a time (a
        `deploy.resume` by hand beside the schedule's skips it): two at once
        would each count as a pass, and a push merely in flight would be taken
        for a lost one.
        """
        made = []
        with self.locks.hold("reconcile") as held:
            if held is None:
                log.info("saltcd: another deploy.resume is reconciling; this one leaves it to that one")
                return made
            for dep in self.settings.deployments():
                if dep.drift == "ignore":
                    continue
                for tag in sorted(t for t, env in self.settings.tag_environments.items() if env == dep.env):
                    request = self._reconcile_tag(dep, tag)
                    if request:
                        made.append(request)
        return made

    def _reconcile_tag(self, dep, tag):
        app, env = dep.app, dep.env
        if self.records.has_pending(app, env):
            return None
        try:
            current = self._tag_digest(dep, tag)
        except registry_client.TagNotFound:
            current = store.ABSENT
        except registry_client.RegistryError as exc:
            log.info("saltcd: reconcile %s/%s: %s", app, env, exc)
            return None
        # What saltcd heard of for the tag; for a tag it never resolved, its
        # baseline (taken again when the app's repository changed: what the
        # new repository held before saltcd watched it is not saltcd's either).
        heard = self.records.resolved(app, env, tag) or self.records.baseline(app, env, tag, str(dep.repository))
        if heard is None:  # the first pass: what is there now is not saltcd's to deploy
            self.records.set_baseline(app, env, tag, str(dep.repository), current)
            return None
        suspect = self.records.suspect(app, env, tag)
        if current == store.ABSENT:  # deleted, or not pushed yet: nothing to catch up with
            if suspect is not None:
                self.records.set_suspect(app, env, tag, None)
            return None
        if current == heard or suspect != current:
            # In step, or a first sighting: look again next pass.
            new_suspect = None if current == heard else current
            if new_suspect != suspect:
                self.records.set_suspect(app, env, tag, new_suspect)
            return None
        self.records.set_suspect(app, env, tag, None)
        if self.records.has_pending(app, env):
            return None
        request = intake.operator_request(self.settings, app, env, user="deploy.resume")
        request.update({"tag": tag, "digest_hint": current,
                        "trigger": {"kind": "reconcile", "origin": "deploy.resume"},
                        "reason": f"{tag} moved to {rollout.short(current)} at the registry "
                                  f"without a notification reaching saltcd"})
        if dep.mode == "manual" or dep.drift == "record":
            # Nobody vouched for this digest: a person decides (drift: record).
            return self._reconciled_awaiting(request, current)
        self.records.add_request(request)
        log.warning("saltcd: %s/%s: %s", app, env, request["reason"])
        return request

    def _reconciled_awaiting(self, request, digest):
        """A moved tag of a manual environment (or one whose drift is `record`):
        wait for approval, as if its push had arrived.

        Recorded once per digest: the digest becomes what saltcd heard of for
        the tag, and one already waiting is not recorded twice.
        """
        app, env = request["app"], request["env"]
        self.records.set_resolved(app, env, request["tag"], digest)
        request.update({"awaiting_approval": True, "digest": digest, "digest_error": None})
        if not self._await_approval(request):
            return None
        log.warning("saltcd: %s/%s: %s; awaiting approval", app, env, request["reason"])
        return request

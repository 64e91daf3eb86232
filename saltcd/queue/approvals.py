"""Manual environments: pushes waiting for a person, an approval pinned
to the pushed digest, promotion, and the digest a rollback goes to.

A part of the queue's Controller (saltcd.queue.controller), as a mixin: it
uses the controller's settings, records, fleet and reporter."""

import logging
import time

from saltcd import rollout, vocabulary
from saltcd.config import references
from saltcd.errors import NotFound, Refused
from saltcd.ingress.registry_events import shown
from saltcd.queue import registry_client
from saltcd.queue.holds import when

log = logging.getLogger(__name__)

# Pushes kept waiting for approval per environment: whoever can push the tag (or
# post to a token webhook) could otherwise fill the store. Past it the oldest
# are superseded; approval never picks among several without being told which.
MAX_AWAITING = 20


def _candidates(waiting):
    """The pushes waiting for approval, one phrase each, for a refusal."""
    return "; ".join(
        f"request={w['id']} digest={w.get('digest') or 'unknown'} "
        f"pushed {when(w['received']) if w.get('received') else '?'} "
        f"by {w['trigger'].get('kind')} {shown(w['trigger'].get('origin'), 60)}" for w in waiting)


def awaiting_view(request):
    """A push waiting for approval as the event and deploy.status show it."""
    return {
        "id": request["id"], "app": request["app"], "env": request["env"], "tag": request["tag"],
        "digest": request.get("digest"), "short": rollout.short(request.get("digest")),
        "digest_error": request.get("digest_error"),
        "pushed_by": request["trigger"], "received": request.get("received"),
        "received_at": when(request["received"]) if request.get("received") else None,
    }


class Approvals:
    """Approval, promotion and the rollback target of the controller."""

    def _await_approval(self, request):
        """Keep a push of a manual environment for `deploy.approve`, and say so;
        once per digest (a push of a digest already waiting adds nothing), and at
        most MAX_AWAITING per environment (the oldest are superseded).

        Returns False when the push was a duplicate and nothing was recorded."""
        app, env = request["app"], request["env"]
        waiting = self.records.awaiting(app, env)
        if request.get("digest") and any(w.get("digest") == request["digest"] for w in waiting):
            log.info("saltcd: %s/%s: %s is already waiting for approval", app, env,
                     rollout.short(request["digest"]))
            return False
        self.records.add_awaiting(request)
        for older in waiting[:max(len(waiting) + 1 - MAX_AWAITING, 0)]:
            self.records.drop_awaiting(app, env, older["id"])
            self._supersede_record(older, request, reason=f"more than {MAX_AWAITING} pushes were "
                                                          "waiting for approval: the oldest gave way")
        self.reporter.fire(vocabulary.deploy_tag(app, env, "awaiting_approval"), awaiting_view(request))
        return True

    def approve(self, app, env, user, digest=None, force=False, request=None):
        """Release a push waiting in a manual environment, pinned to the digest
        the registry had when it was pushed (the other waiting pushes: superseded).

        With one push waiting, that one; with several, only the one named by
        `request=` (its id) or `digest=`: whoever can push the tag must not be
        able to slip a newer push in between the review and the approval.
        Refused when the tag has moved since (or can't be checked), unless
        `digest=` or `request=` names what to deploy (see _approved_digest).
        """
        self.check_window(app, env, force)
        waiting = self.records.awaiting(app, env)
        if not waiting:
            raise NotFound(f"no push of {app} is waiting for approval in {env}")
        if request is not None:
            chosen_push = next((w for w in waiting if w["id"] == str(request)), None)
            if chosen_push is None:
                raise Refused(f"no push {shown(request, 60)!r} is waiting for approval in {app}/{env}; "
                              f"waiting: {_candidates(waiting)}")
            if chosen_push.get("digest") and digest and digest != chosen_push["digest"]:
                raise Refused(f"push {chosen_push['id']} carries {chosen_push['digest']}, not {shown(digest, 80)}: "
                              f"approve it with request= alone, or another digest with digest= alone")
            if chosen_push.get("digest") is None and digest is None:
                raise Refused(f"the digest of push {chosen_push['id']} is unknown "
                              f"({chosen_push.get('digest_error')}); review the image and approve with "
                              f"digest=sha256:...")
            chosen, note = (chosen_push["digest"], f" (request={chosen_push['id']})") if digest is None \
                else self._approved_digest(app, env, [chosen_push], digest)
        else:
            if digest is None and len(waiting) > 1:
                raise Refused(f"{len(waiting)} pushes of {app} are waiting for approval in {env}: "
                              f"{_candidates(waiting)}; approve one with request=<id> or digest=<digest>")
            chosen, note = self._approved_digest(app, env, waiting, digest)
            chosen_push = next((w for w in reversed(waiting) if w.get("digest") == chosen), waiting[-1])
        for older in waiting:
            if older["id"] != chosen_push["id"]:
                self.records.drop_awaiting(app, env, older["id"])
                self._supersede_record(older, chosen_push, reason=f"{user} approved "
                                       f"{rollout.short(chosen)} (push {chosen_push['id']}) instead")
        if chosen != chosen_push.get("digest"):
            # The operator chose another image than the push carried: theirs, not
            # the pusher's (and no longer what CI signed).
            chosen_push.update({"signed_digest": False, "pushed_by": chosen_push["trigger"],
                                "trigger": {"kind": "operator", "origin": user}})
        chosen_push.update({"approved_by": user, "approved": time.time(), "awaiting_approval": False,
                            "pushed_digest": chosen_push.get("digest"), "digest": chosen,
                            "reason": f"approved by {user}: {rollout.short(chosen)}{note}"})
        self.records.add_request(chosen_push)
        self.records.drop_awaiting(app, env, chosen_push["id"])
        return chosen_push

    def _approved_digest(self, app, env, waiting, digest):
        """The digest an approval deploys, with a note, or Refused with the reason.

        `digest=` may name a waiting push's digest or the tag's digest at the
        registry now, nothing else: an approval releases an image that arrived
        through a push of this environment's tag. Any other digest of the
        repository (an older release, say) goes through rollback or promote,
        which record where it came from.
        """
        newest = waiting[-1]
        if newest.get("signed_digest") and not digest:
            # What CI signed is what was reviewed, wherever the tag went since.
            return newest["digest"], " (signed by CI)"
        dep = self.settings.deployment(app, env)
        try:
            current, unreachable = self._tag_digest(dep, newest["tag"]), None
        except registry_client.RegistryError as exc:
            current, unreachable = None, str(exc)
        recorded = newest.get("digest")
        if digest:
            try:
                digest = references.parse_digest(digest)
            except references.ReferenceError as exc:
                raise Refused(f"digest= {exc}") from None
            if digest in {w.get("digest") for w in waiting} or digest == current:
                return digest, " (digest= given)"
            raise Refused(f"{rollout.short(digest)} is neither a waiting push of {app}:{newest['tag']} nor "
                          f"what {newest['tag']} points to now ({rollout.short(current)}); "
                          f"deploy other digests with deploy.rollback or deploy.promote")
        if recorded is None:
            look = (f"what {newest['tag']} points to now, {current}, and approve with digest={current}"
                    if current else f"the image and approve with digest=sha256:... "
                                    f"(the registry can't be reached now either: {unreachable})")
            raise Refused(f"the digest of push {newest['id']} is unknown ({newest.get('digest_error')}); "
                          f"review {look}")
        if current is None:
            raise Refused(f"can't confirm {newest['tag']} still points to the reviewed {recorded}: "
                          f"{unreachable}; approve with digest={recorded} to deploy it anyway")
        if current != recorded:
            raise Refused(f"{newest['tag']} moved since the push was reviewed: it was {recorded}, "
                          f"it is {current} now; approve with digest= one of them to choose")
        return recorded, ""

    def promote(self, app, source_env, target_env, user, force=False):
        """Request `target_env` to run the digest that last completed a rollout in `source_env`."""
        self.settings.deployment(app, target_env)
        good = self.records.env_state(app, source_env).get("last_good")
        if not good:
            raise NotFound(f"{app}/{source_env} has no healthy rollout to promote")
        return self.request(app, target_env, user, digest=good, kind="promote", force=force,
                            reason=f"promoted from {source_env}: {good[:19]}")

    def rollback_target(self, app, env):
        """The digest a manual rollback goes to, with the reason, or raise NotFound.

        If the environment does not all run its last good digest (a paused or
        interrupted rollout left it mixed), that digest; otherwise the good
        digest before it.
        """
        dep = self.settings.deployment(app, env)
        good = self.records.env_state(app, env).get("last_good")
        if not good:
            raise NotFound(f"{app}/{env} has no rollout that succeeded: nothing to roll back to")
        minions = self.fleet.targets(dep.target, dep.tgt_type)
        placed = rollout.placement(self.fleet, dep.roles, minions)
        minions = [m for m in minions if rollout.roles_on(dep, placed, m)]  # no role: runs nothing of it
        live = rollout.observe(self.fleet, dep, minions, placed) if minions else {}
        # Offline minions can't vote.
        if not all(rollout.runs(info, good) for info in live.values() if info is not None):
            return good, "the environment does not all run its last good digest"
        # Newest first, reading only as far back as the answer.
        for record in self.records.recent(app, env):
            if record.get("status") in ("succeeded", "unchanged") and record.get("to_digest") not in (None, good):
                return record["to_digest"], "the good digest before the current one"
        raise NotFound(f"{app}/{env} has no earlier good digest than {rollout.short(good)}")

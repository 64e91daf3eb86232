"""saltcd's control loop: accept requests, run them one app/env at a time, report.

The runner module is a thin shell around this class; everything it needs from
Salt (the fleet, the event bus, the cache) is handed in, so the same code runs
under `salt-run`, in a reaction, and in tests with fakes.
"""

import itertools
import logging
import time

from saltcd import rollout, store, vocabulary
from saltcd.config import deploy_windows, references
from saltcd.errors import NotFound, SaltcdError
from saltcd.ingress import ingress_key, intake, nonces, registry_events
from saltcd.ingress.registry_events import shown
from saltcd.queue import locking, registry_client
from saltcd.rollout import deploy_pillar, holder

log = logging.getLogger(__name__)

MAX_DRAIN_ROUNDS = 20
# Pushes kept waiting for approval per environment: whoever can push the tag (or
# post to a token webhook) could otherwise fill the store. Past it the oldest
# are superseded; approval never picks among several without being told which.
MAX_AWAITING = 20
# Requests a person made on purpose: cooldown and windows never hold them in the
# queue (the window was checked, or overridden with force, when they were made).
OPERATOR_KINDS = ("operator", "rollback", "promote")


class Refused(SaltcdError):
    """The request is valid but may not run now; the message says why and what to do."""


def _when(moment):
    """`2026-11-26 09:00:00 UTC` — a time an operator can read."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


class Controller:
    """Requests in, rollouts out, with a lock per app/env and a durable record."""

    def __init__(self, settings, records, fleet, reporter, lock_dir,
                 resolve=registry_client.resolve_digest, clock=time):
        self.settings = settings
        self.clock = clock  # handed to each Rollout (its watch waits on it)
        self.records = records
        self.fleet = fleet
        self.reporter = reporter  # fire(tag, data) and progress(text)
        self.lock_dir = lock_dir
        self.resolve = resolve
        self.records.configure(store.Limits.from_settings(settings))

    def _tag_digest(self, dep, tag):
        """The digest `tag` of dep's repository has at its registry now (RegistryError if unknown)."""
        return self.resolve(dep.repository, tag, self.settings.registry(dep.repository.registry))

    def _confirm_signed(self, dep, digest):
        """Raise RegistryError unless the registry has `digest` under dep's repository
        (a CI job's key may sign any digest; only this repository's may deploy)."""
        try:
            found = self.resolve(dep.repository, digest, self.settings.registry(dep.repository.registry))
        except registry_client.TagNotFound:
            raise registry_client.RegistryError(
                f"{dep.repository} has no manifest {rollout.short(digest)} at its registry") from None
        if found != digest:
            raise registry_client.RegistryError(
                f"the registry answered {rollout.short(found)} for {rollout.short(digest)}")

    def _lock(self, app, env):
        return locking.lock_path(self.lock_dir, app, env)

    # intake
    def accept(self, tag, data):
        """Validate an event and persist its requests; return what happened to it."""
        # Replays are told by the nonce cache in the store (locked in the master
        # cachedir); saltcd_webhook's envelopes by the master-local ingress key.
        verdict = intake.classify(tag, data, self.settings,
                                  nonces=nonces.NonceCache(self.records.cache, lock_dir=self.lock_dir),
                                  engine_key=ingress_key.load(self.lock_dir))
        accepted = []
        for request in verdict.requests:
            if request["awaiting_approval"]:
                self._record_pushed_digest(request)
                if not self._await_approval(request):
                    verdict.ignored.append(f"{request['app']}/{request['env']}: "
                                           f"{rollout.short(request['digest'])} is already waiting for approval")
                    continue
            else:
                self.records.add_request(request)
            accepted.append(request)
            log.info("saltcd: accepted %s/%s %s:%s from %s", request["app"], request["env"],
                     request["repository"], request["tag"], verdict.source["origin"])
        for reason in verdict.ignored:
            # Blob pushes and pulls come by the dozen with every push: not news.
            level = logging.DEBUG if registry_events.is_routine(reason) else logging.INFO
            log.log(level, "saltcd: ignored from %s: %s", verdict.source["origin"], reason)
        if verdict.rejected:
            log.warning("saltcd: rejected event %s from %s: %s", registry_events.shown(tag, 120),
                        verdict.source["origin"], verdict.rejected)
            rejection = store.rejection(tag, verdict.source, verdict.rejected)
            self.records.add_rejection(rejection)
            self.reporter.fire(vocabulary.REJECTED_TAG, rejection)
        return {
            "accepted": [{k: r[k] for k in ("id", "app", "env", "tag", "awaiting_approval")}
                         for r in accepted],
            "ignored": verdict.ignored,
            "rejected": verdict.rejected,
            "source": verdict.source,
        }

    def _record_pushed_digest(self, request):
        """What the registry has for the pushed tag now: what an approval will deploy.

        Resolved at accept time, not at approval: whoever can push the tag could
        otherwise swap the image between review and approval. A registry that
        does not answer leaves `digest: None` and the reason; approval then
        needs `digest=`.
        """
        dep = self.settings.deployment(request["app"], request["env"])
        if request.get("signed_digest"):
            # CI signed this digest: it is what waits (the rollout confirms the
            # registry has it), and what saltcd heard of for the tag.
            request["digest_error"] = None
            self.records.set_resolved(request["app"], request["env"], request["tag"], request["digest"])
            return
        try:
            request["digest"] = self._tag_digest(dep, request["tag"])
            request["digest_error"] = None
            # What saltcd heard of for the tag: reconcile compares with it.
            self.records.set_resolved(request["app"], request["env"], request["tag"], request["digest"])
        except registry_client.RegistryError as exc:
            request.update({"digest": None, "digest_error": f"registry not reached at push time: {exc}"})
            log.warning("saltcd: %s/%s push awaiting approval, digest unknown: %s",
                        request["app"], request["env"], exc)

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
        self.reporter.fire(vocabulary.deploy_tag(app, env, "awaiting_approval"), _awaiting_view(request))
        return True

    def check_window(self, app, env, force=False, now=None):
        """Refuse an operator's rollout while `env`'s windows are closed, unless `force`."""
        dep = self.settings.deployment(app, env)
        now = time.time() if now is None else now
        if force or deploy_windows.is_open(dep.windows, now):
            return
        try:
            opens = f"the next window opens at {_when(deploy_windows.next_open(dep.windows, now))}"
        except deploy_windows.WindowError as exc:
            opens = str(exc)
        raise Refused(f"{app}/{env} is outside its deploy windows "
                      f"({'; '.join(w.text for w in dep.windows)}): {opens}; "
                      f"run again with force=True to deploy now")

    def hold(self, request, now=None):
        """Why an automatic request must wait (cooldown, window) and until when, or None.

        Returns {"not_before": time or None, "waiting_for": "cooldown"|"window", "reason"}.
        The cooldown counts from the push (`received`); the newest request is the
        one that runs, so a newer push restarts it.
        """
        if request.get("approved_by") or request["trigger"].get("kind") in OPERATOR_KINDS:
            return None
        dep = self.settings.deployment(request["app"], request["env"])
        now = time.time() if now is None else now
        ready = (request.get("received") or now) + dep.cooldown
        earliest = max(ready, now)
        try:
            opens = deploy_windows.next_open(dep.windows, earliest)
        except deploy_windows.WindowError as exc:
            return {"not_before": None, "waiting_for": "window", "reason": str(exc)}
        if opens <= now:
            return None
        if opens > earliest:
            why, reason = "window", (f"outside the deploy windows "
                                     f"({'; '.join(w.text for w in dep.windows)}); runs at {_when(opens)}")
        else:
            why, reason = "cooldown", (f"cooldown of {dep.cooldown:g} s from the push at "
                                       f"{_when(request.get('received') or now)}; runs at {_when(opens)}")
        return {"not_before": opens, "waiting_for": why, "reason": reason}

    def due_pairs(self, now=None):
        """(app, env) pairs with a pending request that may run now (`deploy.resume`)."""
        now = time.time() if now is None else now
        due = []
        for app, env in self.records.app_envs_with_requests():
            pending = self.records.pending(app, env)
            try:
                if pending and self.hold(pending[-1], now) is None:
                    due.append((app, env))
            except NotFound:
                due.append((app, env))  # no longer configured: the drain records why
        return due

    def request(self, app, env, user="operator", digest=None, reason=None, kind="operator", force=False):
        """Persist an operator's request: the env's tag now, or a pinned digest.

        Rollouts and promotions are refused outside the deploy windows unless
        `force`; a rollback never is: it is the way out of a bad deploy.
        """
        if kind != "rollback":
            self.check_window(app, env, force)
        request = intake.operator_request(self.settings, app, env, user)
        request["trigger"]["kind"] = kind
        if digest:
            request.update({"digest": digest, "reason": reason})
        self.records.add_request(request)
        return request

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

    def resume(self, start):
        """`deploy.resume`: start every app/env whose queue may run now, then
        reconcile, then start what reconcile queued. `start(app, env)` asks for
        a drain and returns what to report. Due work goes first: a released or
        interrupted rollout does not wait for the sweep over every tag at the
        registry (reconcile leaves an app/env with queued work alone anyway)."""
        started = {pair: start(*pair) for pair in self.due_pairs()}
        reconciled = self.reconcile()
        if reconciled:  # else the queues are as the first walk found them
            for pair in self.due_pairs():
                if pair not in started:
                    started[pair] = start(*pair)
        return {"reconciled": [{k: r[k] for k in ("id", "app", "env", "tag", "reason")} for r in reconciled],
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
        with locking.try_lock(locking.reconcile_lock_path(self.lock_dir)) as held:
            if not held:
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

    # running
    def drain(self, app, env):
        """Run pending requests of app/env until none is left, newest digest first.

        Returns {"status": "idle"|"busy", "rollouts": [records]}. "busy" means
        another process holds the lock: it will pick our request up, because a
        holder re-reads the queue after each rollout and after releasing.
        """
        self.settings.deployment(app, env)
        done = []
        for _ in range(MAX_DRAIN_ROUNDS):
            with locking.try_lock(self._lock(app, env)) as held:
                if not held:
                    return {"status": "busy", "rollouts": done}
                self._mark_interrupted(app, env)
                while True:
                    pending = self.records.pending(app, env)
                    if not pending:
                        break
                    for older in pending[:-1]:
                        self._supersede(older, pending[-1])
                    held = self.hold(pending[-1])
                    if held:
                        # Stays queued; deploy.resume starts the drain again when it is due.
                        self._note_hold(pending[-1], held)
                        return {"status": "waiting", "rollouts": done, "waiting": held}
                    record = self._run_request(pending[-1])
                    done.append(record)
                    if record["status"] == "interrupted":
                        return {"status": "interrupted", "rollouts": done}
            # A request persisted while we were releasing found the lock held
            # and left: look once more so it is not stranded.
            if not self.records.pending(app, env):
                return {"status": "idle", "rollouts": done}
        return {"status": "idle", "rollouts": done}

    def _note_hold(self, request, held):
        """Write why and until when a request waits onto it (once per change), and say so."""
        if (request.get("not_before"), request.get("waiting_for")) == (held["not_before"], held["waiting_for"]):
            return
        request.update(held)
        self.records.add_request(request)
        self.reporter.fire(vocabulary.deploy_tag(request["app"], request["env"], "waiting"),
                           {"request": request["id"], "app": request["app"], "env": request["env"],
                            "tag": request["tag"], **held})
        self.reporter.progress(f"{request['app']}/{request['env']}: waiting: {held['reason']}")

    def _mark_interrupted(self, app, env):
        """Records still `running` while we hold the lock belong to a dead process;
        the deploy data it published (and could not withdraw) goes with them."""
        for record in self.records.running_rollouts(app, env):
            record.update({"status": "interrupted", "ended": time.time(),
                           "reason": "the process running it stopped (master restart?)"})
            self.records.save_rollout(record)
            deploy_pillar.DeployPillar(self.records.cache).withdraw_rollout(
                record.get("minions") or [], app, record["id"])
            self.reporter.fire(vocabulary.deploy_tag(app, env, "interrupted"),
                               {"rollout": record["id"], "app": app, "env": env})

    def _supersede(self, older, newest):
        self._supersede_record(older, newest)
        if not older.get("digest") and older.get("digest_hint"):
            # saltcd heard of this push and chose the newer request: reconcile
            # must not bring it back (over a rollback the operator ran meanwhile).
            self.records.set_resolved(older["app"], older["env"], older["tag"], older["digest_hint"])
        self.records.drop_request(older["app"], older["env"], older["id"])

    def _supersede_record(self, older, newest, reason="a newer push arrived before this one ran"):
        record = self._new_record(older)
        record.update({"status": "superseded", "ended": time.time(),
                       "superseded_by": newest["id"], "reason": reason})
        self.records.save_rollout(record)
        self.reporter.fire(vocabulary.deploy_tag(older["app"], older["env"], "superseded"),
                           {"rollout": record["id"], "request": older["id"], "superseded_by": newest["id"],
                            "app": older["app"], "env": older["env"]})

    @staticmethod
    def _new_record(request):
        return {
            "id": store.new_id(),
            "app": request["app"],
            "env": request["env"],
            "request": request["id"],
            "trigger": request["trigger"],
            "tag": request["tag"],
            "digest_hint": request.get("digest_hint"),
            "pinned": request.get("digest"),
            "signed_digest": bool(request.get("signed_digest")),
            "approved_by": request.get("approved_by"),
            "note": request.get("reason"),
            "received": request.get("received"),
            "started": time.time(),
        }

    def _run_request(self, request, test=False):
        app, env = request["app"], request["env"]
        deployment = self.settings.deployment(app, env)
        record = self._new_record(request)
        record["holder"] = holder.current()  # whose deploy data the minions may be served
        try:
            # A pinned request (a rollback) needs no registry: the digest was
            # deployed before and is on the minions or in the registry by digest.
            # A digest CI signed is confirmed: it must be this repository's.
            digest = request.get("digest") or self._tag_digest(deployment, request["tag"])
            if request.get("signed_digest"):
                self._confirm_signed(deployment, digest)
        except registry_client.RegistryError as exc:
            # A plan that can't name its digest is no plan: failed (non-zero) in test mode too.
            what = "signed digest refused" if request.get("signed_digest") else "digest not resolved"
            record.update({"status": "failed", "ended": time.time(),
                           "to_digest": None,
                           "reason": f"{what}, nothing changed: {exc}"})
            if not test:
                self.records.save_rollout(record)
                self.records.drop_request(app, env, request["id"])
                self.reporter.fire(*rollout.finished_event(record))
            self.reporter.progress(f"{app}/{env}: {record['reason']}")
            return record
        save = (lambda r: None) if test else self.records.save_rollout
        last_good = self.records.env_state(app, env).get("last_good")
        run = None
        try:
            if (not request.get("digest") or request.get("signed_digest")) and not test:
                self.records.set_resolved(app, env, request["tag"], digest)
            hint = request.get("digest_hint")
            if hint and hint != digest:
                record["note"] = (f"event said {rollout.short(hint)}, registry says {rollout.short(digest)}: "
                                  "registry wins")
            if not test:
                self.records.save_spec(app, env, deployment.spec_id, deployment.spec())
            run = rollout.Rollout(deployment, digest, self.fleet, self.reporter, record, save=save,
                                  last_good=last_good, clock=self.clock,
                                  specs=lambda spec_id: self.records.spec(app, env, spec_id))
            result = run.run(test=test)
        except rollout.Interrupted as exc:
            self._abandon(run, record)
            record.update({"status": "interrupted", "ended": time.time(), "reason": str(exc)})
            save(record)
            return record
        except Exception as exc:  # pylint: disable=broad-except
            # Never let one broken rollout wedge the queue: close its record,
            # say so like any other end, and drop it.
            log.exception("saltcd: rollout %s of %s/%s crashed", record["id"], app, env)
            self._abandon(run, record)
            result = self._crashed(record, exc, save, test)
        if not test:
            # Only a rollout that passed the health gate vouches for a digest
            # ("unchanged" ran no gate: the containers may be up but unhealthy).
            if result["status"] == "succeeded" and last_good != digest:
                self.records.set_env_state(app, env, {"last_good": digest,
                                                      "last_good_rollout": record["id"]})
            self.records.drop_request(app, env, request["id"])
        return result

    @staticmethod
    def _abandon(run, record):
        """Stop what a rollout left running in the background after an exception."""
        if run is None:
            return
        try:
            run.abandon()
        except Exception:  # pylint: disable=broad-except
            log.exception("saltcd: cleaning up after rollout %s failed too", record["id"])

    def _crashed(self, record, exc, save, test):
        """Close the record of a rollout that raised, and fire its `finished`."""
        reason = f"crashed: {type(exc).__name__}: {exc}"[:500]
        record.update({"status": "failed", "ended": time.time(), "reason": reason})
        record.setdefault("failed_minions", [])
        try:
            save(record)
        finally:
            if not test:
                self.reporter.fire(*rollout.finished_event(record))
        return record

    def plan(self, app, env, user="operator"):
        """What a rollout would do now, without changing anything."""
        request = intake.operator_request(self.settings, app, env, user)
        return self._run_request(request, test=True)

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
                "awaiting_approval": [_awaiting_view(r) for r in self.records.awaiting(dep.app, dep.env)],
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
            view["runs_at"] = _when(held["not_before"]) if held["not_before"] else None
        return view


def _candidates(waiting):
    """The pushes waiting for approval, one phrase each, for a refusal."""
    return "; ".join(
        f"request={w['id']} digest={w.get('digest') or 'unknown'} "
        f"pushed {_when(w['received']) if w.get('received') else '?'} "
        f"by {w['trigger'].get('kind')} {shown(w['trigger'].get('origin'), 60)}" for w in waiting)


def _awaiting_view(request):
    """A push waiting for approval as the event and deploy.status show it."""
    return {
        "id": request["id"], "app": request["app"], "env": request["env"], "tag": request["tag"],
        "digest": request.get("digest"), "short": rollout.short(request.get("digest")),
        "digest_error": request.get("digest_error"),
        "pushed_by": request["trigger"], "received": request.get("received"),
        "received_at": _when(request["received"]) if request.get("received") else None,
    }


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

"""saltcd's control loop: accept requests, run them one app/env at a time, report.

The runner module is a thin shell around this class; everything it needs from
Salt (the fleet, the event bus, the cache) is handed in, so the same code runs
under `salt-run`, in a reaction, and in tests with fakes.
"""

import hashlib
import itertools
import logging
import time

from saltcd import rollout, store, vocabulary
from saltcd.errors import Fenced
from saltcd.ingress import ingress_key, intake, nonces, registry_events
from saltcd.queue import locking, registry_client
from saltcd.queue.approvals import Approvals
from saltcd.queue.drift import Drift
from saltcd.queue.holds import Holds
from saltcd.queue.left_behind import LeftBehind, is_converge
from saltcd.queue.status import StatusViews
from saltcd.rollout import deploy_pillar, holder

log = logging.getLogger(__name__)

MAX_DRAIN_ROUNDS = 20
# Pushes two masters both accepted from their webhooks, told apart (shared store only).
SEEN_BANK = "saltcd/seen"


class Controller(Holds, Approvals, Drift, LeftBehind, StatusViews):
    """Requests in, rollouts out, with a lock per app/env and a durable record."""

    def __init__(self, settings, records, fleet, reporter, lock_dir,
                 resolve=registry_client.resolve_digest, clock=time, locks=None, master=None):
        self.settings = settings
        self.clock = clock  # handed to each Rollout (its watch waits on it)
        self.records = records
        self.fleet = fleet
        self.reporter = reporter  # fire(tag, data) and progress(text)
        self.lock_dir = lock_dir
        # One master: flocks in lock_dir. Several sharing etcd: lease locks (saltcd.ha).
        self.locks = locks or locking.LocalLocks(lock_dir)
        self.master = master  # this master's id, in records and nonce sightings
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

    # intake
    def accept(self, tag, data):
        """Validate an event and persist its requests; return what happened to it."""
        # Replays are told by the nonce cache in the store (locked in the master
        # cachedir); saltcd_webhook's envelopes by the master-local ingress key.
        verdict = intake.classify(tag, data, self.settings,
                                  nonces=nonces.NonceCache(self.records.cache, lock_dir=self.lock_dir,
                                                           master=self.master),
                                  engine_key=ingress_key.load(self.lock_dir))
        accepted = []
        for request in verdict.requests:
            taken_by = self._delivered_before(request)
            if taken_by:
                verdict.ignored.append(f"{request['app']}/{request['env']}: push already accepted by "
                                       f"master {taken_by} (every master hears a push)")
                continue
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

    def _delivered_before(self, request):
        """The master that already accepted this very push (app, env, tag, digest,
        source) within the push window, or None. Shared store only: every master's
        webhook may hear one registry notification; one request must result."""
        if not self.locks.shared or not (request.get("digest_hint") or request.get("digest")):
            return None
        seen = nonces.NonceCache(self.records.cache, master=self.master, bank=SEEN_BANK)
        what = "/".join(str(part) for part in (request["trigger"].get("kind"), request["trigger"].get("origin"),
                                              request["app"], request["env"], request["tag"],
                                              request.get("digest") or request["digest_hint"]))
        try:
            seen.first_sighting(hashlib.sha256(what.encode()).hexdigest()[:40], window=self.settings.push_window)
        except nonces.SeenElsewhere as exc:
            return exc.master
        except nonces.Full:
            return None  # a flood of distinct pushes: the queue's supersede still makes it one rollout
        # A repeat on this master (a registry's retry) queues again, as on a single master.
        return None

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


    # running
    def run_queue(self, app, env):
        """Run pending requests of app/env until none is left, newest digest first.

        Returns {"status": "idle"|"busy"|"waiting"|"interrupted"|"fenced", "rollouts": [records]}.
        "busy" means another process (or master) holds the lock: it will pick our
        request up, because a holder re-reads the queue after each rollout and
        after releasing. "fenced": this master lost the lock mid-way (saltcd.ha).
        """
        self.settings.deployment(app, env)
        done = []
        for _ in range(MAX_DRAIN_ROUNDS):
            with self.locks.hold(app, env) as held:
                if held is None:
                    return {"status": "busy", "rollouts": done}
                try:
                    stopped = self._drain(app, env, held, done)
                except Fenced as exc:
                    log.warning("saltcd: %s/%s: %s", app, env, exc)
                    return {"status": "fenced", "rollouts": done, "reason": str(exc)}
                if stopped:
                    return {**stopped, "rollouts": done}
            # A request persisted while we were releasing found the lock held
            # and left: look once more so it is not stranded.
            if not self.records.pending(app, env):
                return {"status": "idle", "rollouts": done}
        return {"status": "idle", "rollouts": done}

    def _drain(self, app, env, held, done):
        """Run the queue while holding its lock; a status dict when it must stop early."""
        journal = self._mark_interrupted(app, env, held)
        while True:
            pending = self.records.pending(app, env)
            if not pending:
                return None
            newest = self.to_run(pending)
            for other in pending:
                # A converge runs before a held rollout of the environment, not instead of it.
                if other is not newest and not (is_converge(newest) and not is_converge(other)):
                    self._supersede(other, newest)
            if self.locks.shared and self._already_done(newest):
                continue
            if is_converge(newest) and not self._narrow_converge(newest):
                continue
            resume = journal if journal and journal.get("request") == newest["id"] else None
            waiting = None if resume else self.hold(newest)
            if waiting:
                # Stays queued; deploy.resume starts the drain again when it is due.
                self._note_hold(newest, waiting)
                return {"status": "waiting", "waiting": waiting}
            record = self._run_request(newest, held=held, journal=resume)
            journal = None
            done.append(record)
            if record["status"] == "interrupted":
                return {"status": "interrupted"}

    def _mark_interrupted(self, app, env, held=None):
        """Records still `running` while we hold the lock belong to a process that
        stopped; the deploy data it published (and could not withdraw) goes with them.

        With a shared store, the record of the newest queued request is returned
        instead: its master died (or lost its lease) mid-rollout, and this master
        takes it over (the journal it returns is that record). The state runs the
        dead master left on the minions of those it does not take over are stopped."""
        running = self.records.running_rollouts(app, env)
        pending = self.records.pending(app, env) if self.locks.shared else []
        newest = self.to_run(pending)["id"] if pending else None
        journal = next((r for r in reversed(running) if r.get("request") == newest), None) if newest else None
        for record in running:
            if record is journal:
                continue
            record.update({"status": "interrupted", "ended": time.time(),
                           "reason": "the process running it stopped (master restart?)"})
            self.records.save_rollout(record)
            deploy_pillar.DeployPillar(self.records.cache).withdraw_rollout(
                record.get("minions") or [], app, record["id"])
            stop = getattr(self.fleet, "stop_stale", None)
            if held is not None and held.token is not None and stop is not None:
                stop(record.get("minions") or [], app, env, held.token)
            self.reporter.fire(vocabulary.deploy_tag(app, env, "interrupted"),
                               {"rollout": record["id"], "app": app, "env": env})
        return journal

    def _already_done(self, request):
        """True (and the request dropped) if its rollout already ended: its master
        died after closing the record and before dropping the request. Running it
        again would repeat a whole rollout (a bad image's outage and rollback)."""
        app, env = request["app"], request["env"]
        done = next((r for r in itertools.islice(self.records.recent(app, env), 10)
                     if r.get("request") == request["id"] and r.get("status") != "running"), None)
        if done is None:
            return False
        if done["status"] == "succeeded" and done.get("to_digest"):
            state = self.records.env_state(app, env)
            if state.get("last_good_rollout", "") < done["id"]:
                self.records.set_env_state(app, env, {"last_good": done["to_digest"], "last_good_rollout": done["id"]})
        self.settle_left_behind(app, env, done)  # the dead master may not have (it is safe to repeat)
        self.records.drop_request(app, env, request["id"])
        log.info("saltcd: %s/%s: request %s had run (rollout %s, %s): dropped", app, env, request["id"],
                 done["id"], done["status"])
        return True

    def _narrow_converge(self, request):
        """Keep only the minions of a converge still left behind for its release (a
        rollout may have reached them since it was queued); False, and the request
        dropped as superseded, when none is."""
        still = self.still_behind(request)
        if still:
            request["minions"] = still
            return True
        self._supersede_record(request, None, reason="its minions were reached since it was queued")
        self.records.drop_request(request["app"], request["env"], request["id"])
        return False

    def _supersede(self, older, newest):
        reason = {}
        if is_converge(older):
            reason["reason"] = ("a newer converge of the same minions" if is_converge(newest)
                                else "a rollout of the whole environment reaches these minions")
        self._supersede_record(older, newest, **reason)
        if not older.get("digest") and older.get("digest_hint"):
            # saltcd heard of this push and chose the newer request: reconcile
            # must not bring it back (over a rollback the operator ran meanwhile).
            self.records.set_resolved(older["app"], older["env"], older["tag"], older["digest_hint"])
        self.records.drop_request(older["app"], older["env"], older["id"])

    def _supersede_record(self, older, newest, reason="a newer push arrived before this one ran"):
        """Record `older` as superseded by the request `newest` (None: by what happened meanwhile)."""
        by = newest["id"] if newest else None
        record = store.new_record(older)
        record.update({"status": "superseded", "ended": time.time(), "superseded_by": by, "reason": reason})
        self.records.save_rollout(record)
        self.reporter.fire(vocabulary.deploy_tag(older["app"], older["env"], "superseded"),
                           {"rollout": record["id"], "request": older["id"], "superseded_by": by,
                            "app": older["app"], "env": older["env"]})

    def _take_over(self, journal, held):
        """Make `journal` (a dead master's running record) this master's: say who
        took it over from whom, at which step, with which token."""
        before = journal.get("holder") or {}
        journal.setdefault("takeovers", []).append({
            "master": self.master, "from": before.get("master"), "at": time.time(), "token": held.token,
            "batches_done": sum(1 for b in journal.get("batches", []) if b.get("kind") == "batch")})
        self.reporter.progress(f"{journal['app']}/{journal['env']}: taking over rollout {journal['id']} "
                               f"from master {before.get('master')}")
        self.reporter.fire(vocabulary.deploy_tag(journal["app"], journal["env"], "taken_over"),
                           {"rollout": journal["id"], "app": journal["app"], "env": journal["env"],
                            "digest": journal.get("to_digest"), "master": self.master,
                            "from": before.get("master")})
        return journal

    def _run_request(self, request, test=False, held=None, journal=None):
        """Run one request (or, with `journal`, go on with the rollout another master
        began for it) while holding its app/env's lock `held`."""
        app, env = request["app"], request["env"]
        deployment = self.settings.deployment(app, env)
        record = self._take_over(journal, held) if journal else store.new_record(request)
        # Whose deploy data the minions may be served: this process, and with a
        # shared store this master's lock and the token the minions compare.
        record["holder"] = {**holder.current(), **(held.stamp() if held else {})}
        try:
            # A pinned request (a rollback) needs no registry: the digest was
            # deployed before and is on the minions or in the registry by digest.
            # A digest CI signed is confirmed: it must be this repository's.
            # A rollout taken over deploys what its journal says.
            digest = (journal or {}).get("to_digest") or request.get("digest") or \
                self._tag_digest(deployment, request["tag"])
            if request.get("signed_digest") and not journal:
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
            fleet = locking.Guarded(self.fleet, held) if held is not None and held.token else self.fleet
            run = rollout.Rollout(deployment, digest, fleet, self.reporter, record, save=save,
                                  last_good=last_good, clock=self.clock,
                                  specs=lambda spec_id: self.records.spec(app, env, spec_id),
                                  left_behind=self.records.left_behind(app, env))
            if is_converge(request):
                # A converge taken over is simply run again: every step of it is idempotent.
                result = run.converge(request["minions"], request.get("spec"))
            else:
                result = run.resume() if journal else run.run(test=test)
        except Fenced:
            # Another master holds app/env now: it finishes this rollout from the
            # journal. Nothing more is written or done here.
            self._abandon(run, record)
            raise
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
            self.settle_left_behind(app, env, result)
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
        fenced = False
        try:
            save(record)
        except Fenced:
            fenced = True  # another master finishes this rollout: no `finished` from here
            raise
        finally:
            if not test and not fenced:
                self.reporter.fire(*rollout.finished_event(record))
        return record

    def plan(self, app, env, user="operator"):
        """What a rollout would do now, without changing anything."""
        request = intake.operator_request(self.settings, app, env, user)
        return self._run_request(request, test=True)



"""Cooldowns and deploy windows: when a queued request may run, and
whether an operator's request may be made now.

A part of the queue's Controller (saltcd.queue.controller), as a mixin: it
uses the controller's settings, records, fleet and reporter."""

import logging
import time

from saltcd import vocabulary
from saltcd.config import deploy_windows
from saltcd.errors import NotFound, Refused
from saltcd.queue import left_behind

log = logging.getLogger(__name__)

# Requests a person made on purpose: cooldown and windows never hold them in the
# queue (the window was checked, or overridden with force, when they were made).
# Nor a converge: like a rollback, it brings minions back to a release that ran.
UNHELD_KINDS = ("operator", "rollback", "promote", left_behind.KIND)


def when(moment):
    """`2026-11-26 09:00:00 UTC` — a time an operator can read."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


class Holds:
    """Cooldowns and deploy windows of the controller."""

    def check_window(self, app, env, force=False, now=None):
        """Refuse an operator's rollout while `env`'s windows are closed, unless `force`."""
        dep = self.settings.deployment(app, env)
        now = time.time() if now is None else now
        if force or deploy_windows.is_open(dep.windows, now):
            return
        try:
            opens = f"the next window opens at {when(deploy_windows.next_open(dep.windows, now))}"
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
        if request.get("approved_by") or request["trigger"].get("kind") in UNHELD_KINDS:
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
                                     f"({'; '.join(w.text for w in dep.windows)}); runs at {when(opens)}")
        else:
            why, reason = "cooldown", (f"cooldown of {dep.cooldown:g} s from the push at "
                                       f"{when(request.get('received') or now)}; runs at {when(opens)}")
        return {"not_before": opens, "waiting_for": why, "reason": reason}

    def due_pairs(self, now=None):
        """(app, env) pairs with a pending request that may run now (`deploy.resume`)."""
        now = time.time() if now is None else now
        due = []
        for app, env in self.records.app_envs_with_requests():
            pending = self.records.pending(app, env)
            try:
                if pending and self.hold(self.to_run(pending), now) is None:
                    due.append((app, env))
            except NotFound:
                due.append((app, env))  # no longer configured: the drain records why
        return due

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

"""deploy.watch's loop: follow one rollout of an app/env through its record.

Any minion can put a `saltcd/deploy/...` event on the master's bus, with any
data, so an event is only the cue to read the rollout's record again: every
line shown comes from saltcd's own store (views.record_lines), the rollout
followed is one saltcd recorded, and it has ended when its record says so.
Salt-agnostic: the runner hands in the bus's next event and the store.
"""

import time

from saltcd import vocabulary
from saltcd.present import views

# Seconds between reads of the record when no cue came for it: a lost event
# must neither hold the watch nor hide a step.
POLL = 5
# Steps that are not a rollout running (a request queued or waiting, a push
# waiting for approval): no cue to adopt or re-read anything.
NOT_RUNNING = ("superseded", "waiting", "awaiting_approval")


def cue(event, app, env):
    """The rollout id an event of app/env names, or None (no event, another
    app/env, a step that is not a rollout running, no id)."""
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        return None
    prefix = vocabulary.deploy_tag(app, env)
    tag = str(event.get("tag") or "")
    if not tag.startswith(prefix) or tag[len(prefix):] in NOT_RUNNING:
        return None
    rollout_id = event["data"].get("rollout")
    return rollout_id if isinstance(rollout_id, str) else None


def adoptable(record, since):
    """Is `record` a rollout to follow: one running, or one that ran and ended
    after `since` (a replayed event naming an old rollout is not news)?"""
    if not record or record.get("status") == "superseded":
        return False
    ended = record.get("ended")
    return record.get("status") == "running" or (isinstance(ended, (int, float)) and ended >= since)


def follow(next_event, records, progress, app, env, timeout, now=time.time):
    """Show the running (or else the next) rollout of app/env until its record
    says it ended, or for at most `timeout` seconds.

    `next_event()` is the bus's next `saltcd/deploy/<app>/<env>/` event (a dict
    with `tag` and `data`) or None after a short wait; subscribe before calling
    this, so that no step falls between the read of the store and the first
    event. `records` is the store (running_rollouts, rollout); `progress(line)`
    shows a line. Returns the last record read: ended, still running at the
    timeout, or None when no rollout came.
    """
    began = now()
    running = records.running_rollouts(app, env)
    record = running[-1] if running else None
    if record:
        progress(f"{app}/{env}: attached to rollout {views.clean(record['id'])} "
                 f"(started {views.when(record.get('started'))})")
    else:
        progress(f"{app}/{env}: no rollout running; waiting for the next one")
    shown, read = set(), now()
    while True:
        if record is not None:
            for line in views.record_lines(record, shown):
                progress(line)
            if record.get("status") != "running":
                return record
        if now() - began >= timeout:
            return record
        named = cue(next_event(), app, env)
        if record is None:
            found = records.rollout(app, env, named) if named else None
            record = found if adoptable(found, began) else None
        elif named == record["id"] or now() - read >= POLL:
            read = now()
            record = records.rollout(app, env, record["id"]) or record

"""Rollout notifications: `saltcd/deploy/...` events to chat and HTTP endpoints.

Configured under `saltcd:notify` (a list); sent by the `saltcd_notify` master
engine from its own thread and bounded queue, so an endpoint that is slow,
down or failing never holds up or fails a rollout: each message gets a few
tries with backoff, then is dropped with a log line. The secret (`secret`, an
sdb:// URI allowed) is sent as `Authorization: Bearer <secret>`, over https
only; it is never logged, nor put in an event or a message. A log line names
an endpoint by its scheme and host only (a Slack webhook's secret is its path).
No redirect is followed: a 3xx answer is a failed send.

Any minion can put an event with a `saltcd/deploy/...` tag on the master's bus
(`event.fire_master`), so an event is only the cue: a notification is sent
only for a rollout saltcd itself recorded (`Records`), with the record's
app, env, digest, outcome and reason, and at most once per rollout and kind
(the marks are in saltcd's store: an engine restart forgets none). Its text,
part of which minions reported, is shown through views.clean, and a Slack
message's is escaped, so that it cannot mention a channel or plant a link.
"""

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from saltcd.present import views

log = logging.getLogger(__name__)

QUEUE_SIZE = 200


def kind_of(tag, data):
    """Which notification a `saltcd/deploy/<app>/<env>/<step>` event is, or None.

    Only `started` and `finished` count (one each per rollout, whatever path it
    took): a finished rollout is `finished` when it went well, `rolled_back`
    when it was rolled back, `failed` otherwise (failed, paused...).
    """
    step = tag.rsplit("/", 1)[-1]
    if step == "started":
        return "started"
    if step == "finished":
        status = data.get("status")
        if status in ("succeeded", "unchanged", "converged"):
            return "finished"
        return "rolled_back" if status == "rolled_back" else "failed"
    return None


class Records:
    """Turns a `saltcd/deploy/<app>/<env>/started|finished` event into the data
    of its notification, taken from saltcd's own rollout record, or None.

    `find(app, env, rollout_id)` is the store's lookup (store.Store.rollout);
    `marks` remembers what was sent (sent_marks.SentMarks, in the store).
    None, with a warning, when no such rollout was recorded for that app and
    env (a forged or stray event), when a `finished` event names a rollout
    still running, or when the rollout is too old to be news; None when that
    rollout's notification of that kind was already sent (a replayed event,
    also across a restart of the engine)."""

    def __init__(self, find, marks):
        self.find = find
        self.marks = marks

    def data(self, tag, event, now=None):
        parts = tag.split("/")
        if len(parts) != 5 or parts[4] not in ("started", "finished") or not isinstance(event, dict):
            return None
        app, env, step = parts[2], parts[3], parts[4]
        record = self.find(app, env, event.get("rollout"))
        if not record or (record.get("app"), record.get("env")) != (app, env):
            log.warning("saltcd: %s names no rollout saltcd recorded: no notification", tag)
            return None
        if step == "finished" and record.get("status") in (None, "running", "planned"):
            log.warning("saltcd: %s for rollout %s, which has not finished: no notification", tag, record["id"])
            return None
        if self.marks.stale(record["id"], now):
            log.warning("saltcd: %s for rollout %s, which is too old to notify: no notification", tag, record["id"])
            return None
        if self.marks.sent(app, env, record["id"], step):
            log.info("saltcd: %s for rollout %s was already notified", tag, record["id"])
            return None
        # Marked before it is sent: at most once, even if the engine stops in between.
        self.marks.mark(app, env, record["id"], step, now)
        data = {"app": app, "env": env, "digest": record.get("to_digest"), "rollout": record["id"],
                "minions": record.get("minions") or []}
        if step == "finished":
            data.update(status=record["status"], reason=record.get("reason"))
        return data


def message(kind, tag, data):
    """The fields of one notification (the generic JSON body)."""
    parts = tag.split("/")
    app, env = data.get("app") or parts[2], data.get("env") or parts[3]
    digest = data.get("digest") or data.get("to_digest")
    status = data.get("status") or ("running" if kind == "started" else kind)
    reason = data.get("reason")
    if not reason:
        reason = (f"rolling out to {', '.join(data.get('minions') or [])}" if kind == "started"
                  else "every minion healthy" if kind == "finished" else status)
    fields = {"event": kind, "app": app, "env": env, "digest": digest, "short": views.short(digest),
              "outcome": status, "reason": str(reason), "rollout": data.get("rollout")}
    # Minions reported part of this text (state comments): shown like everywhere else.
    fields = {key: views.clean(value) if isinstance(value, str) else value for key, value in fields.items()}
    fields["reason"] = " ".join(fields["reason"].split())[:300]  # one short line
    return fields


def slack_escaped(text):
    """Slack's escaping of message text: `<!channel>` or `<http://x|click>` in a
    reason shows as typed, never as a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body(target, msg):
    """The request body for `target`: Slack's `{"text": ...}` or the fields as JSON."""
    if target.format == "slack":
        icon = {"started": ":rocket:", "finished": ":white_check_mark:", "rolled_back": ":rewind:",
                "failed": ":x:"}[msg["event"]]
        text = (f"{icon} saltcd {msg['app']}/{msg['env']} {msg['event']}: {msg['short']} "
                f"({msg['outcome']}) {msg['reason']} [rollout {msg['rollout']}]")
        return {"text": slack_escaped(text)}
    return msg


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: the message (and its bearer secret) goes to the
    configured endpoint or nowhere. urllib then raises the 3xx as HTTPError."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# urllib's usual handlers (proxies from the environment, https with certificate
# checks) but one that follows no redirect.
_OPENER = urllib.request.build_opener(_NoRedirect)


def send(target, payload):
    """POST `payload` as JSON once; True on a 2xx answer (a redirect is a failure, not followed)."""
    request = urllib.request.Request(target.url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "saltcd-notify"})
    if target.secret:
        request.add_header("Authorization", f"Bearer {target.secret}")
    try:
        with _OPENER.open(request, timeout=target.timeout) as answer:
            return 200 <= answer.status < 300
    except urllib.error.HTTPError as exc:
        exc.close()
        redirect = " (a redirect: not followed)" if 300 <= exc.code < 400 else ""
        log.warning("saltcd: notification to %s answered %s%s", target, exc.code, redirect)
    except (OSError, ValueError) as exc:
        log.warning("saltcd: notification to %s failed: %s", target, type(exc).__name__)
    return False


class Notifier:
    """One bounded queue and sender thread per endpoint: `submit` never blocks nor
    raises, and a dead endpoint's retries never delay another endpoint's messages."""

    def __init__(self, targets_, backoff=1.0):
        self.targets = targets_
        self.backoff = backoff
        self.queues = [queue.Queue(maxsize=QUEUE_SIZE) for _ in targets_]
        self.threads = [threading.Thread(target=self._run, args=(t, q), name="saltcd-notify", daemon=True)
                        for t, q in zip(targets_, self.queues)]
        for thread in self.threads:
            thread.start()

    def submit(self, tag, data):
        """Queue the notifications of one event for every target that wants them."""
        kind = kind_of(tag, data)
        if kind is None:
            return
        msg = message(kind, tag, data)
        for target, pending in zip(self.targets, self.queues):
            if kind not in target.events:
                continue
            try:
                pending.put_nowait(body(target, msg))
            except queue.Full:
                log.warning("saltcd: notification queue of %s full; %s %s/%s dropped",
                            target, kind, msg["app"], msg["env"])

    def _run(self, target, pending):
        while True:
            payload = pending.get()
            if payload is None:
                return
            for attempt in range(target.retries + 1):
                if send(target, payload):
                    break
                if attempt < target.retries:
                    time.sleep(self.backoff * 2 ** attempt)
            else:
                log.error("saltcd: notification to %s dropped after %d tries", target, target.retries + 1)

    def close(self, wait=5):
        """Send what is queued (within about `wait` seconds), then stop."""
        for pending in self.queues:
            try:
                pending.put(None, timeout=wait)
            except queue.Full:
                pass
        for thread in self.threads:
            thread.join(wait)

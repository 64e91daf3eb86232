"""N registry notifications posted to the master's webhook, and where each one went.

Posts go to 127.0.0.1 only, in bursts of BURST from WORKERS threads with a
pause between bursts. The mix: pushes of the digest every app already runs
(so rollouts are real but change nothing), the same envelope posted twice (a
registry retry), and pulls and blob pushes that saltcd must ignore (the
webhook answers them itself: nothing to deploy). A post is lost unless the
webhook answered it so, or its reaction ran and each request it made ended in
the history; a push the webhook refused, did not answer or answered so is lost too.
"""

import collections
import json
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import cpu
from bench.context import BenchError
from bench.scenarios import converge_all
from saltcd.ingress import registry_events
from sandbox import loopback

APPS = ("m1b1", "m3b1", "m3b50", "m6b1")
BURST = 50
WORKERS = 8
PAUSE = 0.2
REACTION_TIMEOUT = 600
IDLE = 30
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _envelope(registry, app, digest, action="push", media_type=MANIFEST, tag="dev"):
    event = {"id": str(uuid.uuid4()), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "action": action,
             "target": {"mediaType": media_type, "repository": f"bench/{app}", "digest": digest},
             "request": {"host": registry, "method": "PUT" if action == "push" else "GET"}}
    if media_type == MANIFEST:
        event["target"]["tag"] = tag
    return json.dumps({"events": [event]}).encode()


def posts(count, registry, digest):
    """[(kind, body)]: 60 % pushes over APPS, 20 % re-posts of the previous push,
    10 % pulls, 10 % blob pushes."""
    out, last_push = [], None
    for number in range(count):
        app = APPS[number % len(APPS)]
        slot = number % 10
        if slot < 6 or last_push is None:
            last_push = _envelope(registry, app, digest)
            out.append(("push", last_push))
        elif slot < 8:
            out.append(("duplicate", last_push))
        elif slot == 8:
            out.append(("pull", _envelope(registry, app, digest, action="pull")))
        else:
            out.append(("blob", _envelope(registry, app, "sha256:" + uuid.uuid4().hex * 2,
                                          media_type="application/octet-stream")))
    return out


def _post(url, token, body):
    """POST one notification; (its HTTP status or None when the webhook did not
    answer, whether it said there was nothing to deploy in it)."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/vnd.docker.distribution.events.v1+json",
        "Authorization": f"Bearer {token}"})
    try:
        with loopback.OPENER.open(request, timeout=30) as response:
            text = response.read().decode("utf-8", "replace")
            return response.status, text.strip() == registry_events.NOTHING_TO_DEPLOY
    except urllib.error.HTTPError as exc:
        return exc.code, False
    except (urllib.error.URLError, OSError):
        return None, False


def _posted(body):
    """The repositories a posted body (bytes) pushes, one per push. Posts are
    matched to reactions by these, with their counts: the webhook hands on only
    the pushes it parsed out (no event ids), and each post is one event."""
    try:
        return [str(push.repository) for push in registry_events.parse_distribution(body).pushes]
    except registry_events.PayloadError:
        return []


def _handed(pushes):
    """The repositories of the pushes an ingress event or a reaction carries."""
    return [p.get("repository") for p in pushes or [] if isinstance(p, dict)]


def run(ctx, count):
    """Post `count` notifications; account for every one of them."""
    digest = ctx.images["a"]
    converge_all(ctx, dict.fromkeys(APPS, digest))
    token = Path(ctx.state["webhook_token_file"]).read_text(encoding="ascii").strip()
    plan = posts(count, ctx.state["registry"], digest)
    mark = ctx.bus.mark()
    cpu_before = cpu.master_cpu(ctx.conf_dir)
    started = time.time()
    answers = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for first in range(0, len(plan), BURST):
            burst = plan[first:first + BURST]
            answers += list(pool.map(lambda item: _post(ctx.state["webhook_url"], token, item[1]), burst))
            time.sleep(PAUSE)
    posted = time.time()
    statuses = [status for status, _ in answers]
    accepted_posts = sum(1 for s in statuses if s == 200)

    # Every post the webhook passed on is one reaction: wait until each post's pushes reacted, or none did for IDLE s.
    expected = _passed_on(plan, answers)
    deadline = time.monotonic() + REACTION_TIMEOUT
    last_change, missing = time.monotonic(), None
    read, reacted = mark, collections.Counter()
    while time.monotonic() < deadline and time.monotonic() - last_change < IDLE:
        new = ctx.bus.between(read)  # only what came since the last look
        read += len(new)
        reacted += _reacted_ids(_accept_returns(new), expected)
        left = sum((expected - reacted).values())
        if left == 0:
            break
        if left != missing:
            last_change, missing = time.monotonic(), left
        time.sleep(0.5)
    records = settle(ctx, APPS)
    settled = time.time()
    # Read the bus again: a reaction that came while the queues settled still counts.
    events = ctx.bus.between(mark)
    returns = [r for r in _accept_returns(events) if not expected.keys().isdisjoint(r[1])]
    reacted = max((at for at, _, _ in returns), default=None)
    cpu_used = cpu.delta(cpu_before, cpu.master_cpu(ctx.conf_dir))
    hooks = _hook_ids(events)
    return _account(plan, answers, returns, records, hooks, {
        "posts": count, "accepted_http": accepted_posts,
        "refused_http": len(statuses) - accepted_posts,
        "post_seconds": round(posted - started, 3),
        # Offered load: bursts of BURST with PAUSE between them, not the webhook's ceiling.
        "posts_per_second": round(count / (posted - started), 1),
        "reacted_seconds": round(reacted - started, 3) if reacted else None,
        "reactions_per_second": round(len(returns) / (reacted - started), 1) if reacted else None,
        "settled_seconds": round(settled - started, 3),
        "cpu_seconds": cpu_used,
        "cpu_ms_per_post": {role: round(1000 * used / count, 2) for role, used in cpu_used.items()},
    })


def _passed_on(plan, answers):
    """Pushed repositories of the posts the webhook accepted and put on the bus
    (not those it answered with nothing to deploy), counted."""
    return collections.Counter(repo for (_, body), (status, nothing) in zip(plan, answers)
                               if status == 200 and not nothing for repo in _posted(body))


def _reacted_ids(returns, expected):
    """Pushed repositories of the bench's posts that have a finished reaction, counted."""
    return collections.Counter(repo for _, repos, _ in returns for repo in repos if repo in expected)


def _hook_ids(events):
    """Pushed repositories of every event the webhook engine put on the bus, counted."""
    return collections.Counter(repo for e in events if e.tag.startswith("saltcd/ingress/")
                               for repo in _handed(e.data.get("pushes")))


def _accept_returns(events):
    """[(when, repositories its pushes name, the runner's return)] of every deploy.accept reaction."""
    out = []
    for event in events:
        if event.tag.startswith("salt/run/") and event.tag.endswith("/ret") \
                and event.data.get("fun") == "runner.deploy.accept":
            args = event.data.get("fun_args") or []
            data = next((a.get("data") for a in args if isinstance(a, dict) and "data" in a), None) or {}
            out.append((event.at, _handed(data.get("pushes")), event.data.get("return") or {}))
    return out


def _account(plan, answers, returns, records, hooks, figures):
    """Where every post went: answered with nothing to deploy, ignored with a
    reason, or requests that ran or were superseded."""
    expected = _passed_on(plan, answers)
    at_door = collections.Counter(kind for (kind, _), (status, nothing) in zip(plan, answers)
                                  if status == 200 and nothing)
    refused = collections.Counter(kind for (kind, _), (status, _) in zip(plan, answers) if status != 200)
    seen = collections.Counter()
    outcome = collections.Counter()
    request_ids = []
    for _, ids, verdict in returns:
        seen.update(ids)
        if verdict.get("rejected"):
            outcome["rejected"] += 1
        elif verdict.get("accepted"):
            outcome["accepted"] += 1
            request_ids += [r["id"] for r in verdict["accepted"]]
        elif verdict.get("ignored"):
            outcome["ignored_with_reason"] += 1
        else:
            outcome["no_verdict"] += 1
    history = {}
    for app in APPS:
        for record in records.rollouts(app, "dev"):
            history[record.get("request")] = record.get("status")
    ended = collections.Counter(history.get(rid, "missing") for rid in request_ids)
    no_reaction = sum((expected - seen).values())
    # Where a post without reaction was lost: before the bus, or between bus and reactor.
    never_on_bus = sum((expected - hooks).values())
    # A push (or its re-post) refused, unanswered or answered with nothing to
    # deploy would never roll out (a registry would retry; this bench does not).
    pushes_dropped = sum(counts["push"] + counts["duplicate"] for counts in (at_door, refused))
    lost = no_reaction + ended.get("missing", 0) + outcome["no_verdict"] + outcome["rejected"] + pushes_dropped
    return {**figures, "kinds": dict(collections.Counter(kind for kind, _ in plan)),
            "nothing_to_deploy_at_the_webhook": dict(at_door),
            "reactions": len(returns), "verdicts": dict(outcome), "requests": len(request_ids),
            "request_outcomes": dict(ended), "without_reaction": no_reaction,
            "without_reaction_but_on_the_bus": no_reaction - min(no_reaction, never_on_bus), "lost": lost}


def settle(ctx, apps, timeout=300):
    """Wait until no bench app has pending requests or a running rollout."""
    import salt.config  # pylint: disable=import-outside-toplevel

    from saltcd.master import salt_cache  # pylint: disable=import-outside-toplevel
    from saltcd.store import Store  # pylint: disable=import-outside-toplevel

    records = Store(salt_cache.cache_for(salt.config.master_config(ctx.state["master_config_file"])))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [a for a in apps if records.pending(a, "dev")
                or any(r.get("status") == "running" for r in records.rollouts(a, "dev"))]
        if not busy:
            return records
        time.sleep(0.5)
    raise BenchError(f"bench apps still busy after {timeout} s: {busy}")

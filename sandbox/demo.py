"""The saltcd demo, against a running sandbox (the state read from sandbox.json).

1. build web 1.0.0, push ``:dev``: it rolls out to the dev minions only;
2. build web 2.0.0, push ``:dev``: rolled out batch by batch;
3. tag that same digest ``:qa``: it rolls out to qa;
4. push a broken ``:dev`` (health 404): batch 1 fails and is rolled back;
5. post a notification without the registry's token: rejected;
6. plan prod (``deploy.rollout ... test=True``): nothing changes;
7. promote qa's healthy digest to prod (``deploy.promote``);
8. push web 2.1.0 ``:prod``, approve it, and watch prod replace it
   start-first under continuous traffic: a live count of requests served
   and failed per host, and 0 failed expected;
9. a table per environment and minion, checked live.

Everything seen on the master's event bus is printed as it happens; every
expectation is checked, and ``run`` returns True only if all of them held.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import docker

from saltcd import vocabulary
from saltcd.config.batches import plan_batches
from saltcd.ingress import registry_events
from saltcd.rollout import short
from sandbox import app_image, loopback
from sandbox.traffic import Traffic, summary_line

# Where the demo leaves its rollout report (git ignores it).
REPORT = Path(__file__).resolve().parents[1] / "demo-report.html"

ROLLOUT_TIMEOUT = 180
PLAN_TIMEOUT = 120
HTTP_TIMEOUT = 3
HOOK_PREFIXES = (vocabulary.INGRESS_TAG_PREFIX, *vocabulary.SALT_HOOK_PREFIXES)
VERSIONS = ("1.0.0", "2.0.0", "3.0.0-broken", "2.1.0")
# The environment sandbox/cli.py replaces start-first (behind each host's HAProxy).
START_FIRST_ENV = "prod"
TICK = 1.0  # seconds between two live traffic lines

_t0 = time.monotonic()


def say(text: str) -> None:
    """A line of the demo, stamped with the seconds since it started."""
    print(f"[{time.monotonic() - _t0:6.1f}s] {text}", flush=True)


class Expectations:
    """What the demo checks, printed as it goes, and whether all of it held."""

    def __init__(self):
        self.results: list[tuple[bool, str]] = []

    def check(self, ok, text: str) -> bool:
        """Record and print one expectation."""
        self.results.append((bool(ok), text))
        say(f"  {'ok  ' if ok else 'FAIL'} {text}")
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        """The texts of the expectations that did not hold."""
        return [text for ok, text in self.results if not ok]


class EventWatcher:
    """The master's event bus, subscribed before anything is pushed."""

    def __init__(self, master_conf_file: str):
        # Salt is slow to import: only when the demo runs.
        import salt.config  # pylint: disable=import-outside-toplevel
        import salt.utils.event  # pylint: disable=import-outside-toplevel

        opts = salt.config.master_config(master_conf_file)
        self.bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)

    def close(self) -> None:
        """Disconnect from the bus."""
        self.bus.destroy()

    def follow(self, app: str, env: str, digest: str, timeout: float | None = None, until: str = "finished",
               on_tick=None):
        """Print the events of app/env until its rollout of `digest` finishes
        (or the event `until` for that digest comes); call `on_tick()` every TICK s.

        Returns (that event's data or None on timeout, [(suffix, data)] seen).
        """
        prefix = f"saltcd/deploy/{app}/{env}/"
        seen = []
        timeout = ROLLOUT_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        ticked = time.monotonic()
        while time.monotonic() < deadline:
            if on_tick and time.monotonic() - ticked >= TICK:
                ticked = time.monotonic()
                on_tick()
            event = self.bus.get_event(wait=0.2 if on_tick else 1, full=True)
            if not event:
                continue
            tag, data = event["tag"], event["data"]
            if tag.startswith(HOOK_PREFIXES):
                _print_hook(data)
            elif tag == vocabulary.REJECTED_TAG:
                say(f"  saltcd REJECTED an event: {data.get('reason')}")
            elif tag.startswith(prefix):
                suffix = tag[len(prefix):]
                seen.append((suffix, data))
                _print_deploy_event(f"{app}/{env}", suffix, data)
                if suffix == until and data.get("digest") in (digest, None):
                    return data, seen
        say(f"  no {until} event of {app}/{env} within {timeout} s")
        return None, seen


def _print_hook(data: dict) -> None:
    """A registry notification reached the webhook: show its deploy triggers
    (the saltcd_webhook engine's event carries the pushes it parsed out of the
    body; salt-api's, the body itself)."""
    if "pushes" in data:
        pushes = [(p.get("repository"), p.get("tag"), p.get("digest")) for p in data["pushes"] or []
                  if isinstance(p, dict)]
    else:
        try:
            parsed = registry_events.parse_distribution(data.get("body", b""))
        except registry_events.PayloadError as exc:
            say(f"  webhook: unreadable notification ({exc})")
            return
        pushes = [(push.repository, push.tag, push.digest) for push in parsed.pushes]
    for repository, tag, digest in pushes:  # any minion can fire the tag: shown, not trusted
        digest = short(digest if isinstance(digest, str) else None)
        say(f"  registry -> webhook: manifest push {registry_events.shown(str(repository), 120)}:"
            f"{registry_events.shown(str(tag), 130)} ({registry_events.shown(digest, 40)})")


def _print_deploy_event(name: str, suffix: str, data: dict) -> None:
    if suffix == "started":
        batches = " | ".join(", ".join(batch) for batch in data.get("batches", []))
        say(f"  {name} started: {short(data.get('digest'))} to {len(data.get('minions', []))} minions, "
            f"batches: {batches}")
    elif suffix in ("batch", "rollback"):
        for minion, result in sorted((data.get("minions") or {}).items()):
            verdict = "healthy" if result.get("ok") else f"FAILED ({result.get('comment')})"
            say(f"  {name} {suffix} {data.get('number')}: {minion} "
                f"{short(result.get('from'))} -> {short(result.get('to'))} {verdict}")
    elif suffix == "pulled":
        outcome = f"{data.get('seconds')} s" if data.get("ok") else f"FAILED ({data.get('comment')})"
        say(f"  {name} pulled ahead on {data.get('minion')}: {outcome}")
    elif suffix == "awaiting_approval":
        say(f"  {name} awaiting approval: {short(data.get('digest'))} (`salt-run deploy.approve` deploys it)")
    elif suffix == "watch":
        problems = "; ".join(f"{m} {what}" for m, what in sorted((data.get("problems") or {}).items()))
        say(f"  {name} watched for {data.get('seconds')} s after the last batch: {data.get('outcome')}"
            + (f" ({problems})" if problems else ""))
    elif suffix == "hook":
        outcome = "passed" if data.get("ok") else f"FAILED ({data.get('comment')})"
        say(f"  {name} {data.get('kind')} hook on {data.get('minion')}: {outcome}")
    elif suffix == "finished":
        reason = f" ({data['reason']})" if data.get("reason") else ""
        say(f"  {name} finished: {data.get('status')}{reason}")
    else:
        say(f"  {name} {suffix}: {data.get('reason') or data.get('status') or ''}")


# -- looking at the hosts like a user -----------------------------------------


def container_on(docker_url: str, name: str) -> dict | None:
    """`docker inspect` of container `name` on one host: image and running (None: no such container)."""
    with closing(docker.DockerClient(base_url=docker_url, timeout=10)) as client:
        try:
            attrs = client.containers.get(name).attrs
        except docker.errors.NotFound:
            return None
    return {"image": attrs["Config"]["Image"], "running": bool(attrs["State"]["Running"])}


def in_container(docker_url: str, name: str, argv: list) -> tuple[int, str]:
    """`docker exec` of argv in container `name` on one host: (exit code, output)."""
    with closing(docker.DockerClient(base_url=docker_url, timeout=10)) as client:
        try:
            code, output = client.containers.get(name).exec_run(argv)
        except docker.errors.APIError as exc:
            return -1, str(exc)
    return code, output.decode(errors="replace").strip()


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of one GET; 0 and the error when nothing answered."""
    try:
        with loopback.OPENER.open(url, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, resp.read(200).decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError as exc:
        return 0, str(getattr(exc, "reason", exc))


def expect_fleet(state: dict, expect: Expectations, wanted: dict) -> None:
    """Check every minion's `web` container against {env: digest or None (no container)}."""
    app = state["apps"][0]
    for minion in state["minions"]:
        digest = wanted.get(minion["env"])
        info = container_on(minion["docker_host"], app["container"])
        if digest is None:
            expect.check(info is None, f"{minion['id']}: no {app['container']} container")
        else:
            image = f"{app['repository']}@{digest}"
            expect.check(info is not None and info["image"] == image and info["running"],
                         f"{minion['id']}: runs {app['repository']}@{short(digest)}"
                         + ("" if info is None or info["image"] == image else f" (found {info['image']})"))


# -- the steps -------------------------------------------------------------


def batch_count(state: dict, env: str) -> int:
    """How many batches a rollout of web to `env` takes on this sandbox."""
    minions = [m["id"] for m in state["minions"] if m["env"] == env]
    return len(plan_batches(minions, state["apps"][0]["batch"][env]))


def rollout_step(watcher: EventWatcher, expect: Expectations, env: str, digest: str, batches: int) -> None:
    """Follow one rollout to its end; expect success in `batches` batches."""
    finished, seen = watcher.follow("web", env, digest)
    status = finished.get("status") if finished else "no result"
    expect.check(status == "succeeded",
                 f"web/{env} rollout of {short(digest)} succeeded" + ("" if status == "succeeded" else f" ({status})"))
    numbers = [data.get("number") for suffix, data in seen if suffix == "batch"]
    expect.check(numbers == list(range(1, batches + 1)),
                 f"web/{env} went in {batches} health-gated batches (saw {numbers})")


def salt_run(state: dict, *args: str, show_failure: bool = True) -> tuple[int, dict | None]:
    """Run `salt-run -c <sandbox> --out=json ARGS`; (exit code, its JSON return).
    Its output is printed when it exits non-zero, unless the caller expects that."""
    cmd = [str(Path(state["salt_bin_dir"]) / "salt-run"), "-c", state["master_config_dir"], "--out=json", *args]
    say(f"$ salt-run {' '.join(args)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PLAN_TIMEOUT, check=False)
    result = _last_json(proc.stdout)
    if proc.returncode != 0 and show_failure:
        say(proc.stdout[-1500:] + proc.stderr[-1500:])
    return proc.returncode, result


def salt_states(state: dict, minions: list, *args: str) -> dict:
    """`salt -c <sandbox> -L MINIONS state.apply ...`: {minion: every state passed}."""
    cmd = [str(Path(state["salt_bin_dir"]) / "salt"), "-c", state["master_config_dir"], "-L", ",".join(minions),
           "--out=json", "--static", *args]
    say(f"$ salt -L {','.join(minions)} {' '.join(args)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PLAN_TIMEOUT, check=False)
    returns = _last_json(proc.stdout) or {}
    passed = {m: isinstance(returns.get(m), dict) and all(s.get("result") for s in returns[m].values())
              for m in minions}
    if not all(passed.values()):
        say(proc.stdout[-1500:] + proc.stderr[-1500:])
    return passed


def push_auth(state: dict) -> dict | None:
    """Credentials with push rights when the sandbox registry wants them (SANDBOX_REGISTRY=token)."""
    path = state.get("registry_push_auth_file")
    return json.loads(Path(path).read_text()) if path else None


def bad_version_step(watcher: EventWatcher, expect: Expectations, repo: str, builder: str,
                     auth: dict | None = None) -> None:
    """A version whose /health never answers: batch 1 fails, it is rolled back."""
    bad = app_image.build_and_push(builder, repo, "dev", VERSIONS[2], behaviour="unhealthy", auth_config=auth)
    say(f"  pushed {repo}:dev = {bad} (its /health answers 404)")
    finished, seen = watcher.follow("web", "dev", bad)
    status = finished.get("status") if finished else "no result"
    expect.check(status == "rolled_back", f"web/dev rollout of the bad {short(bad)} was rolled back ({status})")
    expect.check([d.get("number") for s, d in seen if s == "batch"] == [1],
                 "the second dev batch never started")


def unauthenticated_step(state: dict, expect: Expectations) -> None:
    """A notification without the registry's token: rejected, recorded, nothing deployed."""
    body = json.dumps({"events": [{"action": "push", "target": {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "repository": "saltcd/web", "tag": "dev", "digest": "sha256:" + "0" * 64},
        "request": {"host": state["registry"]}}]}).encode()
    request = urllib.request.Request(state["webhook_url"], data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    say(f"  POST {state['webhook_url']} with no Authorization header")
    status = None
    try:
        with loopback.OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    # The saltcd_webhook engine refuses it at the door: nothing reaches the bus.
    say(f"  the webhook answered {status}")
    # The engine writes its counts every 5 s: look for up to 20 s.
    counted, deadline = 0, time.monotonic() + 20
    while not counted and time.monotonic() < deadline:
        code, records = salt_run(state, "deploy.rejections", "limit=5")
        counted = sum(row.get("count", 0) for row in (records or {}).get("counted", [])) if code == 0 else 0
        time.sleep(0 if counted else 2)
    expect.check(status == 401 and counted > 0,
                 f"the unauthenticated push was refused at the door (HTTP {status}) and counted "
                 f"in deploy.rejections ({counted})")


def promote_step(state: dict, watcher: EventWatcher, expect: Expectations, digest: str) -> None:
    """`salt-run deploy.promote app=web from=qa to=prod`: prod gets qa's digest."""
    code, result = salt_run(state, "deploy.promote", "app=web", "from=qa", "to=prod")
    watcher.follow("web", "prod", digest, timeout=10)  # print what the bus saw
    expect.check(code == 0 and isinstance(result, dict) and result.get("status") == "succeeded"
                 and result.get("to_digest") == digest,
                 f"promotion deployed qa's {short(digest)} to prod"
                 + ("" if code == 0 else f" (exit {code}: {(result or {}).get('reason')})"))


def start_first_step(state: dict, watcher: EventWatcher, expect: Expectations, repo: str, builder: str,
                     auth: dict | None = None) -> str:
    """A new version to the start-first environment under traffic: 0 failed requests expected.

    The traffic generator opens a fresh connection per request to every host's
    public address (its HAProxy) from before the approval until a second after
    the rollout finished, printing the counts every second. Returns the digest.
    """
    env = START_FIRST_ENV
    app = state["apps"][0]
    urls = {m["id"]: f"http://{m['address']}:{app['host_port']}/version"
            for m in state["minions"] if m["env"] == env}
    digest = app_image.build_and_push(builder, repo, env, VERSIONS[3], auth_config=auth)
    say(f"  pushed {repo}:{env} = {digest}")
    waiting, _ = watcher.follow("web", env, digest, timeout=60, until="awaiting_approval")
    expect.check(waiting is not None, f"the :{env} push waits for approval ({env} is manual)")
    outcome = {}

    def approve():
        outcome["code"], outcome["result"] = salt_run(state, "deploy.approve", "app=web", f"env={env}")

    with Traffic(urls, max_seconds=ROLLOUT_TIMEOUT + 30) as traffic:
        time.sleep(TICK)  # requests flowing, and counted, before anything changes
        say(f"  {traffic.line()}")
        approver = threading.Thread(target=approve, name="demo-approve", daemon=True)
        approver.start()
        finished, _ = watcher.follow("web", env, digest, on_tick=lambda: say(f"  {traffic.line()}"))
        approver.join(PLAN_TIMEOUT)
        time.sleep(TICK)  # a late outage would show too
    counts = traffic.stop()
    say(f"  {summary_line(counts, gaps=True)}")
    result = outcome.get("result") if isinstance(outcome.get("result"), dict) else {}
    status = (finished or {}).get("status", "no result")
    expect.check(outcome.get("code") == 0 and status == "succeeded" and result.get("to_digest") == digest,
                 f"web/{env} start-first rollout of {short(digest)} approved and succeeded ({status})")
    for host, count in counts.items():
        expect.check(count["failed"] == 0 and count["served"] > 0,
                     f"traffic {host}: {count['served']} served, {count['failed']} failed during the "
                     f"start-first rollout (longest gap {count['longest_gap']:.2f} s)")
    return digest


def shop_step(state: dict, watcher: EventWatcher, expect: Expectations, builder: str,
              auth: dict | None) -> None:
    """The real-shaped app: the accessory (the operator's own state) first, then
    two releases of shop's web and worker roles, each after its before hook."""
    shop, dev = state["shop"], [m for m in state["minions"] if m["env"] == "dev"]
    kv = app_image.build_and_push(builder, shop["kv_repository"], "1.0.0", "kv-1.0.0", auth_config=auth)
    pillar = json.dumps({"myteam": {"kv_image": f"{shop['kv_repository']}@{kv}"}})
    passed = salt_states(state, [m["id"] for m in dev], "state.apply", "myteam.kv", f"pillar={pillar}")
    expect.check(all(passed.values()), "the accessory `shop-kv` (myteam.kv, the operator's own state, "
                 f"not rolled by saltcd) runs on shop-net on every dev host ({passed})")
    for version in ("1.0.0", "1.1.0"):
        digest = app_image.build_and_push(builder, shop["repository"], "dev", version, auth_config=auth)
        say(f"  pushed {shop['repository']}:dev = {digest}")
        finished, seen = watcher.follow("shop", "dev", digest)
        status = finished.get("status") if finished else "no result"
        expect.check(status == "succeeded", f"shop/dev rollout of {version} succeeded ({status})")
        hooks = [data for suffix, data in seen if suffix == "hook"]
        order = [suffix for suffix, _ in seen]
        expect.check(len(hooks) == 1 and hooks[0].get("ok") and "batch" in order
                     and order.index("hook") < order.index("batch"),
                     "its before hook (the migration) ran once, before batch 1, and passed")
        image = f"{shop['repository']}@{digest}"
        for minion in dev:
            found = [container_on(minion["docker_host"], name) for name in shop["containers"]]
            expect.check(all(info and info["image"] == image and info["running"] for info in found),
                         f"{minion['id']}: {' and '.join(shop['containers'])} run {short(digest)}")
        host = next((m for m in dev if hooks and m["id"] == hooks[0].get("minion")), dev[0])
        schema = in_container(host["docker_host"], "shop-web", ["/bin/busybox", "cat", "/data/schema-version"])
        expect.check(schema == (0, version), f"{host['id']}: the migration wrote {version} into the volume "
                     f"shop-web reads (found {schema[1]!r})")
        for minion in dev:
            seen_kv = _eventually(lambda m=minion: in_container(
                m["docker_host"], "shop-worker", ["/bin/busybox", "cat", "/data/kv-seen"]), (0, "kv-1.0.0"))
            expect.check(seen_kv == (0, "kv-1.0.0"), f"{minion['id']}: the worker reaches the accessory as `kv` "
                         f"on the private network (it read {seen_kv[1]!r})")
            mark = ["/bin/busybox", "sh", "-c", "/bin/busybox cat /data/upload-1.0.0"]
            if version == "1.0.0":  # a user's upload, to be found after the next release
                in_container(minion["docker_host"], "shop-web",
                             ["/bin/busybox", "sh", "-c", f"echo {minion['id']} > /data/upload-1.0.0"])
            kept = in_container(minion["docker_host"], "shop-web", mark)
            expect.check(kept == (0, minion["id"]), f"{minion['id']}: the upload written under 1.0.0 is in the "
                         f"volume under {version} ({kept[1]!r})")


def _eventually(ask, wanted, seconds=10.0):
    """`ask()` until it returns `wanted` or `seconds` pass; its last answer."""
    deadline = time.monotonic() + seconds
    answer = ask()
    while answer != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = ask()
    return answer


def plan_step(state: dict, expect: Expectations) -> None:
    """`salt-run deploy.rollout app=web env=prod test=True`: print the plan, change nothing."""
    code, plan = salt_run(state, "deploy.rollout", "app=web", "env=prod", "test=True", show_failure=False)
    if not expect.check(isinstance(plan, dict), f"salt-run answered a plan (exit {code})"):
        return
    say(f"  plan status: {plan.get('status')}" + (f" ({plan['reason']})" if plan.get("reason") else ""))
    for batch in plan.get("plan") or []:
        for minion, step in sorted(batch["minions"].items()):
            say(f"  batch {batch['number']}: {minion} {short(step['from'])} -> {short(step['to'])}"
                f"{'' if step['change'] else ' (no change)'}")
    # No :prod tag was pushed, so there is nothing to deploy yet, and salt-run
    # exits non-zero saying so; expect_fleet afterwards checks that planning
    # changed nothing on prod.
    no_tag = code != 0 and "does not exist" in str(plan.get("reason"))
    expect.check(no_tag or (code == 0 and plan.get("status") == "planned"),
                 f"prod plan: nothing to deploy until a :prod tag is pushed (exit {code})")


def _last_json(text: str):
    """The last JSON document in `text` (salt-run may print progress before it)."""
    decoder = json.JSONDecoder()
    found, index = None, 0
    while index < len(text):
        start = text.find("{", index)
        if start < 0:
            break
        try:
            found, index = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
    return found


def final_table(state: dict, expect: Expectations, wanted: dict) -> None:
    """env, minion, digest, running, health, version: looked up live, and checked."""
    app = state["apps"][0]
    rows = [("ENV", "MINION", "DIGEST", "RUNNING", "HEALTH", "VERSION")]
    problems = []
    for minion in state["minions"]:
        mid = minion["id"]
        info = container_on(minion["docker_host"], app["container"])
        digest = info["image"].rsplit("@", 1)[-1] if info and "@" in info["image"] else None
        health = http_get(app["health_urls"][mid])
        version = http_get(app["version_urls"][mid])
        rows.append((minion["env"], mid, short(digest) if info else "-",
                     ("yes" if info["running"] else "no") if info else "-",
                     f"{health[0]} {health[1][:10]}" if health[0] else "-",
                     version[1] if version[0] == 200 else "-"))
        want = wanted.get(minion["env"])
        if want is None:
            ok = info is None and health[0] == 0
        else:
            ok = (digest == want[0] and info["running"] and health == (200, "ok")
                  and version == (200, want[1]))
        if not ok:
            problems.append(mid)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)), flush=True)
    expect.check(not problems, "every minion runs what its environment should, healthy, right version"
                 + (f" (not: {', '.join(problems)})" if problems else ""))


def run(state: dict) -> bool:
    """The whole demo against a running sandbox; True if every expectation held."""
    global _t0  # pylint: disable=global-statement
    _t0 = time.monotonic()
    expect = Expectations()
    app = state["apps"][0]
    repo, builder = app["repository"], state["build_docker_host"]
    watcher = EventWatcher(state["master_config_file"])
    auth = push_auth(state)
    if state.get("registry_mode") == "token":
        say(f"(registry {state['registry']}: TLS and token auth, tokens from {state['token_realm']})")
    try:
        say(f"1. build web {VERSIONS[0]} and push {repo}:dev")
        v1 = app_image.build_and_push(builder, repo, "dev", VERSIONS[0], auth_config=auth)
        say(f"  pushed {repo}:dev = {v1}")
        rollout_step(watcher, expect, "dev", v1, batches=batch_count(state, "dev"))
        expect_fleet(state, expect, {"dev": v1})

        say(f"2. build web {VERSIONS[1]} and push {repo}:dev")
        v2 = app_image.build_and_push(builder, repo, "dev", VERSIONS[1], auth_config=auth)
        say(f"  pushed {repo}:dev = {v2}")
        rollout_step(watcher, expect, "dev", v2, batches=batch_count(state, "dev"))
        expect_fleet(state, expect, {"dev": v2})

        say(f"3. tag the same digest {short(v2)} as {repo}:qa")
        app_image.tag_and_push(builder, repo, v2, "qa", auth_config=auth)
        rollout_step(watcher, expect, "qa", v2, batches=batch_count(state, "qa"))
        expect_fleet(state, expect, {"dev": v2, "qa": v2})

        say(f"4. a bad version: build web {VERSIONS[2]} whose health check fails, push {repo}:dev")
        bad_version_step(watcher, expect, repo, builder, auth)
        expect_fleet(state, expect, {"dev": v2, "qa": v2})

        say("5. a push notification without the registry's token")
        unauthenticated_step(state, expect)
        expect_fleet(state, expect, {"dev": v2, "qa": v2})

        say("6. plan prod without touching it (prod is manual: pushes wait for approval)")
        plan_step(state, expect)
        expect_fleet(state, expect, {"dev": v2, "qa": v2})

        say(f"7. promote qa's healthy digest {short(v2)} to prod")
        promote_step(state, watcher, expect, v2)
        expect_fleet(state, expect, {"dev": v2, "qa": v2, "prod": v2})

        say(f"8. build web {VERSIONS[3]}, push {repo}:prod, approve it: {START_FIRST_ENV} replaces "
            "start-first while every host gets requests back to back")
        v21 = start_first_step(state, watcher, expect, repo, builder, auth)
        expect_fleet(state, expect, {"dev": v2, "qa": v2, "prod": v21})

        say("9. a real-shaped app: shop's web and worker roles, a named volume, the private network "
            "of an accessory the operator's own state runs, and a before hook")
        shop_step(state, watcher, expect, builder, auth)
    finally:
        watcher.close()

    say("10. the fleet now")
    final_table(state, expect, {"dev": (v2, VERSIONS[1]), "qa": (v2, VERSIONS[1]),
                                "prod": (v21, VERSIONS[3])})
    say("11. a picture of dev's last rollout (the rolled-back one): deploy.report")
    # Outside .sandbox/, which the demo removes when it ends.
    code, page = salt_run(state, "deploy.report", "app=web", "env=dev", f"path={REPORT}")
    if expect.check(code == 0 and isinstance(page, dict) and Path(page.get("path", "")).is_file(),
                    f"deploy.report wrote a page (exit {code})"):
        say(f"  open {page['path']} in a browser ({page['status']} rollout {page['rollout']})")
    if expect.failed:
        say(f"{len(expect.failed)} expectation(s) FAILED:")
        for text in expect.failed:
            say(f"  - {text}")
        return False
    say(f"all {len(expect.results)} expectations held")
    return True

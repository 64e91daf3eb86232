"""What every benchmark needs: the sandbox's description, the bus, two images
in every bench repository, and the three ways of rolling them out."""

import datetime
import json
import subprocess
import time
from contextlib import closing
from pathlib import Path

import docker

from bench import ideal, registry_http
from bench.observe import BusRecorder
from saltcd import config as saltcd_config
from sandbox import app_image

# saltcd's default settle, for apps that do not set one (the ideals wait it too).
DEFAULT_SETTLE = next(k.default for k in saltcd_config.KEYS if k.path == f"{saltcd_config.APP}.health.settle")

ROLLOUT_TIMEOUT = 240
BASE_REPO = "bench/base"


class BenchError(RuntimeError):
    """A run did not end as it must (no finished event, wrong digest running...)."""


class Context:
    """The sandbox as the benchmarks see it."""

    def __init__(self, state):
        self.state = state
        self.conf_dir = state["master_config_dir"]
        self.salt_run = str(Path(state["salt_bin_dir"]) / "salt-run")
        self.minions = state["minions"]
        self.apps = state["bench_apps"]
        self.bus = BusRecorder(state["master_config_file"])
        self.images = {}  # version name -> digest, the same in every bench repo
        self.big_images = {}  # MB -> {version: digest}: realistic images with a unique layer each

    def close(self):
        self.bus.close()

    # -- images ----------------------------------------------------------------

    def prepare_images(self):
        """Build versions a and b once and make both available in every bench repo."""
        base = f"{self.state['registry']}/{BASE_REPO}"
        for version in ("a", "b"):
            self.images[version] = app_image.build_and_push(self.state["build_docker_host"], base, version,
                                                            f"bench-{version}")
        for app in self.apps.values():
            target = self.in_registry(app)
            for version, digest in self.images.items():
                registry_http.copy_image(base, target, digest, version)

    def in_registry(self, app):
        """The app's repository on the registry itself: copies go straight there,
        also for apps whose repository names the bench's throttling proxy."""
        return f"{self.state['registry']}/{app['repository'].split('/', 1)[1]}"

    def other(self, digest, images=None):
        """The other of two bench images (`images`: {version: digest} of two; default the tiny ones)."""
        a, b = (images or self.images).values()
        return b if digest == a else a

    def prepare_big_images(self, sizes, versions_of):
        """Images with a unique `size` MB layer each, whose PID 1 ignores SIGTERM,
        pushed to the registry as bench/base<size>:<version>, and copied into the
        repository of each app of `versions_of` ({app: versions it uses})."""
        for size in sizes:
            images = self.big_images.setdefault(size, {})
            base = f"{self.state['registry']}/bench/base{size}"
            for version in sorted({v for versions in versions_of.values() for v in versions} - set(images)):
                small = app_image.build_and_push(self.state["build_docker_host"], base, f"{version}-small",
                                                 f"bench-{version}", behaviour="ignores-sigterm")
                images[version] = registry_http.with_filler(base, small, version, size)
            for app, versions in versions_of.items():
                target = self.in_registry(self.apps[app])
                for version in versions:
                    registry_http.copy_image(base, target, images[version], f"{version}{size}")

    def settle(self, app):
        """The settle saltcd uses for app (per batch; the watch after the last batch is the same)."""
        health = self.apps[app]["health"]
        return health.get("settle", DEFAULT_SETTLE)

    def dockerd_pids(self):
        """{dockerd pid: minion id} of the running sandbox (the throttle tells hosts apart by it)."""
        pids = (self.state.get("pids") or {}).get("dockerd") or {}
        return {pid: name for name, pid in pids.items() if pid}

    # -- who is where ----------------------------------------------------------

    def targets(self, app):
        """The minion records an app's dev environment targets, in fleet order."""
        wanted = self.apps[app]["environments"]["dev"]["target"].split(",")
        return [m for m in self.minions if m["id"] in wanted]

    def containers(self, app):
        """{minion: (container id, image reference, started at, running)} read from each engine."""
        name = self.apps[app]["container"]
        out = {}
        for minion in self.targets(app):
            with closing(docker.DockerClient(base_url=minion["docker_host"], timeout=30)) as client:
                try:
                    attrs = client.api.inspect_container(name)
                except docker.errors.NotFound:
                    out[minion["id"]] = None
                    continue
                image = client.api.inspect_image(attrs["Image"])
            out[minion["id"]] = {"id": attrs["Id"], "started": attrs["State"]["StartedAt"],
                                 "running": attrs["State"]["Running"],
                                 "digests": [d.split("@")[1] for d in image.get("RepoDigests") or []]}
        return out

    def verify(self, app, digest):
        """Raise BenchError unless every target runs `digest`, up, answering its health URL."""
        port = self.apps[app]["ports"][0].split(":")[0]
        for minion, info in self.containers(app).items():
            if not info or not info["running"] or digest not in info["digests"]:
                raise BenchError(f"{app} on {minion} does not run {digest[:19]}: {info}")
            address = next(m["address"] for m in self.minions if m["id"] == minion)
            if not ideal.healthy(f"http://{address}:{port}/health", timeout=5, interval=0.2):
                raise BenchError(f"{app} on {minion} is not healthy")

    # -- the three ways ----------------------------------------------------------

    def push(self, app, tag, digest):
        """PUT the manifest of `digest` as app:tag; returns the time just before the PUT."""
        repo = self.apps[app]["repository"]
        manifest, media_type, _ = registry_http.get_manifest(repo, digest)
        started = time.time()
        registry_http.put_manifest(repo, tag, manifest, media_type)
        return started

    def saltcd(self, app, digest):
        """Push app:dev = digest and follow saltcd until it finishes: the timeline."""
        mark = self.bus.mark()
        pushed = self.push(app, "dev", digest)
        finished = self._finished(app, digest, mark)
        events = self.bus.between(mark)
        return timeline(app, pushed, events, finished)

    def saltcd_all(self, wanted):
        """Push app:dev = digest for each app of {app: digest} at once; {app: status}
        once every one of them has finished."""
        mark = self.bus.mark()
        for app, digest in wanted.items():
            self.push(app, "dev", digest)
        return {app: self._finished(app, digest, mark).data.get("status") for app, digest in wanted.items()}

    def _finished(self, app, digest, mark):
        """saltcd's `finished` event of app:dev = digest after bus index `mark`."""
        finished = self.bus.wait_for(
            lambda e: e.tag == f"saltcd/deploy/{app}/dev/finished" and e.data.get("digest") == digest,
            since=mark, timeout=ROLLOUT_TIMEOUT)
        if finished is None:
            raise BenchError(f"no saltcd/deploy/{app}/dev/finished for {digest[:19]} within {ROLLOUT_TIMEOUT} s")
        return finished

    def ideal(self, app, digest, batch=None, prepull=False):
        """The direct-Docker rollout (pulling everywhere first when `prepull`), with
        saltcd's settle per minion and watch at the end; its wall time."""
        spec = self.apps[app]
        settle = self.settle(app)
        started = time.monotonic()
        ideal.rollout(self.targets(app), spec, digest, batch or spec["batch"], settle=settle, watch=settle,
                      prepull=prepull)
        return time.monotonic() - started

    def naive(self, app, digest, batch, update_mine=True):
        """Point app:naive at digest, then time `salt-run state.orchestrate bench.naive_orch`
        (with dockermod's default mine refresh, or without it as saltcd runs)."""
        spec = self.apps[app]
        self.push(app, "naive", digest)  # saltcd ignores the tag: it maps to no environment
        pillar = {"bench": {
            "targets": ",".join(m["id"] for m in self.targets(app)), "batch": batch,
            "image": f"{spec['repository']}:naive", "container": spec["container"],
            "ports": spec["ports"], "environment": spec["environment"],
            "stop_timeout": spec["stop_timeout"], "port": int(spec["ports"][0].split(":")[0]),
            "path": spec["health"]["path"], "timeout": spec["health"]["timeout"],
            "interval": spec["health"]["interval"]}, "docker.update_mine": update_mine}
        started = time.monotonic()
        proc = subprocess.run([self.salt_run, "-c", self.conf_dir, "--out=json", "state.orchestrate",
                               "bench.naive_orch", f"pillar={json.dumps(pillar)}"],
                              capture_output=True, text=True, timeout=ROLLOUT_TIMEOUT, check=False)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise BenchError(f"naive orchestrate failed (exit {proc.returncode}): "
                             f"{proc.stdout[-800:]}{proc.stderr[-800:]}")
        return wall


def _minion_clock(hhmmss, near):
    """A state's `start_time` (minion local time of day) as epoch seconds near `near`."""
    local = datetime.datetime.fromtimestamp(near)
    clock = datetime.time.fromisoformat(hhmmss)  # "12:00:01.5" and "12:00:01" alike
    when = datetime.datetime.combine(local.date(), clock).timestamp()
    return when - 86400 if when > near + 3600 else when


DEPLOY_SLS, PULL_SLS = "saltcd.deploy", "saltcd.pull"


def _is_deploy_job(event, app, sls=DEPLOY_SLS):
    """A batch's state.apply of app (or, with sls=PULL_SLS, a pull ahead of its batch)."""
    data = event.data
    if not event.tag.startswith("salt/job/") or not event.tag.endswith("/new") or data.get("fun") != "state.apply":
        return False
    args = data.get("arg") or []
    if sls not in args and not (sls == DEPLOY_SLS and not any(isinstance(a, str) for a in args)):
        return False
    for arg in args:
        if isinstance(arg, dict) and ((arg.get("pillar") or {}).get("saltcd") or {}).get("app") == app:
            return True
    return False


def timeline(app, pushed, events, finished):
    """Seconds from the push to each milestone of one saltcd rollout."""
    def first(predicate):
        # Not before the PUT: an earlier push's reaction may still be on the bus.
        return next((e for e in events if e.at >= pushed and predicate(e)), None)

    reaction = first(lambda e: e.tag.startswith("salt/run/") and e.tag.endswith("/new")
                     and e.data.get("fun") == "runner.deploy.accept")
    handoff = first(lambda e: e.tag == f"saltcd/drain/{app}/dev")
    job = first(lambda e: _is_deploy_job(e, app))
    state_start = None
    if job is not None:
        jid = job.data.get("jid")
        starts = [_minion_clock(s["start_time"], ret.at)
                  for ret in events if ret.tag.startswith(f"salt/job/{jid}/ret/")
                  for s in (ret.data.get("return") or {}).values() if isinstance(s, dict) and s.get("start_time")]
        state_start = min(starts, default=None)
    since = lambda event: round(event.at - pushed, 3) if event is not None else None  # noqa: E731
    return {
        "where": where_the_time_goes(app, pushed, events, finished),
        "status": finished.data.get("status"),
        "reaction": since(reaction),
        "handoff": since(handoff),
        "first_state_run_published": since(job),
        "first_state_executing": round(state_start - pushed, 3) if state_start else None,
        "finished": since(finished),
        "batches": len([e for e in events if e.tag == f"saltcd/deploy/{app}/dev/batch" and e.at <= finished.at]),
        "prepull": prepull_span(app, pushed, events, finished),
    }


def prepull_span(app, pushed, events, finished):
    """Pulls ahead of the batches (saltcd.rollout.prepull): how many, and push -> the first
    published and -> the last returned (they overlap the batches: not a part of
    where_the_time_goes)."""
    jobs = [e for e in events if _is_deploy_job(e, app, PULL_SLS) and e.at <= finished.at]
    jids = {e.data.get("jid") for e in jobs}
    rets = [e for e in events if e.tag.startswith("salt/job/") and "/ret/" in e.tag
            and e.tag.split("/")[2] in jids]
    return {"pulls": len(jobs), "first_published": round(min(e.at for e in jobs) - pushed, 3) if jobs else None,
            "last_returned": round(max(e.at for e in rets) - pushed, 3) if rets else None}


# (part, state id prefix). Start-first's one state (saltcd_release) starts the new
# container beside the old one, gates it privately (settle included), switches
# HAProxy and retires the old one; its health_gate is the check through HAProxy.
STATE_PARTS = (("pull", "docker_image_|-"), ("replace", "docker_container_|-"),
               ("start_first_release", "saltcd_release_|-"), ("health_gate", "saltcd_health_|-"))


def where_the_time_goes(app, pushed, events, finished):
    """One rollout's wall time cut into parts that add up to it.

    Per batch (one state.apply job) the minion that returned last sets the pace:
    Salt's job start and SLS render (publish -> its first state), the pull, the
    replace (stop-first) or the start-first release, and the health gate
    (Salt's own state durations), then the rest of
    that job (gaps between states, the return to the master). What is left is
    saltcd's: push -> first publish, the gaps between batches, and the last
    return -> `finished`. A job whose return has no states (a render error)
    counts whole as `unaccounted`.
    """
    parts = {"saltcd_before_first_batch": 0.0, "salt_job_start_and_render": 0.0, "pull": 0.0,
             "replace": 0.0, "start_first_release": 0.0, "health_gate": 0.0, "salt_return_and_gaps": 0.0,
             "saltcd_between_batches": 0.0, "saltcd_finish": 0.0, "unaccounted": 0.0}
    jobs = [e for e in events if _is_deploy_job(e, app) and e.at <= finished.at]
    previous_end = None
    for job in jobs:
        rets = [e for e in events if e.tag.startswith(f"salt/job/{job.data.get('jid')}/ret/")]
        if not rets:
            continue
        last = max(rets, key=lambda e: e.at)
        states = {k: v for k, v in (last.data.get("return") or {}).items() if isinstance(v, dict)}
        starts = [_minion_clock(v["start_time"], last.at) for v in states.values() if v.get("start_time")]
        if previous_end is None:
            parts["saltcd_before_first_batch"] += job.at - pushed
        else:
            parts["saltcd_between_batches"] += job.at - previous_end
        if starts:
            parts["salt_job_start_and_render"] += min(starts) - job.at
            state_end = min(starts)
            for part, prefix in STATE_PARTS:
                took = sum(v.get("duration", 0) for k, v in states.items() if k.startswith(prefix)) / 1000
                parts[part] += took
                state_end += took
            parts["salt_return_and_gaps"] += last.at - state_end
        else:
            parts["unaccounted"] += last.at - job.at
        previous_end = last.at
    if previous_end is not None:
        parts["saltcd_finish"] += finished.at - previous_end
    return {k: round(v, 3) for k, v in parts.items()}

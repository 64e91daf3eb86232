"""The shape of a sandbox fleet, shared by `make demo` and the integration tests.

Each simulated host is a minion with its own Docker engine, whose published
ports answer on its own loopback address (127.0.0.N).
"""

ENVIRONMENTS = ("dev", "qa", "prod")


def fleet(counts, first_octet=11):
    """[{"id", "env", "address", "index"}] for e.g. {"dev": 2, "qa": 2, "prod": 3}."""
    minions = []
    octet = first_octet
    for env in ENVIRONMENTS:
        for number in range(1, counts.get(env, 0) + 1):
            minions.append({"id": f"{env}-{number}", "env": env, "address": f"127.0.0.{octet}",
                            "index": octet})
            octet += 1
    return minions


def minion_overrides(minion, docker_url, proxy=None):
    """Minion config: its engine, its env grain, where its ports answer, and its
    HAProxy (`proxy`: a sandbox.proxy.HostProxy, for start-first apps)."""
    conf = {
        "docker.url": docker_url,
        "grains": {"saltcd_env": minion["env"], "saltcd": {"health_host": minion["address"]}},
    }
    if proxy is not None:
        conf["saltcd_proxy"] = proxy.minion_settings()
    return conf


def app_config(repository, port, container=None, health_timeout=20, batch=1, settle=None, **policy):
    """One app, deployed to every environment by its env grain-named glob.

    `settle` None keeps saltcd's default (and with it the watch after the last
    batch); the test lab passes 0 where a test does not look at it, to keep
    the suite quick.
    """
    health = {"path": "/health", "port": port, "timeout": health_timeout, "interval": 0.5}
    if settle is not None:
        health["settle"] = settle
    return {
        "repository": repository,
        "container": container or repository.rsplit("/", 1)[1],
        "ports": [f"{port}:8080"],
        "environment": {"PORT": "8080"},
        "stop_timeout": 5,
        "health": health,
        "batch": batch,
        "environments": {env: {"target": f"{env}-*"} for env in ENVIRONMENTS},
        **policy,
    }


# The throughput bench checks that every request of up to 5000 posts (4 apps,
# several runs on one sandbox) ended in the history; saltcd's default
# `history_keep` (200 per app and environment) would prune records it has yet
# to find, and count them as lost.
SANDBOX_HISTORY_KEEP = 20000


def saltcd_config(registry_host, apps, webhook_token, ci_minions=("ci-1",), push_secret=None):
    """The `saltcd:` master config section for a loopback registry whose
    notifications carry `Authorization: Bearer <webhook_token>`; `saltcd/push`
    events must be signed with `push_secret` when one is given."""
    extra = {"push_secret": push_secret} if push_secret else {}
    return {
        **extra,
        "registries": {registry_host: {"scheme": "http", "timeout": 5}},
        "sources": {"registry": {"token": webhook_token}},
        "ci_minions": list(ci_minions),
        "history_keep": SANDBOX_HISTORY_KEEP,
        "apps": apps,
    }


def notify_headers(webhook_token):
    """The header the registry sends with every notification."""
    return {"Authorization": f"Bearer {webhook_token}"}


# The apps `make bench` rolls out: (minions, batch) shapes over the fleet in
# its order, all in environment `dev`, each on its own host port. Declared in
# the sandbox from the start because saltcd reads its apps at master start.
BENCH_SHAPES = {
    "m1b1": (1, 1), "m3b1": (3, 1), "m3b50": (3, "50%"), "m3b34": (3, "34%"),
    "m6b1": (6, 1), "m6b34": (6, "34%"), "m9b1": (9, 1), "m9b34": (9, "34%"),
}
BENCH_FIRST_PORT = 18101
# The zero-downtime bench (bench/zero_downtime.py): one app per replacement
# strategy over the same 3 dev minions, batch 1, the default settle stated
# explicitly (a `dies` image, healthy 4 s then gone, must fail the gate).
ZERO_DOWNTIME_APPS = {"zd-stop-first": "stop-first", "zd-start-first": "start-first"}
ZERO_DOWNTIME_FIRST_PORT = 18121
ZERO_DOWNTIME_SETTLE = 5


def bench_apps(registry_host, fleet_ids):
    """{app: saltcd app config} for BENCH_SHAPES and ZERO_DOWNTIME_APPS; targets are minion lists."""
    apps = {}
    # settle 0: the tiny-image figures compare the replace itself (the ideal waits the same).
    apps.update(_shaped_apps(registry_host, BENCH_SHAPES, BENCH_FIRST_PORT, fleet_ids, settle=0))
    for number, (name, strategy) in enumerate(ZERO_DOWNTIME_APPS.items()):
        apps.update(_shaped_apps(registry_host, {name: (3, 1)}, ZERO_DOWNTIME_FIRST_PORT + number,
                                 fleet_ids, settle=ZERO_DOWNTIME_SETTLE, strategy=strategy))
    apps.update(_realistic_apps(fleet_ids))
    apps.update(_fleet_apps(registry_host, fleet_ids))
    apps.update(_real_apps(registry_host, fleet_ids))
    return apps


# bench/real_apps.py: one app of one container, and one of a web role and a
# worker role (the same image, settle 0 both: the figures compare the work of
# a batch, not its waits), over the first 3 minions, batch 1.
REAL_APPS_FIRST_PORT = 18141
REAL_APPS_WORKER = ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM; while true; do /bin/busybox sleep 1; done"]


def _real_apps(registry_host, fleet_ids):
    apps = _shaped_apps(registry_host, {"ra-one": (3, 1), "ra-two": (3, 1)}, REAL_APPS_FIRST_PORT, fleet_ids,
                        settle=0)
    if "ra-two" in apps:
        two = apps["ra-two"]
        two["roles"] = {"web": {"ports": two["ports"]},
                        "worker": {"options": {"entrypoint": REAL_APPS_WORKER}}}
        two["ports"] = []  # the web role publishes it
    return apps


# The realistic-image bench (bench/realistic.py): pulls go through the
# bench's throttling proxy (bench/throttle.py) in front of the registry, so
# these repositories name the proxy's address; the images' PID 1 ignores
# SIGTERM, so each old container takes its whole stop_timeout to stop.
THROTTLED_REGISTRY = "127.0.0.1:5055"
REALISTIC_SHAPES = {"r3b1": (3, 1), "r3b34": (3, "34%"), "r9b1": (9, 1), "r9b34": (9, "34%")}
REALISTIC_FIRST_PORT = 18201
REALISTIC_STOP_TIMEOUT = 2
REALISTIC_SETTLE = 1
# saltcd rolls out a start-first twin of each realistic app (same minions and
# batch, its own port and images): the old container's SIGTERM wait is then
# done in the background, as the targets expect. The ideals and the
# naive orchestrate replace the stop-first app, as bare Docker does.
REALISTIC_TWIN_SUFFIX = "sf"
REALISTIC_TWIN_PORT_OFFSET = 10


def realistic_twin(app):
    """The start-first twin of a realistic bench app (e.g. r3b1 -> r3b1sf)."""
    return app + REALISTIC_TWIN_SUFFIX


# The scale bench and the cost model: the first N dev minions (`SANDBOX_DEV=60 make
# sandbox` for 60; a shape is made only when the fleet is that big), batch 10 % and
# 25 % (one minion is one batch of one at any share).
FLEET_SHAPES = {"f1b25": (1, "25%"), "f3b10": (3, "10%"), "f3b25": (3, "25%"), "f9b10": (9, "10%"),
                "f9b25": (9, "25%"), "f30b10": (30, "10%"), "f30b25": (30, "25%"), "f60b10": (60, "10%"),
                "f60b25": (60, "25%")}
FLEET_FIRST_PORT = 18301


def _shaped_apps(registry_host, shapes, first_port, fleet_ids, **settings):
    """{name: app} for shapes {name: (minions, batch)} over the first minions of
    the fleet (dev first), where there are that many; ports from first_port."""
    apps = {}
    for number, (name, (count, batch)) in enumerate(shapes.items()):
        if count > len(fleet_ids):
            continue
        app = app_config(f"{registry_host}/bench/{name}", first_port + number,
                         container=f"bench-{name}", batch=batch, **settings)
        app["environments"] = {"dev": {"target": ",".join(fleet_ids[:count]), "tgt_type": "list"}}
        apps[name] = app
    return apps


def _realistic_apps(fleet_ids):
    settings = {"settle": REALISTIC_SETTLE, "stop_timeout": REALISTIC_STOP_TIMEOUT}
    apps = _shaped_apps(THROTTLED_REGISTRY, REALISTIC_SHAPES, REALISTIC_FIRST_PORT, fleet_ids, **settings)
    twins = {realistic_twin(name): shape for name, shape in REALISTIC_SHAPES.items()}
    apps.update(_shaped_apps(THROTTLED_REGISTRY, twins, REALISTIC_FIRST_PORT + REALISTIC_TWIN_PORT_OFFSET,
                             fleet_ids, strategy="start-first", **settings))
    return apps


def _fleet_apps(registry_host, fleet_ids):
    return _shaped_apps(registry_host, FLEET_SHAPES, FLEET_FIRST_PORT, fleet_ids, settle=0)


# The demo's real-shaped app: a web role and a worker role of one image,
# sharing a named volume and the private network `shop-net`, where the
# accessory (examples/salt/myteam/kv.sls, the operator's own state) answers
# as `kv`; a before hook (a "migration") writes the release's version into
# the volume. The app image has busybox, but installs its applets only when
# its start script runs, so the worker and the hook call busybox by path.
SHOP_PORT = 8090
SHOP_WORKER = ["/bin/busybox", "sh", "-c",
               "trap 'exit 0' TERM; while true; do "
               "/bin/busybox wget -q -O /data/kv-seen.tmp http://kv:8080/version "
               "&& /bin/busybox mv /data/kv-seen.tmp /data/kv-seen; /bin/busybox sleep 1; done"]
SHOP_MIGRATION = ["/bin/busybox", "sh", "-c", "/bin/busybox cp /www/version /data/schema-version"]


def shop_app(registry_host):
    """The `shop` app of the sandbox (deployed to dev by the demo)."""
    return {
        "repository": f"{registry_host}/saltcd/shop",
        "container": "shop",
        "environment": {"PORT": "8080"},
        "stop_timeout": 5,
        "options": {"binds": ["shop-data:/data"], "networks": ["shop-net"]},
        "roles": {
            "web": {"container": "shop-web", "ports": [f"{SHOP_PORT}:8080"],
                    "health": {"port": SHOP_PORT, "timeout": 20, "interval": 0.5}},
            "worker": {"container": "shop-worker", "options": {"entrypoint": SHOP_WORKER}},
        },
        "hooks": {"before": SHOP_MIGRATION, "timeout": 60},
        "batch": 2,
        "environments": {"dev": {"target": "dev-*"}},
    }

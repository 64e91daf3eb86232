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


def minion_overrides(minion, docker_url):
    """Minion config: its engine, its env grain, and where its ports answer."""
    return {
        "docker.url": docker_url,
        "grains": {"saltcd_env": minion["env"], "saltcd": {"health_host": minion["address"]}},
    }


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


def bench_apps(registry_host, fleet_ids):
    """{app: saltcd app config} for BENCH_SHAPES; targets are minion lists."""
    apps = {}
    for number, (name, (count, batch)) in enumerate(BENCH_SHAPES.items()):
        if count > len(fleet_ids):
            continue
        app = app_config(f"{registry_host}/bench/{name}", BENCH_FIRST_PORT + number,
                         container=f"bench-{name}", batch=batch)
        app["environments"] = {"dev": {"target": ",".join(fleet_ids[:count]), "tgt_type": "list"}}
        apps[name] = app
    return apps

"""The integration lab: a real registry, one dockerd per simulated host, a real
Salt master (webhook engine, reactor, saltcd runner) and real minions.

Everything is session-scoped (daemons take seconds to start) and stopped at the
end, also when a test fails. Tests keep out of each other's way by using
different apps (repository, container name and port) of the same lab.
"""

import contextlib
import json
import os
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from saltcd import ci_push, master_config
from sandbox import app_image, layout, loopback, tls
from sandbox.docker_hosts import DockerHost
from sandbox.proxy import HostProxy
from sandbox.registry import LocalRegistry
from sandbox.token_server import TokenServer
from tests import stale_runs
from tests.integration import leak_scan
from tests.integration.notify_receiver import Receivers
from tests.ports import free_port

# The `ci` app's own push key: pushes of it are signed with this, not the lab's push_secret.
CI_APP_PUSH_SECRET = secrets.token_urlsafe(24)

def volume_options(app):
    """test_real_apps.py's container options: a named volume and a bind-mounted
    config file (`{lab_root}`, the lab's folder, is filled in by salt_master)."""
    return {"binds": [f"saltcd-{app}-data:/data", "{lab_root}/config/" + app + ".conf:/etc/app.conf:ro"]}


# A role's loop (the app image has busybox but installs its applets only in
# start.sh): writes `/data/<ROLE>-alive` every second until stopped; exits 3
# at once when the image's version says "noworker".
ROLE_LOOP = ["/bin/busybox", "sh", "-c",
             "trap 'exit 0' TERM; case $(/bin/busybox cat /www/version) in *noworker*) exit 3;; esac; "
             "while true; do /bin/busybox date > /data/$ROLE-alive; /bin/busybox sleep 1; done"]


# Apps of the lab: name -> (host port, policy). Each test owns the apps it deploys.
APPS = {
    "web": (18080, {}),
    "ci": (18081, {"push_secret": CI_APP_PUSH_SECRET}),
    "orch": (18082, {"environments": {"prod": {"mode": "auto"}}}),
    "sick": (18083, {}),
    "plan": (18084, {}),
    "crash": (18085, {}),
    "never": (18086, {}),
    "degrade": (18087, {"health": {"settle": 7}}),  # the image degrades after 4 s
    "budget": (18088, {"on_failure": "continue", "max_failures": 1}),
    "pause": (18089, {"on_failure": "pause"}),
    "gone": (18090, {"health": {"settle": 6}, "state_timeout": 15}),
    "offline": (18091, {}),
    "burst": (18092, {}),
    "restart": (18093, {"health": {"settle": 10}}),
    "manual": (18094, {}),
    "guard": (18095, {}),
    "hub": (18096, {}),
    "truth": (18097, {}),
    "gated": (18098, {}),  # prod stays manual (the default)
    "rogue": (18099, {}),  # lives on a second registry whose notifications carry a wrong token
    "timed": (18078, {}),  # the bench's timed push and timeline
    "ideal": (18077, {}),  # the bench's direct-Docker yardstick
    "lost": (18076, {}),  # a notification the reactor drops
    # test_bounded_and_timed.py: a rollout before and after a flood of refused posts,
    # an approval by digest, a cooldown, and a deploy window that is closed now
    # (one minute a day, three hours ahead of the session's start).
    "door": (18064, {}),  # test_webhook_engine.py: pushes through the saltcd_webhook engine
    "flood": (18060, {}),
    "review": (18061, {}),  # prod stays manual (the default)
    # cooldown: long enough that deploy.status, read after the `waiting` event on a
    # busy machine (two labs on two cores), still finds the push waiting.
    "cool": (18062, {"environments": {"dev": {"cooldown": 20}}}),
    "closed": (18063, {"environments": {"dev": {"windows": [
        f"* {(time.gmtime().tm_hour + 3) % 24:02d}:00-{(time.gmtime().tm_hour + 3) % 24:02d}:01 UTC"]}}}),
    # test_prepull.py: pulls ahead of the batches; a pull that fails (manual, so the
    # test can break the registry between the push and the rollout). `early` has the
    # shipped settle (5 s): its pull ahead starts once the other minion has said what
    # it runs, during batch 1, and needs that long to end when the machine is busy
    # (with 2 s, one CI run saw the pull's return 0.5 s after batch 2 began).
    "early": (18057, {"health": {"settle": 5}}),
    "pullfail": (18058, {"environments": {"dev": {"mode": "manual"}}}),
    # test_start_first.py: replaced behind each host's HAProxy (settle 5 catches the
    # `degrades` image before the switch), and a stop-first app under the same traffic.
    "startfirst": (18048, {"strategy": "start-first", "drain": 2, "health": {"settle": 5}}),
    "stopfirst": (18047, {}),
    "swap": (18046, {}),  # the start-first state applied by hand (salt-call), no rollout
    "tell": (18039, {}),  # test_operator_view.py: notifications, deploy.watch, deploy.report
    # test_batch_deadline.py: pulled through a registry front that stalls (STALLED_APPS).
    "stall": (18035, {"batch_timeout": 20}),
    # test_watch.py: an image that dies 4 s after it starts, with the shipped settle and watch.
    "dies": (18034, {}),
    # test_fail_closed.py: a drain killed in its (one) batch's settle; a signed digest
    # deployed while the tag points elsewhere.
    "orphan": (18033, {"batch": "100%", "health": {"settle": 15}}),
    "pinned": (18032, {}),
    # test_real_apps.py: apps with a named volume and a bind-mounted config file
    # ({lab_root} is the lab's folder), stop-first and start-first.
    "vol": (18031, {"options": volume_options("vol")}),
    "volsf": (18030, {"strategy": "start-first", "drain": 1, "options": volume_options("volsf")}),
    # test_real_apps.py: release hooks (one writes into the app's volume, one fails).
    # The app image installs busybox's applets only when its server starts: a
    # one-off container calls busybox by its path.
    "hooked": (18027, {"options": {"binds": ["saltcd-hooked-data:/data"]}, "hooks": {
        "before": ["/bin/busybox", "sh", "-c", "echo migrated-on-$PORT > /data/migrated"],
        "after": ["/bin/busybox", "test", "-f", "/data/migrated"]}}),
    "hookfail": (18026, {"hooks": {"before": ["/bin/busybox", "sh", "-c", "echo boom >&2; exit 3"]}}),
    # test_real_apps.py: health checks besides HTTP.
    "tcpcheck": (18029, {"health": {"check": "tcp"}}),
    "cmdcheck": (18028, {"health": {"check": "command", "command": [
        "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"]}}),
    # test_app_roles.py: three roles of one image sharing a named volume: `web`
    # (the published port, the HTTP check), `worker` (its own entrypoint, no port,
    # checked `running`) and `scheduler` (dev-1 only). A version with "noworker"
    # in it makes the worker exit at start.
    "shop": (18025, {"options": {"binds": ["saltcd-shop-data:/data"]}, "roles": {
        "web": {"ports": ["18025:8080"]},
        "worker": {"environment": {"ROLE": "worker"}, "options": {"entrypoint": ROLE_LOOP},
                   "health": {"settle": 2}},
        "scheduler": {"target": "dev-1", "environment": {"ROLE": "scheduler"},
                      "options": {"entrypoint": ROLE_LOOP}}}}),
    # test_start_first.py: a start-first web role beside a worker, under traffic.
    "sfroles": (18023, {"strategy": "start-first", "drain": 2, "health": {"settle": 2},
                        "roles": {"web": {"ports": ["18023:8080"]},
                                  "worker": {"environment": {"ROLE": "worker"},
                                             "options": {"entrypoint": ROLE_LOOP}}}}),
    # test_app_roles.py: the operator's own state (examples/salt/myteam/web.sls).
    "own": (18024, {"state": "myteam.web"}),
    # Per-environment secrets that must reach only their environment's minions.
    "secrets": (18050, {"environments": {
        "dev": {"environment": {"PORT": "8080", "APP_TOKEN": "dev-only-" + secrets.token_hex(12)}},
        "qa": {"environment": {"PORT": "8080", "APP_TOKEN": "qa-only-" + secrets.token_hex(12)}}}}),
}


# Apps that keep saltcd's shipped health settle (and with it the watch after the
# last batch); the others use settle 0 to keep the suite quick.
SHIPPED_SETTLE = ("dies",)
# Apps whose repository is the stalling registry front (tests/integration/stall_proxy.py)
# instead of the lab registry; the same repository path on both.
STALLED_APPS = ("stall",)

# Apps on the registries with TLS and auth (test_registry_auth.py): name ->
# (host port, which registry, which credentials saltcd uses, policy).
# "wrong" apps live on a second name of the same registry (localhost:PORT, which
# its certificate covers) whose `registries:` entry has a wrong password.
AUTH_APPS = {
    "basic": (18075, "basic", "right", {}),
    "basicbad": (18074, "basic", "wrong", {}),
    "token": (18073, "token", "right", {}),
    "tokenbad": (18072, "token", "wrong", {}),
    "renew": (18071, "token", "right", {}),
    # dev-1 has `docker-registries` credentials, prod-1 has none.
    "private": (18070, "token", "right", {"on_failure": "continue", "max_failures": 1,
                                          "environments": {"dev": {"target": "dev-1,prod-1",
                                                                   "tgt_type": "list"}}}),
}
# Who may do what: the builder pushes, saltcd and the minions only pull.
REGISTRY_USERS = {
    "pusher": {"password": secrets.token_urlsafe(12), "actions": ["pull", "push"]},
    "deployer": {"password": secrets.token_urlsafe(12), "actions": ["pull"]},
}
# Minions given Docker credentials (`docker-registries` in their config); the
# others (prod-1, ci-1) have none.
MINIONS_WITH_CREDENTIALS = ("dev-1", "dev-2", "qa-1")
TOKEN_LIFETIME = 2  # seconds: short, so that the renewal test sees one run out


def _missing_prerequisite():
    if os.geteuid() != 0:
        return "the integration lab starts dockerd and bridges: run as root (make test does)"
    for binary in ("dockerd", "docker-registry", "busybox", "haproxy"):
        if not shutil.which(binary):
            return f"{binary} is not installed: run `make test`, which installs it"
    return None


@contextlib.contextmanager
def _all_started(parts, stop=lambda part: part.stop()):
    """Start each part; stop every one of them at the end, also when a start failed.
    They stop side by side (a dockerd takes seconds to stop and clean up)."""
    parts = list(parts)
    try:
        for part in parts:
            part.start()
        yield
    finally:
        with ThreadPoolExecutor(max_workers=len(parts) or 1) as pool:
            for done in [pool.submit(stop, part) for part in parts]:
                done.result()


@pytest.fixture(scope="session")
def lab_root(swept):
    reason = _missing_prerequisite()
    if reason:
        pytest.skip(reason)
    # Short: dockerd socket paths must stay under 107 bytes.
    root = stale_runs.session_folder("scd-it-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def lab_slot():
    """Which lab this test process runs: 0, or the pytest-xdist worker's number
    (`make test` runs two workers, each with a lab of its own)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw"))


# A lab's addresses: builder 127.0.0.<base>, minions from <base + 1>; ten per slot
# (the sandbox uses 10..19, test_sandbox_parts 61).
LAB_OCTET = 40 + 10 * lab_slot()
if LAB_OCTET + 5 > 60:
    raise RuntimeError("at most two lab slots fit between the sandbox's addresses and test_sandbox_parts'")


@pytest.fixture(scope="session")
def lab_minions():
    return layout.fleet({"dev": 2, "qa": 1, "prod": 1}, first_octet=LAB_OCTET + 1)


@pytest.fixture(scope="session")
def docker_hosts(lab_root, lab_minions):
    hosts = {m["id"]: DockerHost(m["id"], m["address"], lab_root / "hosts" / m["id"], m["index"])
             for m in lab_minions}
    hosts["builder"] = DockerHost("builder", f"127.0.0.{LAB_OCTET}", lab_root / "hosts" / "builder", LAB_OCTET)
    stale_runs.record_docker_hosts(lab_root, hosts.values())
    with _all_started(hosts.values(), stop=lambda host: host.purge()):
        yield hosts


@pytest.fixture(scope="session")
def host_proxies(lab_root, lab_minions, docker_hosts):
    """One HAProxy per lab minion host (start-first apps switch through it)."""
    proxies = {m["id"]: HostProxy(m["id"], m["address"], lab_root / "proxies" / m["id"]) for m in lab_minions}
    with _all_started(proxies.values()):
        yield proxies


@pytest.fixture(scope="session")
def webhook_port():
    return free_port()


@pytest.fixture(scope="session")
def webhook_token():
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def push_secret():
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def registry(lab_root, webhook_port, webhook_token):
    reg = LocalRegistry(lab_root / "registry", port=free_port(),
                        notify_url=f"http://127.0.0.1:{webhook_port}/{master_config.REGISTRY_HOOK_PATH}",
                        notify_headers=layout.notify_headers(webhook_token))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def lab_ca(lab_root):
    """The test CA and one certificate for the lab's TLS registries."""
    ca = tls.make_ca(lab_root / "ca")
    cert, key = tls.issue(ca, lab_root / "ca", "registry", hosts=["127.0.0.1", "localhost"])
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture(scope="session")
def token_server(lab_root, lab_ca):
    server = TokenServer(lab_root / "token-server", lab_ca["ca"], REGISTRY_USERS,
                         expires_in=TOKEN_LIFETIME)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _auth_registry(root, lab_ca, webhook_port, webhook_token, **auth):
    return LocalRegistry(root, port=free_port(), tls_cert=lab_ca["cert"], tls_key=lab_ca["key"],
                         ca_file=lab_ca["ca"].cert_path,
                         notify_url=f"http://127.0.0.1:{webhook_port}/{master_config.REGISTRY_HOOK_PATH}",
                         notify_headers=layout.notify_headers(webhook_token), **auth)


@pytest.fixture(scope="session")
def auth_registries(lab_root, lab_ca, token_server, webhook_port, webhook_token):
    """{"basic": TLS + htpasswd registry, "token": TLS + token auth registry}."""
    regs = {
        "basic": _auth_registry(lab_root / "registry-basic", lab_ca, webhook_port, webhook_token,
                                htpasswd_users={u: c["password"] for u, c in REGISTRY_USERS.items()}),
        "token": _auth_registry(lab_root / "registry-token", lab_ca, webhook_port, webhook_token,
                                token_auth=token_server.registry_auth()["token"]),
    }
    with _all_started(regs.values()):
        yield regs


@pytest.fixture(scope="session")
def auth_repositories(auth_registries):
    """{app: repository}; the "wrong" apps use the registry's name `localhost:PORT`."""
    repos = {}
    for app, (_, which, creds, _) in AUTH_APPS.items():
        host = auth_registries[which].host
        if creds == "wrong":
            host = host.replace("127.0.0.1:", "localhost:")
        repos[app] = f"{host}/saltcd/{app}"
    return repos


@pytest.fixture(scope="session")
def auth_registries_config(auth_registries, auth_repositories, lab_ca):
    """saltcd's `registries:` entries for the TLS registries (right and wrong password)."""
    entries = {}
    for app, (_, _, creds, _) in AUTH_APPS.items():
        password = REGISTRY_USERS["deployer"]["password"] if creds == "right" else "not-the-password"
        entries[auth_repositories[app].split("/")[0]] = {
            "scheme": "https", "ca_file": str(lab_ca["ca"].cert_path), "timeout": 5,
            "username": "deployer", "password": password}
    return entries


@pytest.fixture(scope="session")
def rogue_registry_port():
    return free_port()


@pytest.fixture(scope="session")
def repositories(registry, rogue_registry_port, stall_proxy_port):
    repos = {app: f"{registry.host}/saltcd/{app}" for app in APPS}
    repos["rogue"] = f"127.0.0.1:{rogue_registry_port}/saltcd/rogue"
    repos.update({app: f"127.0.0.1:{stall_proxy_port}/saltcd/{app}" for app in STALLED_APPS})
    return repos


@pytest.fixture(scope="session")
def stall_proxy_port():
    """Where test_batch_deadline.py serves its stalling registry front (only while it runs)."""
    return free_port()


@pytest.fixture(scope="session")
def notify_receivers():
    """saltcd:notify's endpoints: HTTP receivers on 127.0.0.1 (one answers 500) and a closed port."""
    receivers = Receivers()
    yield receivers
    receivers.close()


@pytest.fixture(scope="session")
def salt_master(salt_factories, repo_root, registry, repositories, webhook_port, webhook_token,
                push_secret, auth_repositories, auth_registries_config, notify_receivers, lab_root):
    apps = {}
    for app, (port, policy) in APPS.items():
        apps[app] = layout.app_config(repositories[app], port, health_timeout=10,
                                       settle=None if app in SHIPPED_SETTLE else 0,
                                       state_timeout=60)
        apps[app].update({k: v for k, v in policy.items() if k not in ("health", "environments", "options")})
        if "roles" in policy:
            apps[app]["ports"] = []  # the roles publish theirs
        if "options" in policy:
            apps[app]["options"] = {name: [value.format(lab_root=lab_root) for value in values]
                                    for name, values in policy["options"].items()}
        apps[app]["health"].update(policy.get("health", {}))
        for env, overrides in policy.get("environments", {}).items():
            apps[app]["environments"][env].update(overrides)
    for app, (port, _, _, policy) in AUTH_APPS.items():
        apps[app] = layout.app_config(auth_repositories[app], port, health_timeout=10, settle=0,
                                       state_timeout=60)
        apps[app].update({k: v for k, v in policy.items() if k != "environments"})
        for env, overrides in policy.get("environments", {}).items():
            apps[app]["environments"][env].update(overrides)
    saltcd = layout.saltcd_config(registry.host, apps, webhook_token, push_secret=push_secret)
    saltcd["registries"] = {repo.split("/")[0]: {"scheme": "http", "timeout": 5}
                            for repo in repositories.values()}
    saltcd["registries"].update(auth_registries_config)
    # A Docker Hub style source: same bearer token (a proxy would add it).
    saltcd["sources"]["hub"] = {"format": "dockerhub", "token": webhook_token}
    # test_webhook_engine.py: a source that takes posts from 127.0.0.2 only, and
    # one that may announce one repository no app deploys.
    saltcd["sources"]["fenced"] = {"token": webhook_token, "allow_from": ["127.0.0.2/32"]}
    saltcd["sources"]["listed"] = {"token": webhook_token, "repositories": [f"{registry.host}/saltcd/listed-only"]}
    saltcd["notify"] = notify_receivers.config()
    overrides = {
        # salt_api: the lab checks that path's refusals too (a hook a minion forges).
        **master_config.wiring(webhook_port=webhook_port, salt_api=True),
        "saltcd": saltcd,
        "log_level_logfile": "info",
        # Resume interrupted rollouts quickly in the restart test.
        "schedule": {"saltcd-resume": {**master_config.wiring()["schedule"]["saltcd-resume"],
                                       "seconds": 15}},
    }
    # The operator's own states (apps.<app>.state) beside saltcd's tree.
    overrides["file_roots"]["base"].append(str(repo_root / "examples" / "salt"))
    master = salt_factories.salt_master_daemon("saltcd-master", overrides=overrides)
    with master.started(start_timeout=120):
        yield master


def minion_docker_environ(lab_root, minion_id, docker_url=None):
    """Each minion its own docker CLI config (`docker login` writes there) and engine.

    All minions run as root with one HOME here: without this they would share
    (and overwrite) root's ~/.docker/config.json.
    """
    environ = {**os.environ, "DOCKER_CONFIG": str(lab_root / "docker-config" / minion_id)}
    if docker_url:
        environ["DOCKER_HOST"] = docker_url
    return environ


@pytest.fixture(scope="session")
def minion_registry_credentials(auth_registries):
    """`docker-registries` of the minions with credentials: pull-only, both TLS registries."""
    creds = {"username": "deployer", "password": REGISTRY_USERS["deployer"]["password"]}
    return {reg.host: dict(creds) for reg in auth_registries.values()}


@pytest.fixture(scope="session")
def salt_minions(salt_master, lab_minions, docker_hosts, lab_root, minion_registry_credentials, host_proxies):
    def overrides(m):
        conf = layout.minion_overrides(m, docker_hosts[m["id"]].url, host_proxies[m["id"]])
        if m["id"] in MINIONS_WITH_CREDENTIALS:
            conf["docker-registries"] = minion_registry_credentials
        return conf

    factories = [salt_master.salt_minion_daemon(m["id"], overrides=overrides(m)) for m in lab_minions]
    factories.append(salt_master.salt_minion_daemon("ci-1"))
    for factory in factories:
        # Set after creation: salt-factories shares one environ dict between daemons.
        url = docker_hosts[factory.id].url if factory.id in docker_hosts else None
        factory.environ = minion_docker_environ(lab_root, factory.id, url)
    started = []
    try:
        for factory in factories:
            factory.start(start_timeout=120)
            started.append(factory)
        yield {f.id: f for f in factories}
    finally:
        for factory in reversed(started):
            factory.terminate()


@pytest.fixture(scope="module")
def fleet(request, salt_factories, docker_hosts, registry, webhook_token, push_secret, lab_root):
    """Two salt-masters sharing an etcd store, and minions on both
    (tests/integration/ha_fleet.py), for the module that asks: test_ha_masters.py
    and test_chaos.py. Its batches' gates hold for the module's SETTLE seconds."""
    from tests.integration import ha_fleet  # noqa: PLC0415 - ha_fleet imports this module

    with ha_fleet.etcd_cluster(lab_root) as etcd, \
            ha_fleet.started(salt_factories, docker_hosts, registry, etcd, webhook_token, push_secret,
                             lab_root, settle=request.module.SETTLE) as started:
        yield started


@pytest.fixture(scope="session")
def auth_lab(lab, auth_registries, auth_repositories, token_server, lab_ca):
    """The lab, plus the TLS registries, their repositories and the token server."""
    lab.auth_registries = auth_registries
    lab.auth_repositories = auth_repositories
    lab.token_server = token_server
    lab.ca = lab_ca
    return lab


@pytest.fixture(scope="session")
def lab(salt_master, salt_minions, docker_hosts, registry, repositories, lab_minions, event_listener,
        push_secret, webhook_token):
    """The lab; when it stops, after every test that used it, it is scanned for
    leaked secrets (a failure there fails the run: an error at teardown)."""
    lab = Lab(salt_master, salt_minions, docker_hosts, registry, repositories, lab_minions,
              event_listener, push_secret)
    yield lab
    found = leak_scan.leaks(lab, leak_scan.needles(lab, webhook_token, push_secret, REGISTRY_USERS))
    assert found == [], "secrets leaked:\n" + "\n".join(found)


class Lab:
    """What a test needs to act like a user and observe like one."""

    def __init__(self, master, minions, hosts, registry, repositories, fleet, listener, push_secret):
        self.listener = listener
        self.push_secret = push_secret
        self.signatures = []  # every push signature a test made (test_zz_no_secrets_leak)
        # Apps with a push key of their own (the leak scan looks for these too).
        self.app_push_secrets = {app: policy["push_secret"] for app, (_, policy) in APPS.items()
                                 if "push_secret" in policy}
        self.master = master
        self.minions = minions
        self.hosts = hosts
        self.registry = registry
        self.repositories = repositories
        self.fleet = fleet
        self.run = master.salt_run_cli(timeout=300)

    def env_minions(self, env):
        return [m["id"] for m in self.fleet if m["env"] == env]

    def push_key(self, repository):
        """The key a CI job signs pushes of `repository` with: its app's own, or the lab's."""
        app = next((app for app, repo in self.repositories.items() if repo == repository), None)
        return self.app_push_secrets.get(app, self.push_secret)

    def signed(self, payload, timestamp=None, secret=None):
        """A `saltcd/push` payload as a CI job makes it (saltcd.ci_push: time, nonce,
        signature; with the push_key of its repository unless `secret`), as JSON text.
        Every signature is recorded: the leak test looks for them."""
        secret = secret or self.push_key(payload.get("repository"))
        data = ci_push.payload(payload.get("repository"), payload.get("tag"), secret,
                               digest=payload.get("digest"), timestamp=timestamp)
        self.signatures.append(data["signature"])
        return json.dumps(data)

    def ci_push(self, minion, payload, secret=None):
        """`salt-call event.send saltcd/push <signed payload>` on `minion`."""
        ret = self.minions[minion].salt_call_cli().run("event.send", "saltcd/push",
                                                       self.signed(payload, secret=secret))
        assert ret.returncode == 0, ret
        return ret

    def health(self, minion, app):
        """GET the app's health URL on that host, as a user's curl would."""
        address = next(m["address"] for m in self.fleet if m["id"] == minion)
        return loopback.status(f"http://{address}:{APPS[app][0]}/health")

    def history(self, app, env, limit=50):
        ret = self.run.run("deploy.history", f"app={app}", f"env={env}", f"limit={limit}")
        return ret.data

    def push(self, app, tag, version, behaviour="healthy"):
        """Build and push an image of `app` to the registry; return its digest."""
        return app_image.build_and_push(self.hosts["builder"].url, self.repositories[app], tag,
                                        version, behaviour=behaviour)

    def retag(self, app, digest, tag):
        return app_image.tag_and_push(self.hosts["builder"].url, self.repositories[app], digest, tag)

    def container(self, minion, app):
        """What the user would see with `docker inspect` on that host (None: no container)."""
        client = self.hosts[minion].client()
        try:
            # By name: listing every container inspects each, and a retired one
            # that saltcd's reaper removes meanwhile would fail the listing.
            attrs = client.api.inspect_container(app)
        except docker.errors.NotFound:
            return None
        else:
            return {"id": attrs["Id"], "image": attrs["Config"]["Image"],
                    "started_at": attrs["State"]["StartedAt"], "running": attrs["State"]["Running"]}
        finally:
            client.close()

    def running_digests(self, app):
        """{minion: digest its container runs (None: none)} over the whole fleet."""
        out = {}
        for minion in (m["id"] for m in self.fleet):
            info = self.container(minion, app)
            out[minion] = info["image"].rsplit("@", 1)[1] if info and "@" in info["image"] else None
        return out

    def wait_for(self, tag_glob, after, timeout=180):
        """The first event matching `tag_glob` fired on the master after `after`."""
        events = self.listener.wait_for_events(
            [(self.master.id, tag_glob)], after_time=after, timeout=timeout)
        assert events.found_all_events, f"no {tag_glob} event within {timeout}s"
        return sorted(events.matches, key=lambda e: e.stamp)[0]

    def events(self, tag_glob, after):
        return sorted(self.listener.get_events([(self.master.id, tag_glob)], after_time=after),
                      key=lambda e: e.stamp)

"""Two real salt-masters on a shared etcd store, and minions connected to both:
the HA integration test's fleet (test_ha_masters.py) and the chaos suite's
(test_chaos.py).

Hot multi-master as Salt wants it: the masters share one key pair and the same
`saltcd:` section (the store on a three-member etcd cluster, lease TTL 4 s);
every minion lists both masters. `ha-1` and `ha-2` deploy to two of the lab's
Docker hosts; `hacijob` is the CI job that signs pushes (its event reaches
both masters).
"""

import contextlib
import json
import os
import signal
import time

import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from saltcd import ci_push, master_config
from sandbox import app_image, layout, loopback
from sandbox.etcd_cluster import EtcdCluster
from tests.integration.conftest import minion_docker_environ
from tests.ports import free_port

APP, ENV, PORT = "ha", "dev", 18021
TTL, RENEW = 4, 1
HOSTS = {"ha-1": "dev-1", "ha-2": "dev-2"}  # minion -> the lab Docker host it deploys to


@contextlib.contextmanager
def etcd_cluster(lab_root):
    """Three etcd members under the lab's folder, stopped at the end."""
    cluster = EtcdCluster(lab_root / "ha-etcd", size=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _saltcd(registry, repository, webhook_token, push_secret, etcd, settle):
    app = layout.app_config(repository, PORT, health_timeout=20, settle=settle, state_timeout=60)
    # `drift` is left at its default (deploy: a webhook source may announce the
    # repository), so a push whose notification was lost is still deployed.
    app["environments"] = {ENV: {"target": "ha-*"}}
    conf = layout.saltcd_config(registry.host, {APP: app}, webhook_token, ci_minions=("hacijob",),
                                push_secret=push_secret)
    conf["registries"] = {registry.host: {"scheme": "http", "timeout": 5}}
    conf["store"] = {"driver": "etcd", "endpoints": etcd.endpoints, "prefix": "/saltcd-ha",
                     "lease_ttl": TTL, "lease_renew": RENEW}
    return conf


class Fleet:
    """The two masters, their minions, and what a user sees of them."""

    def __init__(self, masters, minions, hosts, registry, repository, push_secret, etcd):
        self.masters = masters  # id -> salt-factories master
        self.minions = minions
        self.hosts = hosts
        self.registry = registry
        self.repository = repository
        self.push_secret = push_secret
        self.etcd = etcd
        self.down = set()  # masters stopped or killed by a test

    def up(self):
        return [m for i, m in self.masters.items() if i not in self.down]

    def push(self, version):
        """Build and push a new image, then the CI job's signed push; its digest."""
        digest = app_image.build_and_push(self.hosts["builder"].url, self.repository, ENV, version)
        return self.push_digest(digest)

    def push_digest(self, digest):
        """The CI job's signed push of `digest` (already in the registry): `salt-call event.send`."""
        payload = ci_push.payload(self.repository, ENV, self.push_secret, digest=digest)
        ret = self.minions["hacijob"].salt_call_cli().run("event.send", "saltcd/push", json.dumps(payload))
        assert ret.returncode == 0, ret
        return digest

    def history(self):
        ret = self.up()[0].salt_run_cli(timeout=120).run("deploy.history", f"app={APP}", f"env={ENV}", "limit=50")
        assert ret.returncode == 0, ret
        return ret.data

    def record_of(self, digest, timeout=120, done=True, batches=0):
        """The rollout record of `digest`, once it has ended (or has `batches` batches)."""
        deadline = time.monotonic() + timeout
        while True:
            records = [r for r in self.history() if r.get("to_digest") == digest]
            ready = [r for r in records if (r["status"] != "running" if done else len(r.get("batches", [])) >= batches)]
            if ready:
                return ready[0], records
            assert time.monotonic() < deadline, f"no rollout of {digest} got there within {timeout} s: {records}"
            time.sleep(0.5)

    def running(self):
        """{minion: (digest, container id, health status)} as docker and curl see them."""
        out = {}
        for minion, host in HOSTS.items():
            client = self.hosts[host].client()
            try:
                attrs = client.api.inspect_container(APP)
            finally:
                client.close()
            out[minion] = (attrs["Config"]["Image"].rsplit("@", 1)[-1], attrs["Id"],
                           loopback.status(f"http://{self.hosts[host].address}:{PORT}/health"))
        return out

    def logged(self, master_id, text, timeout):
        """True once `text` is in the master's log file (within `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            with open(self.masters[master_id].config["log_file"], encoding="utf-8", errors="replace") as log:
                if text in log.read():
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(1)

    def daemon(self, name):
        return self.masters.get(name) or self.minions[name]

    def processes(self, name):
        """A daemon's process and every process it started (a master's workers and engines)."""
        try:
            parent = psutil.Process(self.daemon(name).pid)
            return [parent, *parent.children(recursive=True)]
        except (psutil.NoSuchProcess, TypeError):
            return []

    def signal(self, name, sig):
        """Send `sig` to a master or minion and every process it started."""
        for proc in self.processes(name):
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    def kill(self, name):
        """kill -9 a master or minion (every process of it), and wait until it is gone."""
        procs = self.processes(name)
        self.signal(name, signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        if name in self.masters:
            self.down.add(name)

    def revive(self, name):
        """Start a killed master or minion again."""
        self.daemon(name).start(start_timeout=120)
        self.down.discard(name)

    def holder(self, digest):
        """The master running the rollout of `digest` now, or None."""
        for record in self.history():
            if record.get("to_digest") == digest and record["status"] == "running":
                return (record.get("holder") or {}).get("master")
        return None


def master_keys():
    """An RSA key pair in the PEM forms Salt writes (master.pem, master.pub)."""
    key = rsa.generate_private_key(65537, 2048)
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()),
            key.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))


def write_master_keys(pki_dir, private, public):
    os.makedirs(pki_dir, exist_ok=True)
    for name, data, mode in (("master.pem", private, 0o400), ("master.pub", public, 0o644)):
        path = os.path.join(pki_dir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as handle:
            handle.write(data)


@contextlib.contextmanager
def started(salt_factories, docker_hosts, registry, etcd, webhook_token, push_secret, lab_root, settle):
    """The two masters and the minions, started; stopped at the end."""
    repository = f"{registry.host}/saltcd/{APP}"
    saltcd = _saltcd(registry, repository, webhook_token, push_secret, etcd, settle)
    masters = {}
    for name in ("ha-master-a", "ha-master-b"):
        overrides = {**master_config.wiring(webhook_port=free_port()), "saltcd": saltcd,
                     "auto_accept": True, "log_level_logfile": "info"}
        masters[name] = salt_factories.salt_master_daemon(name, overrides=overrides)
    first = masters["ha-master-a"]
    # Hot multi-master: the masters share one key pair (Salt's requirement).
    keys = master_keys()
    for master in masters.values():
        write_master_keys(master.config["pki_dir"], *keys)
    both = [f"127.0.0.1:{m.config['ret_port']}" for m in masters.values()]
    minions, started = {}, []
    try:
        for master in masters.values():
            master.start(start_timeout=120)
            started.append(master)
        for minion, host in HOSTS.items():
            conf = layout.minion_overrides({"env": ENV, "address": docker_hosts[host].address},
                                           docker_hosts[host].url)
            minions[minion] = first.salt_minion_daemon(minion, overrides={**conf, "master": both})
        minions["hacijob"] = first.salt_minion_daemon("hacijob", overrides={"master": both})
        for minion in minions.values():
            minion.environ = minion_docker_environ(lab_root, minion.id, docker_hosts[HOSTS[minion.id]].url
                                                   if minion.id in HOSTS else None)
            minion.start(start_timeout=120)
            started.append(minion)
        yield Fleet(masters, minions, docker_hosts, registry, repository, push_secret, etcd)
    finally:
        for daemon in reversed(started):
            daemon.terminate()

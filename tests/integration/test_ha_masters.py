"""Two real salt-masters, one rollout: hot multi-master on a shared etcd store.

Three etcd members, two salt-masters (same saltcd configuration, same master
key, `saltcd:store` on the cluster; lease TTL 4 s), and minions connected to
both: two Docker hosts' minions (`ha-1`, `ha-2`) and a CI minion. Every push is
a signed `salt-call event.send saltcd/push` on the CI minion, which reaches
both masters. The tests run in file order on one fleet:

(a) one push heard by both masters -> one request, one rollout;
(d) an etcd member killed -> the rollout goes on;
(c) the master running a rollout SIGSTOPped past its TTL -> the other takes it
    over and finishes; SIGCONT -> the late master's next step is refused and
    nothing runs twice;
(b) the master running a rollout killed (-9, every process) mid-batch -> the
    other finishes it within the TTL and a few seconds;
(e) a push while that master is down -> deployed by the other.
"""

import json
import os
import shutil
import signal
import time

import psutil
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from saltcd import ci_push, master_config
from sandbox import app_image, layout, loopback
from sandbox.etcd_cluster import EtcdCluster
from tests.integration.conftest import minion_docker_environ
from tests.ports import free_port

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (make test installs etcd-server)")

APP, ENV, PORT = "ha", "dev", 18021
TTL, RENEW = 4, 1
SETTLE = 6  # seconds each batch's gate holds: a batch is long enough to act in
# A takeover starts within the TTL and a few seconds; it stops the dead master's
# state run in flight (which would wait on that master for a minute or more, with
# the new step queued behind it), re-runs that batch and goes on. Its end comes
# within this, with room for a busy machine.
IN_FLIGHT = 120
HOSTS = {"ha-1": "dev-1", "ha-2": "dev-2"}  # minion -> the lab Docker host it deploys to


@pytest.fixture(scope="module")
def etcd(lab_root):
    cluster = EtcdCluster(lab_root / "ha-etcd", size=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _saltcd(registry, repository, webhook_token, push_secret, etcd):
    app = layout.app_config(repository, PORT, health_timeout=20, settle=SETTLE, state_timeout=60)
    app["environments"] = {ENV: {"target": "ha-*", "drift": "ignore"}}
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

    def processes(self, master_id):
        """The master's process and every process it started (its workers, engines)."""
        parent = psutil.Process(self.masters[master_id].pid)
        return [parent, *parent.children(recursive=True)]

    def signal(self, master_id, sig):
        for proc in self.processes(master_id):
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:
                pass


def _master_keys():
    """An RSA key pair in the PEM forms Salt writes (master.pem, master.pub)."""
    key = rsa.generate_private_key(65537, 2048)
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()),
            key.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))


def _write_master_keys(pki_dir, private, public):
    os.makedirs(pki_dir, exist_ok=True)
    for name, data, mode in (("master.pem", private, 0o400), ("master.pub", public, 0o644)):
        path = os.path.join(pki_dir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as handle:
            handle.write(data)


@pytest.fixture(scope="module")
def fleet(salt_factories, docker_hosts, registry, etcd, webhook_token, push_secret, lab_root):
    repository = f"{registry.host}/saltcd/{APP}"
    saltcd = _saltcd(registry, repository, webhook_token, push_secret, etcd)
    masters = {}
    for name in ("ha-master-a", "ha-master-b"):
        overrides = {**master_config.wiring(webhook_port=free_port()), "saltcd": saltcd,
                     "auto_accept": True, "log_level_logfile": "info"}
        masters[name] = salt_factories.salt_master_daemon(name, overrides=overrides)
    a, b = masters.values()
    # Hot multi-master: the masters share one key pair (Salt's requirement).
    keys = _master_keys()
    for master in masters.values():
        _write_master_keys(master.config["pki_dir"], *keys)
    both = [f"127.0.0.1:{m.config['ret_port']}" for m in masters.values()]
    minions, started = {}, []
    try:
        for master in masters.values():
            master.start(start_timeout=120)
            started.append(master)
        for minion, host in HOSTS.items():
            conf = layout.minion_overrides({"env": ENV, "address": docker_hosts[host].address},
                                           docker_hosts[host].url)
            minions[minion] = a.salt_minion_daemon(minion, overrides={**conf, "master": both})
        minions["hacijob"] = a.salt_minion_daemon("hacijob", overrides={"master": both})
        for minion in minions.values():
            minion.environ = minion_docker_environ(lab_root, minion.id, docker_hosts[HOSTS[minion.id]].url
                                                   if minion.id in HOSTS else None)
            minion.start(start_timeout=120)
            started.append(minion)
        yield Fleet(masters, minions, docker_hosts, registry, repository, push_secret, etcd)
    finally:
        for daemon in reversed(started):
            daemon.terminate()


def test_a_one_push_heard_by_both_masters_is_one_rollout(fleet, event_listener):
    pushed = time.time()
    digest = fleet.push("1.0.0")
    heard = event_listener.wait_for_events([(m, "saltcd/push") for m in fleet.masters], after_time=pushed,
                                           timeout=60)
    assert heard.found_all_events, "the push did not reach both masters"
    record, records = fleet.record_of(digest)
    assert record["status"] == "succeeded", record
    assert len(records) == 1
    time.sleep(3)  # a second rollout, if there were one, would be recorded by now
    assert len([r for r in fleet.history() if r.get("to_digest") == digest]) == 1
    assert {m: d for m, (d, _, _) in fleet.running().items()} == {"ha-1": digest, "ha-2": digest}
    assert {status for _, _, status in fleet.running().values()} == {200}


def test_d_a_dead_etcd_member_does_not_stop_rollouts(fleet):
    member = fleet.etcd.members[1]
    fleet.etcd.kill_member(member)
    try:
        digest = fleet.push("1.1.0")
        record, _ = fleet.record_of(digest)
        assert record["status"] == "succeeded", record
        assert {m: d for m, (d, _, _) in fleet.running().items()} == {"ha-1": digest, "ha-2": digest}
    finally:
        fleet.etcd.start_member(member)


def test_c_a_master_paused_past_its_lease_is_taken_over_and_refused_when_it_wakes(fleet):
    digest = fleet.push("1.2.0")
    record, _ = fleet.record_of(digest, done=False, batches=1)
    paused = record["holder"]["master"]
    fleet.signal(paused, signal.SIGSTOP)
    try:
        fleet.down.add(paused)
        done, _ = fleet.record_of(digest, timeout=TTL + IN_FLIGHT)
        before = fleet.running()
    finally:
        fleet.signal(paused, signal.SIGCONT)
        fleet.down.discard(paused)
    other = next(m for m in fleet.masters if m != paused)
    print(f"paused -> finished by {other} at {done['ended'] - done['takeovers'][0]['at']:.1f} s after the takeover")
    assert done["status"] == "succeeded", done
    assert [t["master"] for t in done["takeovers"]] == [other]
    assert done["takeovers"][0]["from"] == paused
    assert {m: d for m, (d, _, _) in before.items()} == {"ha-1": digest, "ha-2": digest}
    # The woken master's next step is refused (its log says so): nothing is
    # replaced again, and the record stands.
    assert fleet.logged(paused, f"saltcd: {APP}/{ENV}: fenced: ", timeout=90), "the woken master was not fenced"
    after = fleet.running()
    assert after == before
    kept, _ = fleet.record_of(digest)
    assert kept["status"] == "succeeded" and kept["takeovers"] == done["takeovers"]
    assert [b["number"] for b in kept["batches"]] == [1, 2]


def test_b_a_killed_master_s_rollout_is_finished_by_the_other(fleet):
    digest = fleet.push("1.3.0")
    record, _ = fleet.record_of(digest, done=False, batches=1)
    dead = record["holder"]["master"]
    fleet.signal(dead, signal.SIGKILL)
    fleet.down.add(dead)
    killed_at = time.time()
    done, _ = fleet.record_of(digest, timeout=TTL + IN_FLIGHT)
    finished_at = time.time()
    assert done["status"] == "succeeded", done
    (takeover,) = done["takeovers"]
    assert takeover["from"] == dead and takeover["master"] != dead
    # The other master takes the rollout over once the lease is out, and a few
    # seconds (its engine looks every `lease_renew`, and for a free lock).
    print(f"killed -> taken over {takeover['at'] - killed_at:.1f} s, -> finished {finished_at - killed_at:.1f} s")
    assert takeover["at"] - killed_at < TTL + 10
    assert list(takeover.get("stopped", {})) in ([], ["ha-2"])  # the dead master's batch 2, if still running
    running = fleet.running()
    assert {m: d for m, (d, _, _) in running.items()} == {"ha-1": digest, "ha-2": digest}
    assert {status for _, _, status in running.values()} == {200}


def test_e_a_push_while_one_master_is_down_is_deployed(fleet):
    assert fleet.down, "test_b leaves one master down"
    digest = fleet.push("1.4.0")
    record, records = fleet.record_of(digest)
    assert record["status"] == "succeeded" and len(records) == 1
    assert record["holder"]["master"] not in fleet.down
    assert {m: d for m, (d, _, _) in fleet.running().items()} == {"ha-1": digest, "ha-2": digest}

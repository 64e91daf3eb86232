"""Fakes for the unit tier: a fleet of containers in memory, an in-memory cache."""

import copy


class MemoryCache:
    """The subset of salt.cache.Cache that store.Store uses."""

    def __init__(self):
        self.banks = {}

    def store(self, bank, key, data):
        self.banks.setdefault(bank, {})[key] = copy.deepcopy(data)

    def fetch(self, bank, key):
        return copy.deepcopy(self.banks.get(bank, {}).get(key, {}))

    def flush(self, bank, key=None):
        if key is None:
            self.banks.pop(bank, None)
        else:
            self.banks.get(bank, {}).pop(key, None)

    def list(self, bank):
        prefix = bank.rstrip("/") + "/"
        names = set(self.banks.get(bank, {}))
        for other, keys in self.banks.items():
            if other.startswith(prefix) and keys:
                names.add(other[len(prefix):].split("/", 1)[0])
        return sorted(names)


class AnySpec:
    """The spec of a container the test did not deploy: it counts as current (equal
    to any fingerprint), so tests about digests need not model specs, and as
    unknown where a rollback looks for the spec to go back to (falsy)."""

    def __eq__(self, other):
        return True

    def __bool__(self):
        return False

    def __hash__(self):
        return 0

    def __repr__(self):
        return "AnySpec()"


class FakeFleet:
    """Minions that each run one container; `bad` digests (or spec fingerprints) never become healthy,
    `dies` digests pass the gate and then exit (seen by `status`), `slow` ones
    outlive the batch deadline (a stalled pull). A `lost` minion does its next
    apply and dies before it returns (no answer); it answers again afterwards,
    unless it is also in `stays_dead`."""

    def __init__(self, running, bad=(), silent=(), dies=(), slow=(), lost=()):
        self.running = dict(running)  # minion -> digest (None: no container)
        self.bad = set(bad)
        self.silent = set(silent)
        self.lost = set(lost)
        self.stays_dead = set()
        self.dies = set(dies)
        self.slow = set(slow)
        self.applied = []  # (minions, digest) in call order
        self.limits = []  # the wall-clock limit of each apply
        self.status_calls = 0
        self.calls = []  # ("inspect" | "apply", minions) in call order
        self.specs = {}  # minion -> spec fingerprint its container was created with (else AnySpec)
        self.hooks_run = []  # (minion, kind, digest, command) in call order
        self.failing_hooks = set()  # kinds whose command exits non-zero
        self.stopped = set()  # (minion, container) that exist but do not run, until the next apply
        self.inspected = []  # the containers of the last inspect
        self.pillars = []  # the `saltcd` pillar of each apply
        self.deployed = {}  # minion -> the containers its last apply gave it (its roles)

    def targets(self, target, tgt_type):
        prefix = target.rstrip("*")
        return sorted(m for m in self.running if m.startswith(prefix))

    def inspect(self, minions, containers):
        self.calls.append(("inspect", list(minions)))
        self.inspected = list(containers)
        return {m: None if m in self.silent else {c: self._container(m, c) for c in containers}
                for m in minions}

    def _container(self, minion, container):
        """Every container a minion was given (each role's; before any apply, any
        container asked for) runs its digest and spec, unless `stopped`."""
        exists = self.running[minion] is not None and container in self.deployed.get(minion, [container])
        up = exists and (minion, container) not in self.stopped
        return {"exists": exists, "running": up, "digest": self.running[minion] if exists else None,
                "spec": self.specs.get(minion, AnySpec()) if exists else None}

    def hook(self, minion, pillar, kind, timeout):
        command = pillar["saltcd"]["hooks"][kind]
        self.calls.append(("hook", [minion]))
        self.hooks_run.append((minion, kind, pillar["saltcd"]["digest"], command))
        if minion in self.silent:
            return None
        if kind in self.failing_hooks:
            return {"ok": False, "changed": True, "comment": f"hook `{command}` exited 3; its last lines:\nboom"}
        return {"ok": True, "changed": True, "comment": f"hook `{command}` exited 0"}

    def apply(self, minions, pillar, timeout, test=False, limit=None, published=None):
        digest = pillar["saltcd"]["digest"]
        self.calls.append(("apply", list(minions)))
        if published is not None:
            published()
        self.applied.append((list(minions), digest))
        self.pillars.append(pillar["saltcd"])
        self.limits.append(limit)
        out = {}
        for minion in minions:
            if minion in self.silent:
                out[minion] = None
                continue
            if digest in self.slow:
                # What SaltFleet reports for a state run stopped at the deadline.
                out[minion] = {"ok": False, "changed": False, "timed_out": True,
                               "comment": f"batch_timeout of {limit:g} s exceeded: state run stopped on the minion"}
                continue
            spec = pillar["saltcd"].get("spec")
            if minion in self.lost:
                self.lost.discard(minion)
                self.running[minion] = digest
                if minion in self.stays_dead:
                    self.silent.add(minion)
                out[minion] = None
                continue
            changed = self.running[minion] != digest or self.specs.get(minion, AnySpec()) != spec
            self.running[minion] = digest
            self.specs[minion] = spec
            self.deployed[minion] = {r["container"] for r in pillar["saltcd"].get("roles") or []
                                     if minion in r.get("minions", [minion])} or {pillar["saltcd"]["container"]}
            self.stopped = {(m, c) for m, c in self.stopped if m != minion}
            ok = digest not in self.bad and spec not in self.bad  # a bad digest, or a bad spec
            out[minion] = {"ok": ok, "changed": changed, "comment": "Healthy" if ok else "Unhealthy: 404"}
        return out

    def status(self, minions, checks):
        self.status_calls += 1
        out = {}
        for m in minions:
            # A `dies` container is seen up once, then exited.
            up = self.running[m] not in self.dies or self.status_calls == 1
            out[m] = {container: {"exists": True, "digest": self.running[m], "running": up, "id": "c" * 64,
                                  "started_at": "t0", "restart_count": 0, "exit_code": 0 if up else 1,
                                  "health": {"healthy": up and self.running[m] not in self.bad}}
                      for container, _ in checks}
        return out


class Recorder:
    """A reporter that keeps what it was told."""

    def __init__(self):
        self.events = []
        self.lines = []

    def fire(self, tag, data):
        self.events.append((tag, copy.deepcopy(data)))

    def progress(self, text):
        self.lines.append(text)

    def tags(self):
        return [tag for tag, _ in self.events]


class FakeClock:
    """monotonic() and sleep() without waiting: the watch runs in no time."""

    def __init__(self):
        self.now = 0.0
        self.slept = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


class Nonces:
    """A NonceCache stand-in: first sighting once per nonce."""

    def __init__(self):
        self.seen = set()

    def first_sighting(self, nonce, timestamp, window):
        fresh = nonce not in self.seen
        self.seen.add(nonce)
        return fresh

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


class FakeFleet:
    """Minions that each run one container; `bad` digests never become healthy."""

    def __init__(self, running, bad=(), silent=()):
        self.running = dict(running)  # minion -> digest (None: no container)
        self.bad = set(bad)
        self.silent = set(silent)
        self.applied = []  # (minions, digest) in call order

    def targets(self, target, tgt_type):
        prefix = target.rstrip("*")
        return sorted(m for m in self.running if m.startswith(prefix))

    def inspect(self, minions, container):
        return {m: None if m in self.silent else
                {"exists": self.running[m] is not None, "running": self.running[m] is not None,
                 "digest": self.running[m]} for m in minions}

    def apply(self, minions, pillar, timeout, test=False):
        digest = pillar["saltcd"]["digest"]
        self.applied.append((list(minions), digest))
        out = {}
        for minion in minions:
            if minion in self.silent:
                out[minion] = None
                continue
            changed = self.running[minion] != digest
            self.running[minion] = digest
            ok = digest not in self.bad
            out[minion] = {"ok": ok, "changed": changed, "comment": "Healthy" if ok else "Unhealthy: 404"}
        return out

    def status(self, minions, container, health):
        return {m: {"digest": self.running[m], "running": True, "id": "c" * 64,
                    "health": {"healthy": self.running[m] not in self.bad}} for m in minions}


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

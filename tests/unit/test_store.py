"""The store keeps history and audit bounded, and a drain reads only what it needs."""

import dataclasses
import time

from saltcd import store
from saltcd.store import Limits, Store

from .fakes import MemoryCache

DAY = 86400
NOW = 1_790_000_000.0


def limits(**given):
    """The configuration table's limits with some changed."""
    return dataclasses.replace(Limits.defaults(), **given)


class CountingCache(MemoryCache):
    """MemoryCache that counts fetches, to show what a caller reads."""

    def __init__(self):
        super().__init__()
        self.fetches = 0

    def fetch(self, bank, key):
        self.fetches += 1
        return super().fetch(bank, key)


def rollout(at, status="succeeded", digest=None):
    return {"id": store.new_id(at), "app": "web", "env": "dev", "status": status, "to_digest": digest}


def test_ids_carry_their_time():
    assert store.id_time(store.new_id(NOW)) == int(NOW)
    assert store.id_time("state") is None


def test_history_is_pruned_by_count_when_a_record_is_saved():
    records = Store(MemoryCache(), limits(history_keep=5))
    saved = [rollout(NOW + i) for i in range(12)]
    for record in saved:
        records.save_rollout(record, now=NOW + 12)
    assert [r["id"] for r in records.rollouts("web", "dev")] == [r["id"] for r in saved[-5:]]


def test_history_is_pruned_by_age_but_keeps_the_newest_ten():
    records = Store(MemoryCache(), limits(history_keep=200, history_days=1))
    old = [rollout(NOW - 10 * DAY + i) for i in range(15)]
    for record in old:
        records.save_rollout(record, now=NOW)
    # All are older than a day: only the newest ten survive.
    assert [r["id"] for r in records.rollouts("web", "dev")] == [r["id"] for r in old[-10:]]
    fresh = [rollout(NOW + i) for i in range(3)]
    for record in fresh:
        records.save_rollout(record, now=NOW + 3)
    assert [r["id"] for r in records.rollouts("web", "dev")] == [r["id"] for r in old[-7:] + fresh]


def test_a_running_rollout_is_never_pruned_and_is_found_without_reading_the_history():
    cache = CountingCache()
    records = Store(cache, limits(history_keep=3))
    running = rollout(NOW, status="running")
    records.save_rollout(running, now=NOW)
    for i in range(1, 50):
        records.save_rollout(rollout(NOW + i), now=NOW + 50)
    ids = [r["id"] for r in records.rollouts("web", "dev")]
    assert running["id"] in ids and len(ids) == 4
    cache.fetches = 0
    assert [r["id"] for r in records.running_rollouts("web", "dev")] == [running["id"]]
    assert cache.fetches == 1
    running["status"] = "interrupted"
    records.save_rollout(running, now=NOW + 50)
    assert records.running_rollouts("web", "dev") == []
    assert len(records.rollouts("web", "dev")) == 3


def test_recent_reads_newest_first_only_as_far_as_asked():
    cache = CountingCache()
    records = Store(cache)
    for i in range(30):
        records.save_rollout(rollout(NOW + i, digest=f"d{i}"), now=NOW + 30)
    cache.fetches = 0
    found = next(r for r in records.recent("web", "dev") if r["to_digest"] == "d27")
    assert found["to_digest"] == "d27" and cache.fetches == 3


def rejection(at, reason="bad token"):
    return {"id": store.new_id(at), "time": at, "tag": "salt/engines/hook/saltcd/registry",
            "source": {"kind": "registry", "origin": "registry"}, "reason": reason}


def test_rejections_keep_only_the_newest_in_full():
    cache = MemoryCache()
    records = Store(cache, limits(rejections_keep=5, rejections_days=1))
    for i in range(40):
        records.add_rejection(rejection(NOW + i), now=NOW + 40)
    kept = records.rejections()
    assert len(kept) == 5 and len(cache.banks[store.REJECTED]) == 5
    assert [r["time"] for r in kept] == [NOW + i for i in range(39, 34, -1)]  # newest first
    assert [r["time"] for r in records.rejections(limit=2)] == [NOW + 39, NOW + 38]
    records.add_rejection(rejection(NOW + 2 * DAY), now=NOW + 2 * DAY)
    assert [r["time"] for r in records.rejections()] == [NOW + 2 * DAY]  # the rest aged out


def test_rejection_counts_merge_per_minute_source_and_reason():
    records = Store(MemoryCache())
    minute = int(NOW) // 60 * 60
    records.count_rejections({("registry", "no token", minute): 3, ("hub", "bad signature", minute): 1},
                             now=NOW)
    records.count_rejections({("registry", "no token", minute + 15): 4,  # same minute, later batch
                              ("registry", "no token", minute + 60): 2}, now=NOW)
    assert records.rejection_counts() == [
        {"minute": minute, "source": "hub", "reason": "bad signature", "count": 1},
        {"minute": minute, "source": "registry", "reason": "no token", "count": 7},
        {"minute": minute + 60, "source": "registry", "reason": "no token", "count": 2},
    ]
    assert [r["count"] for r in records.rejection_counts(since=minute + 60)] == [2]


def test_rejection_counts_stay_bounded_in_size_and_age():
    cache = MemoryCache()
    records = Store(cache, limits(rejections_days=1))
    minute = int(NOW) // 60 * 60
    # A flood of distinct reasons in one minute: one record, at most 51 rows.
    records.count_rejections({("registry", f"reason {i}", minute): 1 for i in range(500)}, now=NOW)
    rows = records.rejection_counts()
    assert len(rows) == store.MAX_PAIRS_PER_MINUTE + 1 and sum(r["count"] for r in rows) == 500
    assert len(cache.banks[store.COUNTS]) == 1
    later = NOW + 2 * DAY
    records.count_rejections({("registry", "no token", int(later)): 1}, now=later)
    assert [r["minute"] for r in records.rejection_counts()] == [int(later) // 60 * 60]


def test_limits_come_from_the_settings(settings):
    assert Limits.from_settings(settings) == Limits(200, 90, 100, 30)


def test_localfs_store_prunes_files(tmp_path):
    """The same bounds on Salt's own localfs cache: the files go."""
    import salt.cache
    import salt.config

    opts = salt.config.master_config(None)
    opts.update({"cachedir": str(tmp_path), "cache": "localfs"})
    records = Store(salt.cache.factory(opts), limits(history_keep=3, rejections_keep=2))
    for i in range(10):
        records.save_rollout(rollout(time.time() + i))
        records.add_rejection(rejection(time.time() + i))
    assert len(list((tmp_path / "saltcd" / "rollouts" / "web" / "dev").iterdir())) == 3
    assert len(list((tmp_path / "saltcd" / "audit" / "rejected").iterdir())) == 2

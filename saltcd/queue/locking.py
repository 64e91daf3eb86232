"""One rollout per app and environment (and one reconcile pass).

One master (the default): an flock on a file in the master cachedir
(LocalLocks). Several masters sharing an etcd store: a lease lock in etcd whose
token fences the holder's writes and steps (SharedLocks, saltcd.ha).

flock is released by the kernel when the holding process dies, so a crashed or
killed rollout never leaves a stale lock behind. Each holder opens the file
itself: flock locks belong to the open file description.
"""

import contextlib
import fcntl
import os


def lock_path(cachedir, app, env):
    """The lock file of one app/env (names are validated before they get here)."""
    return os.path.join(cachedir, "saltcd", "locks", f"{app}.{env}.lock")


def reconcile_lock_path(cachedir):
    """The lock of reconcile's pass over every tag (lock_path's names all have a dot)."""
    return os.path.join(cachedir, "saltcd", "locks", "reconcile")


@contextlib.contextmanager
def try_lock(path):
    """Yield True while holding the lock at `path`, or False if someone else holds it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()



class LocalLock:
    """What a holder of an flock can tell a rollout: nothing to fence (one master)."""

    token = None

    def check(self, what="go on"):
        """An flock is held until its process dies: never lost while we run."""

    def stamp(self):
        """What a rollout's record and deploy data carry of this lock: nothing."""
        return {}


class LocalLocks:
    """One master: an flock per name in the master cachedir."""

    shared = False

    def __init__(self, lock_dir):
        self.lock_dir = lock_dir

    @contextlib.contextmanager
    def hold(self, app, env=None):
        """Yield a LocalLock while holding app/env's lock (or, with no env, the
        lock named `app`: reconcile), or None if another process holds it."""
        path = lock_path(self.lock_dir, app, env) if env else reconcile_lock_path(self.lock_dir)
        with try_lock(path) as held:
            yield LocalLock() if held else None


class SharedLocks:
    """Several masters: a lease lock per name in etcd, its token fencing every write
    this thread makes to the store meanwhile (saltcd.ha)."""

    shared = True

    def __init__(self, cache, conf, master):
        self.cache = cache  # an EtcdCache
        self.conf = conf  # config.StoreConfig
        self.master = master

    @contextlib.contextmanager
    def hold(self, app, env=None):
        """Yield the held LeaseLock (`token`, `check()`), or None if another master holds it."""
        from saltcd.ha import lease_lock  # noqa: PLC0415 - etcd only when configured

        name = f"{app}.{env}" if env else app
        lock = lease_lock.LeaseLock(self.cache.cluster, lease_lock.lock_key(self.conf.prefix, name),
                                    self.conf.lease_ttl, self.conf.lease_renew,
                                    {"master": self.master, "pid": os.getpid()})
        if not lock.acquire():
            yield None
            return
        try:
            with self.cache.fenced(lock):
                yield lock
        finally:
            lock.release()


    def taken(self, app, env):
        """True while some master holds app/env's lock (one read)."""
        from saltcd.ha import lease_lock  # noqa: PLC0415 - etcd only when configured

        return bool(self.cache.cluster.range(lease_lock.lock_key(self.conf.prefix, f"{app}.{env}"),
                                             keys_only=True))


def locks_for(cache, conf, lock_dir, master):
    """The locks of a store: shared (etcd) when `conf` says so, else this master's flocks."""
    return SharedLocks(cache, conf, master) if conf.shared else LocalLocks(lock_dir)


# What a rollout does on minions, and what a lost lock must stop first.
ACTS = {"apply": "apply a batch", "hook": "run a release hook", "stop_stale": "stop another master's state runs"}


class Guarded:
    """A fleet whose acts first check that `lock` is still held (reads pass through):
    a master whose lease lapsed starts no new step."""

    def __init__(self, fleet, lock):
        self.fleet = fleet
        self.lock = lock

    def __getattr__(self, name):
        if name == "puller":
            # No pulling ahead under a lease: the pulls run in a thread of their own
            # that this lock does not fence, and a master that lost the lock would
            # go on publishing and withdrawing deploy data there. Batches pull.
            raise AttributeError("no pulling ahead with a shared store")
        value = getattr(self.fleet, name)
        if name not in ACTS:
            return value

        def act(*args, **kwargs):
            self.lock.check(ACTS[name])
            return value(*args, **kwargs)
        return act

"""One rollout per app and environment (and one reconcile pass): an flock on a
file in the master cachedir.

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


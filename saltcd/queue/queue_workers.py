"""One worker thread per app/env, started on demand, that drains its queue.

The saltcd_drains engine lives as long as the master, so a push costs a
thread, not a new `salt-run` process (about 0.7 s of Python start-up on every
push, and hundreds of processes when a burst of pushes arrives).
"""

import logging
import threading

log = logging.getLogger(__name__)


class QueueWorkers:
    """Run `drain(app, env)` in a thread per app/env; never two at once for one pair.

    A request for a pair whose worker is still running is not lost: the worker
    drains once more before it ends, so whatever was queued meanwhile runs.
    """

    def __init__(self, drain):
        self._drain = drain
        self._guard = threading.Lock()
        self._threads = {}
        self._again = set()

    def request(self, app, env):
        """Ask for app/env's queue to be run; returns True if a new worker started."""
        pair = (app, env)
        with self._guard:
            running = self._threads.get(pair)
            if running is not None and running.is_alive():
                self._again.add(pair)
                return False
            worker = threading.Thread(target=self._work, args=pair, name=f"saltcd-drain-{app}-{env}",
                                      daemon=True)
            self._threads[pair] = worker
            worker.start()
            return True

    def _work(self, app, env):
        pair = (app, env)
        while True:
            try:
                self._drain(app, env)
            except Exception:  # pylint: disable=broad-except
                # The requests stay queued: the next push or resume retries them.
                log.exception("saltcd: draining %s/%s failed", app, env)
            with self._guard:
                if pair not in self._again:
                    del self._threads[pair]
                    return
                self._again.discard(pair)

    def running(self):
        """The app/env pairs with a live worker."""
        with self._guard:
            return sorted(pair for pair, thread in self._threads.items() if thread.is_alive())

    def join(self, timeout=None):
        """Wait for the workers alive now (tests and orderly shutdown)."""
        with self._guard:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)

"""Pull ahead of the batches: every minion that will change starts pulling the
pinned image when the rollout starts, so that a batch only replaces and gates.

Salt-agnostic like rollout.py: a *puller* (salt_fleet.SaltPuller for real
minions) does the work, from one background thread:
- `publish(minion) -> job id` — serve the deploy data to `minion` and start
  `state.apply saltcd.pull` there, without waiting (the SLS logs in and pulls,
  it stops and changes no container);
- `returns(jobs, wait) -> [(job id, minion, {"ok", "comment"})]` — those of
  `jobs` ({job id: minion}, the pulls still running) that ended;
- `withdraw(minions)` — take the deploy data back from them.

Why a thread that publishes one job per minion and tops up as returns come in,
rather than one big job: the concurrency stays bounded (`prepull` minions at
once, so the registry is not hit by the whole fleet), and a slow minion holds
up no one. The thread ends when every pull has returned, or when the rollout
ends (also when it crashed: it watches the record's status).

A minion whose batch starts before its pull was published is not pulled here
(its batch's deploy state pulls, as it always did). One whose pull is still
running when its batch starts is fine: the batch's `state.apply` runs with
`queue=True`, which Salt 3008 turns into "queue the job on the minion and run
it when the running state job has ended", so the deploy follows the pull.

A failed pull is reported (an event, the record) and nothing else: its batch's
deploy state pulls again before it stops anything, so a passing registry
hiccup heals and a lasting failure fails that minion in its batch, where the
failure budget counts it, with its container untouched.
"""

import logging
import threading
import time

log = logging.getLogger(__name__)

NO_ANSWER = "no answer within the timeout"
ENDED_FIRST = "the rollout ended before the pull did"


class Prepull:
    """The pulls of one rollout (start, claim per batch, stop at its end)."""

    def __init__(self, puller_factory, minions, limit, timeout, record, notify=lambda minion, result: None):
        self.puller_factory = puller_factory
        self.queue = list(minions)  # in batch order: the next batch's minions first
        self.limit = limit
        self.timeout = timeout
        self.record = record
        self.notify = notify
        self.results = {}  # minion -> {"ok", "comment", "started", "ended", "seconds"}
        self.running = {}  # job id -> minion
        self.held = set()  # minions whose deploy data we serve for their pull
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.puller = None
        self.thread = None

    # the rollout's side
    def start(self):
        self.thread = threading.Thread(target=self._loop, name="saltcd-prepull", daemon=True)
        self.thread.start()
        return self

    def claim(self, minions):
        """Their batch starts now: the batch owns their deploy data from here on,
        and a minion not yet pulling is left to the batch."""
        claimed = set(minions)
        with self.lock:
            self.queue = [m for m in self.queue if m not in claimed]
            self.held -= claimed

    def stop(self):
        """Publish no more pulls, take back the data of pulls still running, and
        return the report for the record."""
        self.stopped.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
        self._release()
        return self.report()

    def report(self):
        with self.lock:
            return {"limit": self.limit, "minions": {m: dict(r) for m, r in sorted(self.results.items())}}

    # the thread's side
    def _loop(self):
        try:
            self.puller = self.puller_factory()
            while not self._over():
                self._top_up()
                with self.lock:
                    if not self.running and not self.queue:
                        break
                    running = dict(self.running)
                for jid, minion, outcome in self.puller.returns(running, wait=0.5):
                    self._ended(jid, minion, outcome)
                self._expire()
        except Exception:  # pylint: disable=broad-except
            # A pull is an optimisation: the batches pull by themselves.
            log.exception("saltcd: pulling ahead stopped")
        finally:
            if self._over():
                self._release()
            if self.puller is not None:
                self.puller.close()

    def _over(self):
        # A crashed rollout never calls stop(); the controller marks its record.
        return self.stopped.is_set() or self.record.get("status") != "running"

    def _top_up(self):
        with self.lock:
            while self.queue and len(self.running) < self.limit and not self._over():
                minion = self.queue.pop(0)
                self.held.add(minion)
                self.results[minion] = {"ok": None, "started": time.time()}
                try:
                    jid = self.puller.publish(minion)
                except Exception as exc:  # pylint: disable=broad-except
                    self._settle(minion, {"ok": False, "comment": f"not published: {exc}"})
                    continue
                self.running[jid] = minion

    def _ended(self, jid, minion, outcome):
        with self.lock:
            if self.running.get(jid) != minion:
                return
            del self.running[jid]
            self._settle(minion, outcome)

    def _expire(self):
        now = time.time()
        with self.lock:
            for jid, minion in list(self.running.items()):
                if now - self.results[minion]["started"] > self.timeout:
                    del self.running[jid]
                    self._settle(minion, {"ok": False, "comment": NO_ANSWER})

    def _settle(self, minion, outcome):
        """Record one pull's end (lock held) and give its data back unless a batch owns it."""
        result = self.results[minion]
        result.update({"ok": bool(outcome["ok"]), "comment": str(outcome.get("comment", ""))[:500],
                       "ended": time.time()})
        result["seconds"] = round(result["ended"] - result["started"], 3)
        log.info("saltcd: pull ahead on %s: %s in %.1f s (%s)", minion,
                 "done" if result["ok"] else "FAILED", result["seconds"], result["comment"])
        if minion in self.held:
            self.held.discard(minion)
            self.puller.withdraw([minion])
        self.notify(minion, dict(result))

    def _release(self):
        """The rollout is over: pulls still running lose their data (a pull not
        started yet then fails to render instead of pulling late)."""
        with self.lock:
            for jid, minion in list(self.running.items()):
                del self.running[jid]
                self.results[minion].update({"ok": None, "comment": ENDED_FIRST})
            held, self.held = sorted(self.held), set()
            self.queue = []
            puller = self.puller
        if held and puller is not None:
            puller.withdraw(held)

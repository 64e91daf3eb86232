import threading

from saltcd.queue.queue_workers import QueueWorkers


def test_one_worker_per_pair_and_a_request_during_a_drain_runs_again():
    release = threading.Event()
    calls = []

    def drain(app, env):
        calls.append((app, env))
        if len(calls) == 1:
            release.wait(5)  # the first drain is busy while more requests arrive

    workers = QueueWorkers(drain)
    assert workers.request("web", "dev") is True
    assert workers.request("web", "dev") is False  # running: folded into one more round
    assert workers.request("web", "dev") is False
    assert workers.request("api", "dev") is True   # another pair runs alongside
    release.set()
    workers.join(5)
    assert sorted(calls) == [("api", "dev"), ("web", "dev"), ("web", "dev")]
    assert workers.running() == []


def test_a_failing_drain_does_not_kill_the_pair():
    calls = []

    def drain(app, env):
        calls.append(app)
        raise RuntimeError("registry down")

    workers = QueueWorkers(drain)
    workers.request("web", "dev")
    workers.join(5)
    assert workers.request("web", "dev") is True  # a new worker: the pair is not wedged
    workers.join(5)
    assert calls == ["web", "web"]

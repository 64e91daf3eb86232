"""The health gate's schedule (saltcd.wait_healthy, salt/_utils/saltcd_minion.py):
how long it waits between probes before and after the app first answers, and
that the timeout still ends it. The probe and the clock are faked; the gate itself runs
against real containers in every integration test that deploys."""

import types

import pytest

from tests import salt_side


@pytest.fixture()
def gate(monkeypatch, tmp_path):
    """saltcd.wait_healthy through Salt's loader, with a fake clock and a probe
    that answers from a script (both patched where the util looks them up)."""
    loaders = salt_side.minion(tmp_path)
    util = loaders.utils["saltcd_minion.wait_healthy"].__globals__

    class Clock:
        now = 0.0
        slept = []

        def monotonic(self):
            return self.now

        def sleep(self, seconds):
            self.slept.append(round(seconds, 3))
            self.now += seconds

    clock = Clock()
    answers = []
    monkeypatch.setitem(util, "time", clock)
    monkeypatch.setitem(util, "probe", lambda url, timeout, status: {
        "healthy": answers.pop(0) if answers else True, "status": 200, "error": None})
    return types.SimpleNamespace(wait_healthy=loaders.functions["saltcd.wait_healthy"], clock=clock,
                                 answers=answers)


def test_before_the_first_answer_the_waits_double_from_50_ms_up_to_the_interval(gate):
    gate.answers.extend([False] * 6)
    result = gate.wait_healthy("http://127.0.0.1:1/health", timeout=30, interval=0.5)
    assert result["healthy"] is True
    assert gate.clock.slept == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_an_app_that_answers_at_once_is_passed_without_a_wait(gate):
    result = gate.wait_healthy("http://127.0.0.1:1/health", timeout=30, interval=1)
    assert result == {"healthy": True, "comment": "Healthy after 0.0s"}
    assert gate.clock.slept == []


def test_once_healthy_the_settle_is_probed_every_interval(gate):
    gate.answers.extend([False, True, True, True, True])
    result = gate.wait_healthy("http://127.0.0.1:1/health", timeout=30, interval=1, settle=3)
    assert result["healthy"] is True and "still healthy after 3s" in result["comment"]
    assert gate.clock.slept == [0.05, 1, 1, 1]


def test_an_interval_shorter_than_the_first_wait_is_kept(gate):
    gate.answers.extend([False] * 3)
    gate.wait_healthy("http://127.0.0.1:1/health", timeout=30, interval=0.02)
    assert gate.clock.slept == [0.02, 0.02, 0.02]


def test_the_timeout_still_ends_a_gate_that_never_passes(gate):
    gate.answers.extend([False] * 1000)
    result = gate.wait_healthy("http://127.0.0.1:1/health", timeout=3, interval=1)
    assert result["healthy"] is False and "did not answer 200 within 3s" in result["comment"]
    # 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1 + 1 = 3.55: the probe at 3.55 s is the last.
    assert gate.clock.slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1, 1]


def test_failing_after_passing_ends_the_gate_at_once(gate):
    gate.answers.extend([True, False])
    result = gate.wait_healthy("http://127.0.0.1:1/health", timeout=30, interval=1, settle=5)
    assert result["healthy"] is False and "became unhealthy" in result["comment"]
    assert gate.clock.slept == [1]

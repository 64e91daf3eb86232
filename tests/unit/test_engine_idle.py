"""An engine that cannot work (bad configuration, nothing to send to) says why
once and idles: the master restarts an engine process that ends, so returning
would log the same error again and again."""

import logging

import pytest

from saltcd.master import engines, wiring

BAD_APPS = {"apps": {"web": {"repository": "Not A Repository!"}}}


class Idled(Exception):
    """Raised by the test's sleep: the engine reached its idle wait."""


@pytest.fixture
def sleeps(monkeypatch):
    """The seconds each sleep of wiring.idle_engine asked for; the first one ends the test's call."""
    asked = []

    def sleep(seconds):
        asked.append(seconds)
        raise Idled

    monkeypatch.setattr(wiring.time, "sleep", sleep)
    return asked


def test_idle_engine_logs_once_and_never_returns(sleeps, caplog):
    caplog.set_level(logging.DEBUG, logger=wiring.__name__)
    with pytest.raises(Idled):
        wiring.idle_engine(logging.ERROR, "engine idle: %s", "because")
    # Only binding's own records: a thread another test of this worker left behind may log meanwhile.
    assert [r.getMessage() for r in caplog.records if r.name == wiring.__name__] == ["engine idle: because"]
    assert sleeps == [3600]


def test_drain_engine_with_an_invalid_config_idles_with_one_error(sleeps, caplog, tmp_path):
    caplog.set_level(logging.INFO)
    with pytest.raises(Idled):
        engines.run_queues({"saltcd": BAD_APPS, "cachedir": str(tmp_path)})
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "drain engine idle: invalid saltcd configuration" in errors[0]
    assert "web" in errors[0]  # the reason names what is wrong


@pytest.mark.parametrize("notify, level, words", [
    ([{"url": "ftp://hooks.example.com/x"}], logging.ERROR, "must be an http:// or https:// URL"),
    ([], logging.DEBUG, "no saltcd:notify endpoint configured"),
])
def test_notify_engine_without_a_usable_endpoint_idles(sleeps, caplog, notify, level, words):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Idled):
        engines.send_notifications({"saltcd": {"notify": notify}})
    said = [r for r in caplog.records if words in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == level

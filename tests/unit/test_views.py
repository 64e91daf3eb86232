"""What a person reads of status, history and rollout returns (saltcd.present.views)."""

import time

from saltcd.present import views

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
NOW = time.time()


def _record(**extra):
    record = {
        "id": "20261126T220000.000000Z-abcdef", "app": "web", "env": "dev", "trigger": "operator:alice",
        "started": NOW - 300, "ended": NOW - 288, "status": "succeeded", "to_digest": NEW,
        "from_digests": {"dev-1": OLD, "dev-2": OLD}, "minions": ["dev-1", "dev-2"], "failed_minions": [],
        "batches": [
            {"kind": "batch", "number": 1, "started": NOW - 300, "ended": NOW - 294, "failed": [],
             "minions": {"dev-1": {"from": OLD, "to": NEW, "ok": True, "changed": True, "comment": "ok"}}},
            {"kind": "batch", "number": 2, "started": NOW - 294, "ended": NOW - 288, "failed": ["dev-2"],
             "minions": {"dev-2": {"from": OLD, "to": NEW, "ok": False, "changed": True,
                                   "comment": "not healthy within 10 s"}}},
        ],
    }
    record.update(extra)
    return record


def test_history_is_one_line_per_rollout_with_local_time_and_age():
    text = views.history_text([_record(), _record(id="x", status="rolled_back", reason="batch 2 failed")],
                              now=NOW)
    lines = text.splitlines()
    assert len(lines) == 2
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW - 300))
    assert lines[0].startswith("20261126T220000.000000Z-abcdef  " + stamp + " (5 min ago)  operator:alice")
    assert "sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb  2 batch(es)  12.0 s  succeeded" in lines[0]
    assert lines[1].endswith("rolled_back: batch 2 failed")
    assert "\033" not in text  # no colour unless asked


def test_history_detail_adds_per_batch_per_minion_lines():
    text = views.history_text([_record()], detail=True, now=NOW)
    assert "  batch 1 (6.0 s)" in text
    assert "    dev-2: sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb replaced, FAILED (not healthy within 10 s)" in text


def test_history_of_old_or_partial_records_renders():
    assert views.history_text([{"id": "1", "status": "superseded"}]).startswith("1  -  -  - -> -")
    assert views.history_text([]) == "no rollouts recorded"


def test_status_tables_and_one_line_for_idle_environments():
    status = {
        "web": {
            "dev": {"last_good": NEW, "converged": True, "mode": "auto", "rollout_running": [],
                    "pending": [{"tag": "dev", "trigger": "registry", "reason": "cooldown", "runs_at": "22:10"}],
                    "awaiting_approval": [],
                    "minions": {"dev-1": {"digest": NEW, "running": True, "healthy": True,
                                          "container_id": "0123456789ab"},
                                "dev-2": {"answered": False}}},
            "prod": {"last_good": None, "converged": False, "mode": "manual", "rollout_running": [],
                     "pending": [], "awaiting_approval": [],
                     "minions": {"prod-1": {"digest": None, "running": None, "healthy": False}}},
        }
    }
    text = views.status_text(status, now=NOW)
    lines = text.splitlines()
    assert lines[0] == "web/dev  converged on sha256:bbbbbbbbbbbb  (mode auto)"
    assert lines[1].split() == ["minion", "digest", "container", "health", "age"]
    assert lines[2].split() == ["dev-1", "sha256:bbbbbbbbbbbb", "running", "healthy", "0123456789ab"]
    assert lines[3].split() == ["dev-2", "-", "no", "answer", "-", "-"]
    assert "  queued: dev from registry, waiting: cooldown (runs at 22:10)" in lines
    assert lines[-1] == "web/prod: nothing deployed, nothing pending (1 minion(s), mode manual)"


def test_colours_only_when_asked():
    paint = views.Paint(True)
    assert "\033[32msucceeded\033[0m" in views.history_line(_record(), paint, NOW)


def test_rollout_summary_and_a_queued_request():
    text = views.rollout_text(_record(status="rolled_back", reason="batch 2 failed on dev-2; rolled back",
                                      failed_minions=["dev-2"]))
    assert text.splitlines() == [
        "web/dev: rolled_back sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb: batch 2 failed on dev-2; rolled back",
        "  rollout 20261126T220000.000000Z-abcdef, 2 minion(s), 2 batch(es), 12.0 s, failed: dev-2"]
    assert views.rollout_text({"status": "queued", "reason": "runs next"}) == "queued: runs next"
    assert views.rollout_text({"result": False, "error": "unknown app 'x'"}) == "error: unknown app 'x'"


def test_render_dispatches_marked_returns_and_progress_events():
    assert views.render({"outputter": "saltcd", "view": "history", "shown": [], "detail": False}) == \
        "no rollouts recorded"
    assert views.render({"suffix": "progress", "event": {"message": "web/dev batch 1: dev-1 -> x"}}) == \
        "web/dev batch 1: dev-1 -> x"
    assert views.render({"a": 1}) is None


def test_watch_lines_come_from_the_record_each_part_once():
    shown = set()
    running = _record(status="running", batches=_record()["batches"][:1])
    assert views.record_lines(running, shown) == [
        "web/dev: rollout 20261126T220000.000000Z-abcdef started -> sha256:bbbbbbbbbbbb on dev-1, dev-2",
        "web/dev batch 1: healthy", "  dev-1: sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb replaced, healthy"]
    assert views.record_lines(running, shown) == []  # read again, nothing new
    ended = _record(status="failed", reason="1 minion(s) failed: dev-2",
                    watch={"outcome": "failed", "problems": {"dev-1": "container exited (exit code 1)"}})
    assert views.record_lines(ended, shown) == [
        "web/dev batch 2: failed",
        "    dev-2: sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb replaced, FAILED (not healthy within 10 s)"[2:],
        "web/dev: watch after the last batch: failed: dev-1 container exited (exit code 1)",
        "web/dev: failed: 1 minion(s) failed: dev-2"]


HOSTILE = "Unhealthy: \x1b[2J\x1b]0;pwned\x07 <!channel>"


def test_clean_removes_escape_sequences_and_control_characters():
    assert views.clean("a\x1b[31;1mred\x1b[0m b") == "ared b"  # CSI
    assert views.clean("t\x1b]0;title\x07x \x1b]8;;http://evil\x1b\\link") == "tx link"  # OSC, BEL or ST
    assert views.clean("x\x1b]0;never ends") == "x"
    assert views.clean("lone\x1b") == "lone" and views.clean("\x1b\nline \x1bc reset") == " line  reset"
    assert views.clean("c1 \x9b2J\x9d0;t\x9c \x85next \x90dcs\x9cend") == "c1   next end"
    assert views.clean("over\rwrite back\x08\x08space\x00\x7f") == "over write backspace"
    assert views.clean("one\r\ntwo\n\tthree") == "one two three"
    assert views.clean("\u202eevil\u202c ok") == "evil ok"
    assert views.clean("<!channel> ünïcode & sha256:ab") == "<!channel> ünïcode & sha256:ab"
    assert views.clean(None) == "None"


def test_minion_text_is_shown_as_text_in_every_view():
    record = _record(status="rolled_back", reason=f"batch 2 failed on dev-2 ({HOSTILE})", failed_minions=["dev-2"])
    record["batches"][1]["minions"]["dev-2"]["comment"] = HOSTILE
    record["batches"][1]["minions"]["dev-2\x1b[8m"] = {"from": OLD, "to": NEW + "\x1b]0;x\x07", "ok": False}
    status = {"web": {"dev": {"last_good": NEW, "converged": False, "mode": "auto",
                              "pending": [{"tag": "dev", "trigger": "registry", "reason": HOSTILE}],
                              "minions": {"dev-1\x1b[2J": {"digest": NEW, "running": True, "healthy": True,
                                                           "container_id": "\x1b]0;pwned\x07"}}}}}
    texts = [views.history_text([record], detail=True, now=NOW), views.rollout_text(record),
             views.status_text(status, now=NOW), "\n".join(views.record_lines(record, set())),
             views.render({"outputter": "saltcd", "view": "history", "shown": [record], "detail": True}),
             views.render({"suffix": "progress", "event": {"message": f"  dev-2: {HOSTILE}\nforged line"}})]
    for text in texts:
        assert "\x1b" not in text and "\x07" not in text and "pwned" not in text, text
    assert "    dev-2: sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb replaced, FAILED (Unhealthy:  <!channel>)" in texts[0]
    assert "    'dev-2\\x1b[8m': sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb unchanged, FAILED" in texts[0]  # no hiding
    assert "<!channel>" in texts[1] and "dev-1[2J" not in texts[2] and "  dev-1  " in texts[2]
    assert texts[-1] == "  dev-2: Unhealthy:  <!channel> forged line"
    # Colours of saltcd's own still come through.
    assert "\033[31mFAILED\033[0m (Unhealthy:  <!channel>)" in views.history_text([record], True, views.Paint(True))


def test_age_from_docker_started_at():
    info = {"digest": NEW, "running": True, "healthy": True, "started_at": "2026-11-26T22:00:00.123456789Z"}
    now = views._epoch("2026-11-26T22:05:00Z")
    assert views._minion_row("dev-1", info, now)[-1] == "4 min ago"
    assert views._epoch("0001-01-01T00:00:00Z") is None


def test_triggers_read_as_kind_and_origin():
    assert views.trigger_text({"kind": "registry", "origin": "saltcd/ingress/registry"}) == \
        "registry (saltcd/ingress/registry)"
    assert views.trigger_text({"kind": "operator", "origin": "alice"}) == "operator (alice)"

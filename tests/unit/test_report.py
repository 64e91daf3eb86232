"""The HTML page of a rollout (saltcd.present.report)."""

import re
import stat
import time

from saltcd.present import report

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


def _record(rollout_id="r2", status="rolled_back"):
    now = time.time()
    return {
        "id": rollout_id, "app": "web", "env": "dev", "trigger": "registry", "status": status,
        "reason": "batch 1 failed on dev-2; <rolled back>", "started": now - 20, "ended": now,
        "to_digest": NEW, "from_digests": {"dev-1": OLD, "dev-2": OLD}, "minions": ["dev-1", "dev-2"],
        "batches": [
            {"kind": "batch", "number": 1, "started": now - 20, "ended": now - 10,
             "minions": {"dev-1": {"from": OLD, "to": NEW, "ok": True, "changed": True},
                         "dev-2": {"from": OLD, "to": NEW, "ok": False, "changed": True,
                                   "comment": "<script>alert(1)</script>"}}},
            {"kind": "rollback", "number": 1, "started": now - 10, "ended": now,
             "minions": {"dev-1": {"from": NEW, "to": OLD, "ok": True, "changed": True},
                         "dev-2": {"from": NEW, "to": OLD, "ok": True, "changed": True}}},
        ],
    }


def test_the_page_holds_minions_digests_outcome_and_history(tmp_path):
    path = report.write(str(tmp_path / "sub" / "r.html"), _record(),
                        [_record(), {"id": "r1", "status": "succeeded", "to_digest": OLD}])
    text = (tmp_path / "sub" / "r.html").read_text()
    assert path.endswith("r.html")
    assert "<strong class=\"rolled_back\">rolled_back</strong>" in text
    assert NEW in text and OLD[:19] in text
    assert text.count(">dev-1</text>") == 1 and text.count(">dev-2</text>") == 1  # one timeline row each
    assert text.count("<rect") == 4  # two steps on two minions
    assert "<code>r1</code>" in text  # the history
    # Self-contained and escaped.
    assert "<script>" not in text and "&lt;script&gt;" in text and "&lt;rolled back&gt;" in text
    assert not re.search(r"(src|href)=", text)


def test_newest_run_skips_records_without_batches():
    assert report.newest_run([{"id": "s", "status": "superseded"}, _record()])["id"] == "r2"
    assert report.newest_run([]) is None


def test_the_page_is_private_to_the_master_user(tmp_path):
    path = tmp_path / "reports" / "r.html"
    path.parent.mkdir()
    path.write_text("an older page")
    path.chmod(0o644)
    report.write(str(path), _record())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # also when it replaces a page readable by all
    report.write(str(tmp_path / "new" / "r.html"), _record())
    assert stat.S_IMODE((tmp_path / "new" / "r.html").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.html"]  # no temporary file left


def test_minion_text_on_the_page_is_text_only(tmp_path):
    hostile = "Unhealthy: \x1b[2J\x1b]0;pwned\x07 <!channel>"
    record = _record()
    record["batches"][0]["minions"]["dev-2"]["comment"] = hostile
    record["reason"] = f"batch 1 failed on dev-2 ({hostile})"
    report.write(str(tmp_path / "r.html"), record, [record])
    text = (tmp_path / "r.html").read_text()
    assert "\x1b" not in text and "\x07" not in text and "pwned" not in text
    assert "FAILED: Unhealthy:  &lt;!channel&gt;</td>" in text

"""What `salt-run deploy.*` prints for a person, and what it returns for scripts:
the real salt-run command, the master's config and cache, no daemons."""

import json
import os
import subprocess
import sys
import time

import pytest
import salt.cache
import salt.config
import yaml

from saltcd import master_config
from saltcd.store import Store

SALT_RUN = os.path.join(os.path.dirname(sys.executable), "salt-run")
NEW = "sha256:" + "b" * 64


@pytest.fixture
def master(tmp_path, repo_root, example_config):
    conf = tmp_path / "conf"
    conf.mkdir()
    opts = {
        **master_config.wiring(repo_root),
        "engines": [],
        "root_dir": str(tmp_path),
        "cachedir": str(tmp_path / "cache"),
        "pki_dir": str(tmp_path / "pki"),
        "sock_dir": str(tmp_path / "sock"),
        "log_file": str(tmp_path / "master.log"),
        "user": "root",
        "saltcd": example_config,
    }
    (conf / "master").write_text(yaml.safe_dump(opts))
    (tmp_path / "cache" / "proc").mkdir(parents=True)
    now = time.time()
    records = Store(salt.cache.factory(salt.config.master_config(str(conf / "master"))))
    records.save_rollout({
        "id": "20261126T220000.000000Z-abcdef", "app": "web", "env": "qa", "status": "succeeded",
        "trigger": "operator:alice", "started": now - 90, "ended": now - 80, "to_digest": NEW,
        "from_digests": {"qa-1": None}, "minions": ["qa-1"],
        "batches": [{"kind": "batch", "number": 1, "started": now - 90, "ended": now - 80, "failed": [],
                     "minions": {"qa-1": {"from": None, "to": NEW, "ok": True, "changed": True}}}]})
    return conf, tmp_path


def salt_run(conf, *args):
    done = subprocess.run([SALT_RUN, "-c", str(conf), *args], capture_output=True, text=True, timeout=120,
                          check=False)
    return done.returncode, done.stdout


def test_history_is_a_table_for_a_person_and_the_full_list_with_out_json(master):
    conf, _ = master
    rc, text = salt_run(conf, "deploy.history", "app=web", "env=qa")
    assert rc == 0
    assert text.splitlines()[0].startswith("20261126T220000.000000Z-abcdef  ")
    assert "(1 min ago)  operator:alice  - -> sha256:bbbbbbbbbbbb  1 batch(es)  10.0 s  succeeded" in text
    assert "\033[" not in text  # not a TTY: no colour
    rc, text = salt_run(conf, "deploy.history", "app=web", "env=qa", "detail=True")
    assert "    qa-1: - -> sha256:bbbbbbbbbbbb replaced, healthy" in text
    rc, text = salt_run(conf, "deploy.history", "app=web", "env=qa", "--out=json")
    records = json.loads(text)
    assert [r["id"] for r in records] == ["20261126T220000.000000Z-abcdef"] and "outputter" not in text
    assert records[0]["batches"][0]["minions"]["qa-1"]["ok"] is True


def test_errors_keep_their_exit_code(master):
    conf, _ = master
    rc, text = salt_run(conf, "deploy.history", "app=nope", "env=qa")
    assert rc == 1 and text.strip() == "error: unknown app 'nope'"


def test_report_writes_a_page_and_says_where(master):
    conf, root = master
    rc, text = salt_run(conf, "deploy.report", "app=web", "env=qa")
    path = root / "cache" / "saltcd-reports" / "web-qa-20261126T220000.000000Z-abcdef.html"
    assert rc == 0 and text.strip() == f"report written: {path}"
    page = path.read_text()
    assert "qa-1" in page and NEW in page and ">succeeded</strong>" in page

"""CPU time of the master's processes, read from /proc, grouped by role."""

import os
import threading
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
ROLES = (("reactor", "engines.reactor"), ("drain_engine", "saltcd_drains"),
         ("webhook_engine", "saltcd_webhook"))


def _role(cmdline):
    for role, marker in ROLES:
        if marker in cmdline:
            return role
    return "other"


def _master_processes(conf_dir):
    """(/proc/<pid>, command line) of each salt-master process of the config `conf_dir`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it exited while we looked
        if "salt-master" in cmdline and conf_dir in cmdline:
            yield proc, cmdline


def cpu_seconds(stat_path):
    """User + system CPU seconds of a process, from its /proc/<pid>/stat."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / TICK


def master_cpu(conf_dir):
    """{role: CPU seconds so far} over salt-master processes of the config `conf_dir`,
    plus "master" for their sum. Exited processes are not counted."""
    totals = {role: 0.0 for role, _ in ROLES}
    totals["other"] = 0.0
    for proc, cmdline in _master_processes(conf_dir):
        try:
            totals[_role(cmdline)] += cpu_seconds(proc / "stat")
        except OSError:
            continue  # it exited while we looked
    totals["master"] = sum(totals.values())
    return totals


def delta(before, after):
    """after - before, per role."""
    return {role: round(after[role] - before.get(role, 0.0), 3) for role in after}


def master_rss(conf_dir):
    """Memory (MB) of the salt-master processes of `conf_dir`: the sum of their
    proportional set sizes (PSS), so that pages the forked workers share with
    the parent count once, not once per process."""
    total = 0
    for proc, _ in _master_processes(conf_dir):
        try:
            rollup = (proc / "smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return round(total / 1024, 1)


class PeakMemory:
    """Samples master_rss every `interval` s in a thread while in its `with` block."""

    def __init__(self, conf_dir, interval=0.25):
        self.conf_dir = conf_dir
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while True:
            self.peak = max(self.peak, master_rss(self.conf_dir))
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

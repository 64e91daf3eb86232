"""CPU time of the master's processes, read from /proc, grouped by role."""

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
ROLES = (("reactor", "engines.reactor"), ("drain_engine", "saltcd_drains"),
         ("webhook_engine", "saltcd_webhook"))


def _role(cmdline):
    for role, marker in ROLES:
        if marker in cmdline:
            return role
    return "other"


def master_cpu(conf_dir):
    """{role: CPU seconds so far} over salt-master processes of the config `conf_dir`,
    plus "master" for their sum. Exited processes are not counted."""
    totals = {role: 0.0 for role, _ in ROLES}
    totals["other"] = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "salt-master" not in cmdline or conf_dir not in cmdline:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited while we looked
        # utime and stime are fields 14 and 15 of stat; [0] here is field 3.
        totals[_role(cmdline)] += (int(fields[11]) + int(fields[12])) / TICK
    totals["master"] = sum(totals.values())
    return totals


def delta(before, after):
    """after - before, per role."""
    return {role: round(after[role] - before.get(role, 0.0), 3) for role in after}

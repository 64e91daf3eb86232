"""Which process runs a rollout, told apart from a later process that got its pid.

A rollout's deploy data is served to minions only while the process that runs
it lives (saltcd.rollout.deploy_pillar): a drain killed mid-batch leaves its record
`running` until the next drain of that app/env marks it interrupted, and its
entries must not outlive it meanwhile. The pid with its start time (clock
ticks since boot, /proc/<pid>/stat field 22) names one process even after
the pid is reused. Both live on the master that runs the drain.
"""

import logging
import os

log = logging.getLogger(__name__)


def stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name (the first is the
    state, field 3), or None when pid is gone."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except (OSError, ValueError):
        return None
    # The command name, in parentheses, may itself hold ") ".
    return stat.rsplit(")", 1)[1].split()


def start_time(pid):
    """When pid started (clock ticks since boot), or None when it is gone."""
    fields = stat_fields(pid)
    return fields[19] if fields else None


def current():
    """This process: {"pid", "started"} ("started" None where /proc cannot be read:
    then no minion is served this process's deploy data, and the log says why)."""
    pid = os.getpid()
    started = start_time(pid)
    if started is None:
        log.error("saltcd: cannot read /proc/%s/stat: the deploy pillar serves a rollout's data only "
                  "while its process is known to run, so this rollout's batches will get none "
                  "(saltcd needs Linux /proc, readable by the master's user)", pid)
    return {"pid": pid, "started": started}


def tie(pillar, rollout_id, owner):
    """`pillar` (Deployment.pillar) tied to the rollout and the process (`owner`,
    from current()) that publish it: the deploy pillar serves nothing else. With a
    shared store the owner holds a lock token, which the minions get as `fence`
    (they refuse a step with a lower one than they have seen: saltcd.ha)."""
    pillar["saltcd"].update(rollout=rollout_id, holder=owner)
    if (owner or {}).get("token") is not None:
        pillar["saltcd"]["fence"] = owner["token"]
    return pillar


def alive(holder):
    """True if the process `holder` (from current()) still runs (a zombie does not)."""
    if not isinstance(holder, dict) or holder.get("started") is None:
        return False
    fields = stat_fields(holder.get("pid"))
    return bool(fields) and fields[0] != "Z" and fields[19] == holder["started"]

"""The fleet a rollout acts on, through Salt's LocalClient on the master."""

import logging

import functools
import os

import salt.client
import salt.exceptions
import salt.utils.minions

from saltcd.rollout import Interrupted

log = logging.getLogger(__name__)

DEPLOY_SLS = "saltcd.deploy"
MINION_FUNCTIONS = ("saltcd.container", "saltcd.probe", "saltcd.status")
QUICK_TIMEOUT = 15


def answered(ret):
    """False for the placeholder LocalClient puts in for a minion that did not return."""
    if not isinstance(ret, dict) or ret.get("out") == "no_return":
        return False
    return not (isinstance(ret.get("ret"), str) and ret["ret"].startswith("Minion did not return"))


def state_outcome(ret):
    """Reduce one minion's `state.apply` return to {"ok", "changed", "comment"}, or None
    when the minion did not answer."""
    if not answered(ret):
        return None
    data = ret.get("ret")
    if not isinstance(data, dict):
        # A list or a string is a render or compile error: the state never ran.
        text = data if isinstance(data, str) else "; ".join(map(str, data or []))
        return {"ok": False, "changed": False, "comment": f"state error: {text}"[:500]}
    failed = [s for s in data.values() if isinstance(s, dict) and s.get("result") is False]
    changed = any(
        isinstance(s, dict) and s.get("changes") and "docker_container" in key
        for key, s in data.items()
    )
    if failed:
        comment = "; ".join(str(s.get("comment", ""))[:300] for s in failed)
    else:
        health = [s for key, s in data.items() if "saltcd_health" in key]
        comment = str(health[0].get("comment", "")) if health else "applied"
    ok = not failed and ret.get("retcode", 0) == 0
    return {"ok": ok, "changed": changed, "comment": comment}


def _master_pid(opts):
    """The pid of the running master, from its pidfile (None if it is not running)."""
    try:
        with open(opts["pidfile"], encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
    except (KeyError, OSError, ValueError):
        return None
    return pid


def _master_required(method):
    """A publish that fails because the master is gone interrupts the rollout."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        fleet = args[0]
        fleet.check_master()
        try:
            result = method(*args, **kwargs)
        except salt.exceptions.SaltClientError as exc:
            raise Interrupted(f"the master did not answer: {exc}") from None
        fleet.check_master()  # results gathered while the master died are not to be trusted
        return result

    return wrapper


class SaltFleet:
    """Minions reached through the master: target, sync, inspect, apply."""

    def __init__(self, opts):
        self.opts = opts
        self.local = salt.client.get_local_client(opts["conf_file"])
        self.master_pid = _master_pid(opts)

    def check_master(self):
        """Raise Interrupted if the master that started this rollout is gone.

        A drain runs in its own process; without this it would go on talking to
        a stopped (or restarted) master and record a failure that was not the
        image's fault. Interrupted leaves the request pending for a resume.
        """
        if self.master_pid is not None and _master_pid(self.opts) != self.master_pid:
            raise Interrupted(f"the master (pid {self.master_pid}) stopped during the rollout")

    def targets(self, target, tgt_type):
        """Minions the master knows (accepted keys, cached grains) that match."""
        found = salt.utils.minions.CkMinions(self.opts).check_minions(target, tgt_type)
        return sorted(found["minions"])

    @_master_required
    def prepare(self, minions):
        """Sync saltcd's execution and state modules to minions that lack them.

        Only those: a sync rewrites module files and refreshes the loader, which
        can break a state run of another rollout on that minion at that moment.
        After upgrading saltcd, run `salt '*' saltutil.sync_all` once.
        """
        have = self.local.cmd(minions, "sys.list_functions", ["saltcd"], tgt_type="list",
                              timeout=QUICK_TIMEOUT)
        lacking = [m for m in minions
                   if not isinstance(have.get(m), list) or not set(MINION_FUNCTIONS) <= set(have[m])]
        if lacking:
            self.local.cmd(lacking, ["saltutil.sync_modules", "saltutil.sync_states"], [[], []],
                           tgt_type="list", timeout=QUICK_TIMEOUT)

    @_master_required
    def inspect(self, minions, container):
        """{minion: container info} for minions that answered; absent ones: None."""
        returns = self.local.cmd(
            minions, "saltcd.container", [container], tgt_type="list",
            timeout=QUICK_TIMEOUT, full_return=True,
        )
        out = {}
        for minion in minions:
            ret = returns.get(minion)
            info = ret.get("ret") if isinstance(ret, dict) else None
            out[minion] = info if isinstance(info, dict) and ret.get("retcode", 0) == 0 else None
        return out

    @_master_required
    def status(self, minions, container, health):
        """{minion: container info with a health probe} (None: no answer)."""
        returns = self.local.cmd(
            minions, "saltcd.status", [container, health.port, health.path, health.host],
            tgt_type="list",
            timeout=QUICK_TIMEOUT, full_return=True,
        )
        return {
            m: (returns[m]["ret"] if isinstance(returns.get(m), dict)
                and isinstance(returns[m].get("ret"), dict) else None)
            for m in minions
        }

    @_master_required
    def apply(self, minions, pillar, timeout, test=False):
        """Apply the deploy SLS; {minion: outcome} with None for minions that did not answer."""
        returns = self.local.cmd(
            minions,
            "state.apply",
            [DEPLOY_SLS],
            tgt_type="list",
            timeout=timeout,
            full_return=True,
            kwarg={"pillar": pillar, "queue": True, "test": test},
        )
        return {m: state_outcome(returns.get(m)) for m in minions}

"""The fleet a rollout acts on, through Salt's LocalClient on the master."""

import logging

import functools

import salt.client
import salt.exceptions
import salt.utils.minions

from saltcd.rollout import Interrupted

log = logging.getLogger(__name__)

DEPLOY_SLS = "saltcd.deploy"
QUICK_TIMEOUT = 15


def state_outcome(ret):
    """Reduce one minion's `state.apply` return to {"ok", "changed", "comment"}."""
    data = ret.get("ret") if isinstance(ret, dict) else None
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


def _master_required(method):
    """A publish that fails because the master is gone interrupts the rollout."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except salt.exceptions.SaltClientError as exc:
            raise Interrupted(f"the master did not answer: {exc}") from None

    return wrapper


class SaltFleet:
    """Minions reached through the master: target, sync, inspect, apply."""

    def __init__(self, opts):
        self.opts = opts
        self.local = salt.client.get_local_client(opts["conf_file"])

    def targets(self, target, tgt_type):
        """Minions the master knows (accepted keys, cached grains) that match."""
        found = salt.utils.minions.CkMinions(self.opts).check_minions(target, tgt_type)
        return sorted(found["minions"])

    @_master_required
    def prepare(self, minions):
        """Sync saltcd's execution and state modules to the minions."""
        self.local.cmd(
            minions,
            ["saltutil.sync_modules", "saltutil.sync_states"],
            [[], []],
            tgt_type="list",
            timeout=QUICK_TIMEOUT,
        )

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
        return {m: state_outcome(returns[m]) if m in returns else None for m in minions}

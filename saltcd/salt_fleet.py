"""The fleet a rollout acts on, through Salt's LocalClient on the master."""

import functools
import logging
import os

import salt.client
import salt.exceptions
import salt.utils.minions

from saltcd import deploy_pillar
from saltcd.rollout import Interrupted

log = logging.getLogger(__name__)

DEPLOY_SLS = "saltcd.deploy"
QUICK_TIMEOUT = 15


def answered(ret):
    """False for the placeholder LocalClient puts in for a minion that did not return."""
    if not isinstance(ret, dict) or ret.get("out") == "no_return":
        return False
    return not (isinstance(ret.get("ret"), str) and ret["ret"].startswith("Minion did not return"))


def _lacks_function(ret):
    """True when the minion answered that the function does not exist (not synced yet)."""
    return isinstance(ret, dict) and isinstance(ret.get("ret"), str) and "is not available" in ret["ret"]


def _dict_return(ret):
    """The dict a minion returned, or None (no answer, an error string, a failed call)."""
    if answered(ret) and isinstance(ret.get("ret"), dict) and ret.get("retcode", 0) == 0:
        return ret["ret"]
    return None


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
    """Minions reached through the master: target, inspect (syncing saltcd's modules
    where missing), status, apply."""

    def __init__(self, opts):
        self.opts = opts
        self._local = None
        self.master_pid = _master_pid(opts)

    @property
    def local(self):
        """The LocalClient, made on first use: accepting a push never needs one."""
        if self._local is None:
            self._local = salt.client.get_local_client(self.opts["conf_file"])
        return self._local

    def close(self):
        """Release the LocalClient's event bus connection, if one was made."""
        if self._local is not None:
            self._local.destroy()
            self._local = None

    def check_master(self):
        """Raise Interrupted if the master that started this rollout is gone.

        A drain run by `salt-run` (deploy.rollout, approve, ...) is a process of
        its own; without this it would go on talking to a stopped (or
        restarted) master and record a failure that was not the image's fault.
        (The engine's drains die with the master.) Interrupted leaves the
        request pending for a resume.
        """
        if self.master_pid is not None and _master_pid(self.opts) != self.master_pid:
            raise Interrupted(f"the master (pid {self.master_pid}) stopped during the rollout")

    def targets(self, target, tgt_type):
        """Minions the master knows (accepted keys, cached grains) that match."""
        found = salt.utils.minions.CkMinions(self.opts).check_minions(target, tgt_type)
        return sorted(found["minions"])

    def _ask(self, minions, fun, args):
        returns = self.local.cmd(minions, fun, args, tgt_type="list", timeout=QUICK_TIMEOUT,
                                 full_return=True)
        return {m: returns.get(m) for m in minions}

    def _query(self, minions, fun, args):
        """{minion: the dict `fun` returned, or None when it did not answer}.

        Minions that lack saltcd's modules get them synced and are asked once
        more. Only those: a sync rewrites module files and refreshes the loader,
        which can break another rollout's state run on that minion. After
        upgrading saltcd, run `salt '*' saltutil.sync_all` once.
        """
        returns = self._ask(minions, fun, args)
        lacking = [m for m, ret in returns.items() if _lacks_function(ret)]
        if lacking:
            self.local.cmd(lacking, ["saltutil.sync_modules", "saltutil.sync_states"], [[], []],
                           tgt_type="list", timeout=QUICK_TIMEOUT)
            returns.update(self._ask(lacking, fun, args))
        return {m: _dict_return(ret) for m, ret in returns.items()}

    @_master_required
    def inspect(self, minions, container):
        """{minion: container info} for minions that answered; absent ones: None."""
        return self._query(minions, "saltcd.container", [container])

    @_master_required
    def status(self, minions, container, health):
        """{minion: container info with a health probe} (None: no answer)."""
        return self._query(minions, "saltcd.status", [container, health.port, health.path, health.host])

    @_master_required
    def apply(self, minions, pillar, timeout, test=False):
        """Apply the deploy SLS; {minion: outcome} with None for minions that did not answer.

        `pillar` (Deployment.pillar) is not published: its deploy data reaches
        each minion of the batch through the `saltcd` ext_pillar, for the
        length of the batch; the job carries only the selector (see
        saltcd.deploy_pillar).
        """
        data, override = deploy_pillar.split(pillar)
        entries = deploy_pillar.DeployPillar(deploy_pillar.cache_for(self.opts))
        entries.publish(minions, data)
        try:
            returns = self.local.cmd(
                minions,
                "state.apply",
                [DEPLOY_SLS],
                tgt_type="list",
                timeout=timeout,
                full_return=True,
                kwarg={"pillar": override, "queue": True, "test": test},
            )
        finally:
            entries.withdraw(minions, data)
        return {m: state_outcome(returns.get(m)) for m in minions}

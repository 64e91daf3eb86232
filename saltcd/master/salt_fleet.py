"""The fleet a rollout acts on, through Salt's LocalClient on the master."""

import functools
import logging
import os
import time

import salt.client
import salt.exceptions
import salt.utils.minions

from saltcd.master import salt_cache
from saltcd.rollout import Interrupted, deploy_pillar

log = logging.getLogger(__name__)

DEPLOY_SLS = "saltcd.deploy"
PULL_SLS = "saltcd.pull"
HOOK_SLS = "saltcd.hook"
# An app with its own state (apps.<app>.state): that SLS, then saltcd's health gate.
GATE_SLS = "saltcd.gate"
QUICK_TIMEOUT = 15
# Seconds to wait for minions to answer `saltutil.term_job` at a batch's deadline.
STOP_TIMEOUT = 5
POLL = 0.05


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
        # stop-first replaces with docker_container, start-first with saltcd_release
        isinstance(s, dict) and s.get("changes") and ("docker_container" in key or "saltcd_release" in key)
        for key, s in data.items()
    )
    if failed:
        comment = "; ".join(str(s.get("comment", ""))[:300] for s in failed)
    else:
        health = [s for key, s in data.items() if "saltcd_health" in key]
        comment = str(health[0].get("comment", "")) if health else "applied"
    ok = not failed and ret.get("retcode", 0) == 0
    return {"ok": ok, "changed": changed, "comment": comment}


def _job_selector(job):
    """The `saltcd` selector of a running job's pillar override ({} for other jobs)."""
    for arg in job.get("arg") or [] if isinstance(job, dict) else []:
        if isinstance(arg, dict) and isinstance(arg.get("pillar"), dict):
            selector = arg["pillar"].get("saltcd")
            return selector if isinstance(selector, dict) else {}
    return {}


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

    def puller(self, pillar):
        """A SaltPuller for one rollout's pulls ahead (saltcd.rollout.prepull); make it in
        the thread that uses it."""
        return SaltPuller(self.opts, pillar)

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

        Minions that lack saltcd's modules (or the utils they call: "... is
        not available") get them synced and are asked once more. Only those: a
        sync rewrites module files and refreshes the loader, which can break
        another rollout's state run on that minion. After
        upgrading saltcd, run `salt '*' saltutil.sync_all` once.
        """
        returns = self._ask(minions, fun, args)
        lacking = [m for m, ret in returns.items() if _lacks_function(ret)]
        if lacking:
            # One job: the utils first, which the modules and states call (__utils__).
            self.local.cmd(lacking, ["saltutil.sync_utils", "saltutil.sync_modules", "saltutil.sync_states"],
                           [[], [], []], tgt_type="list", timeout=QUICK_TIMEOUT)
            returns.update(self._ask(lacking, fun, args))
        return {m: _dict_return(ret) for m, ret in returns.items()}

    def hook(self, minion, pillar, kind, timeout):
        """Run release hook `kind` (before, after) on `minion`: a one-off container of
        the pillar's image (saltcd.hook), given up on `timeout` s past its own
        limit. {"ok", "comment"}; None when the minion did not answer."""
        return self.apply([minion], pillar, timeout + 60, limit=timeout + 60, sls=HOOK_SLS,
                          selector={"hook": kind})[minion]

    @_master_required
    def inspect(self, minions, containers):
        """{minion: {container: info}} for minions that answered; absent ones: None."""
        return self._query(minions, "saltcd.containers", [list(containers)])

    @_master_required
    def status(self, minions, checks):
        """{minion: {container: info with a health probe}} (None: no answer), for
        `checks`, a list of (container, Health)."""
        probes = [{"name": container, "check": health.check, "port": health.port, "path": health.path,
                   "host": health.host, "command": health.command} for container, health in checks]
        return self._query(minions, "saltcd.statuses", [probes])

    @_master_required
    def apply(self, minions, pillar, timeout, test=False, limit=None, published=None, sls=None,
              selector=None):
        """Apply the deploy SLS (the app's own state and the gate, if it has one;
        or `sls`, with `selector` added to the job's selector); {minion: outcome}
        with None for minions that did not answer.

        `timeout` is Salt's: how long a minion may stay silent before it counts
        as not answering (it is asked with `saltutil.find_job` meanwhile).
        `limit` is the batch's wall-clock deadline (Deployment.batch_deadline):
        a state run still going then is stopped on its minion
        (`saltutil.term_job`: SIGTERM to the job and its children, so a pull
        is abandoned and the state stops before touching the container) and
        counts as failed, `timed_out`.

        `published`, if given, is called once, right after the publish and
        before the returns are gathered, also when nothing went out (so that
        what the caller hangs on it is never skipped); it may use this fleet (the first batch asks the
        other minions what they run: rollout.Rollout._ask_the_rest). Returns
        that come meanwhile wait on the event bus: the job's tag is subscribed.

        `pillar` (Deployment.pillar) is not published: its deploy data reaches
        each minion of the batch through the `saltcd` ext_pillar, for the
        length of the batch; the job carries only the selector (see
        saltcd.rollout.deploy_pillar).
        """
        data, override = deploy_pillar.split(pillar)
        override["saltcd"].update(selector or {})
        sls = sls or (GATE_SLS if data.get("state") else DEPLOY_SLS)
        entries = deploy_pillar.DeployPillar(salt_cache.cache_for(self.opts))
        entries.publish(minions, data)
        try:
            jid, returns, overdue = self._run_until(
                minions, "state.apply", [sls], {"pillar": override, "queue": True, "test": test},
                timeout, limit, published)
            stopped = self._stop_job(jid, overdue) if overdue else {}
        finally:
            entries.withdraw(minions, data)
        out = {m: state_outcome(returns.get(m)) for m in minions}
        for minion, how in stopped.items():
            out[minion] = {"ok": False, "changed": False, "timed_out": True,
                           "comment": f"batch_timeout of {limit:g} s exceeded: {how}"}
        return out

    @_master_required
    def stop_stale(self, minions, app, env, token):
        """Stop the saltcd state runs of app/env on `minions` that carry a lower lock
        token than `token`: a dead master's step in flight (several masters,
        saltcd.ha). Its minion would otherwise finish it and then wait on the dead
        master for Salt's request timeouts (a minute, tried again) to return it,
        and every state run queued behind it (the new master's) waits as long.
        {minion: [jids stopped]}."""
        running = self.local.cmd(minions, "saltutil.running", [], tgt_type="list", timeout=QUICK_TIMEOUT)
        stale = {}
        for minion, jobs in running.items():
            for job in jobs if isinstance(jobs, list) else []:
                selector = _job_selector(job)
                fence = selector.get("fence")
                if (selector.get("app"), selector.get("env")) == (app, env) and isinstance(fence, int) \
                        and fence < token:
                    stale.setdefault(minion, []).append(job.get("jid"))
        for minion, jids in stale.items():
            log.warning("saltcd: %s/%s: stopping %s on %s: begun under an older lock token than %s",
                        app, env, ", ".join(jids), minion, token)
            for jid in jids:
                self.local.cmd([minion], "saltutil.term_job", [jid], tgt_type="list", timeout=STOP_TIMEOUT)
        return stale

    def _run_until(self, minions, fun, arg, kwarg, timeout, limit, published=None):
        """Publish `fun` and gather returns like LocalClient.cmd, but for at most
        `limit` seconds. Returns (jid, {minion: full return}, [minions whose
        return had not come at the limit]); with no limit, the last list is empty
        and silent minions are simply absent from the returns."""
        ends = None if limit is None else time.monotonic() + limit
        local = self.local
        was_listening = local.event.cpub
        try:
            # listen=True: subscribed before the publish, so no quick return is missed.
            pub = local.run_job(minions, fun, arg, tgt_type="list", timeout=timeout, kwarg=kwarg,
                                listen=True)
            if published is not None:
                published()
            if not pub:
                return None, {}, []
            returns = {}
            gather = local.get_iter_returns(pub["jid"], set(pub["minions"]), timeout=timeout,
                                            tgt=minions, tgt_type="list", block=False)
            try:
                for item in gather:
                    for minion, ret in (item or {}).items():
                        if minion in minions:
                            returns[minion] = ret
                    if ends is not None and time.monotonic() >= ends:
                        break
                    if not item:
                        time.sleep(POLL)
                else:
                    return pub["jid"], returns, []
            finally:
                gather.close()
        finally:
            if not was_listening:
                local.event.close_pub()
        return pub["jid"], returns, [m for m in minions if m not in returns]

    def _stop_job(self, jid, minions):
        """`saltutil.term_job` on minions still running `jid` at the deadline:
        {minion: what happened} for those that answered (the others stay out:
        they count as not answering)."""
        log.warning("saltcd: job %s still running on %s at the batch deadline: stopping it",
                    jid, ", ".join(minions))
        answers = self.local.cmd(minions, "saltutil.term_job", [jid], tgt_type="list",
                                 timeout=STOP_TIMEOUT, full_return=True)
        stopped = {}
        for minion in minions:
            ret = answers.get(minion)
            if not answered(ret):
                continue
            said = ret.get("ret")
            stopped[minion] = ("state run stopped on the minion"
                               if isinstance(said, str) and said.startswith("Signal")
                               else "the state run had ended on the minion but its return never came")
        return stopped


class SaltPuller:
    """Pulls of the pinned image started without waiting (saltcd.rollout.prepull's puller).

    It has a LocalClient of its own: it runs in the pulling thread, beside the
    rollout's client, and a LocalClient is not safe to share between threads.
    Each minion gets its deploy data in pillar (as for a batch) and a
    `state.apply saltcd.pull` job of its own. Returns are read from the
    master's job cache (`master_job_cache`, local_cache by default), not the
    event bus: a subscription made in a second thread of the drain process
    missed returns, and polling files is thread-agnostic. With `job_cache:
    False` no return is seen: the pulls then time out (reported as such) and
    the batches pull by themselves, as without pulling ahead.
    """

    POLL = 0.2  # seconds between looks at the job cache

    def __init__(self, opts, pillar):
        self.opts = opts
        self.data, self.override = deploy_pillar.split(pillar)
        self.entries = deploy_pillar.DeployPillar(salt_cache.cache_for(opts))
        self.local = salt.client.get_local_client(opts["conf_file"])

    def publish(self, minion):
        """Serve `minion` its deploy data and start its pull; return the job id."""
        self.entries.publish([minion], self.data)
        try:
            pub = self.local.run_job([minion], "state.apply", [PULL_SLS], tgt_type="list",
                                     kwarg={"pillar": self.override, "queue": True})
        except salt.exceptions.SaltClientError:
            self.entries.withdraw([minion], self.data)
            raise
        if not pub or not pub.get("jid") or minion not in pub.get("minions", [minion]):
            self.entries.withdraw([minion], self.data)
            raise RuntimeError("the master did not publish the pull")
        return pub["jid"]

    def _returned(self, jid, minion):
        """The minion's return of job `jid` from the job cache ({"return", "retcode"}), or None."""
        found = self.local.returners[f"{self.opts.get('master_job_cache', 'local_cache')}.get_jid"](jid)
        ret = (found or {}).get(minion)
        return ret if isinstance(ret, dict) and "return" in ret else None

    def returns(self, jobs, wait):
        """[(jid, minion, {"ok", "changed", "comment"})] of the pulls of `jobs`
        ({jid: minion}) that ended within `wait` s."""
        ends = time.monotonic() + wait
        while True:
            out = []
            for jid, minion in jobs.items():
                ret = self._returned(jid, minion)
                if ret is not None:
                    out.append((jid, minion, state_outcome(
                        {"ret": ret["return"], "retcode": ret.get("retcode", 0)})))
            left = ends - time.monotonic()
            if out or left <= 0:
                return out
            time.sleep(min(self.POLL, left))

    def withdraw(self, minions):
        self.entries.withdraw(minions, self.data)

    def close(self):
        self.local.destroy()

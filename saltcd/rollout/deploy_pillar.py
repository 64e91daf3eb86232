"""Deploy data to the minions through pillar, not through the published job.

A job's arguments are published to every minion's ZeroMQ subscription (Salt
filters by target only with `zmq_filtering`) and kept in the job cache. Pillar
is compiled per minion on the master and sent encrypted to that minion alone.
So, per batch, the drain writes what each minion of the batch must run into
the store (bank `saltcd/pillar/<minion>`, key = app), the `saltcd` ext_pillar
(`_pillar/saltcd.py`) serves a minion exactly its own keys under pillar
`saltcd_deploy`, and the job carries only a selector (app, env, digest: nothing
secret). The entry is withdrawn after the batch: a state run still queued on
the minion when saltcd has given up on it then fails instead of deploying late.
The pulls ahead of the batches (saltcd.rollout.prepull) serve a minion its entry in
the same way from the start of its pull until the pull returns or its batch
takes the entry over, and withdraw it when the rollout ends.

An entry cannot outlive its rollout: it names the rollout and the process
running it (saltcd.rollout.holder), and is served only while that rollout is
recorded as running and that process lives. A drain killed mid-batch cannot
withdraw what it published; its entries stop being served at once, and are
removed when the next drain marks the rollout interrupted (withdraw_rollout).

App environment values may be `sdb://profile/key` (resolved on the master when
the pillar is built, strictly: an unresolved URI is an error, never a value)
or come from the minion's own pillar under `saltcd_environment:<app>`.
"""

from saltcd import store
from saltcd.rollout import holder

BANK = "saltcd/pillar"
PILLAR_KEY = "saltcd_deploy"
ENV_PILLAR_KEY = "saltcd_environment"
SELECTOR_KEYS = ("app", "env", "digest")
# With a shared store the selector also carries the lock token (saltcd.rollout.holder.tie).
FENCE_KEYS = ("fence",)
# What ties an entry to its rollout: checked on the master, never sent to the minion.
OWNER_KEYS = ("rollout", "holder")


class UnresolvedSecret(ValueError):
    """An environment value's sdb:// URI did not resolve (the message names it, not a value)."""


def split(pillar):
    """(the data for the store, the job's pillar override) from Deployment.pillar().

    The override keeps the non-secret selector under `saltcd` (map.jinja finds
    the app's entry with it) and `docker.update_mine`; it also makes the minion
    compile a fresh pillar for the run, which is what brings the entry in.
    """
    data = dict(pillar["saltcd"])
    override = {key: value for key, value in pillar.items() if key != "saltcd"}
    override["saltcd"] = {key: data[key] for key in SELECTOR_KEYS + FENCE_KEYS if key in data}
    return data, override


def _bank(minion):
    return f"{BANK}/{minion}"


class DeployPillar:
    """The per-minion entries on Salt's cache API (the master's cache driver)."""

    def __init__(self, cache):
        self.cache = cache

    def publish(self, minions, data):
        """Let `minions` receive `data` (one app's entry) in their pillar."""
        for minion in minions:
            self.cache.store(_bank(minion), data["app"], data)

    def withdraw(self, minions, data):
        """Take the entry back, unless another rollout has replaced it since."""
        for minion in minions:
            current = self.cache.fetch(_bank(minion), data["app"])
            # The same digest under another lock token is another master's (a takeover).
            if current and all(current.get(k) == data.get(k) for k in SELECTOR_KEYS + FENCE_KEYS):
                self.cache.flush(_bank(minion), data["app"])

    def withdraw_rollout(self, minions, app, rollout_id):
        """Take back every entry of `app` that rollout `rollout_id` published (an
        interrupted rollout's, which its own process can no longer withdraw)."""
        for minion in minions:
            current = self.cache.fetch(_bank(minion), app)
            if current and current.get("rollout") == rollout_id:
                self.cache.flush(_bank(minion), app)

    def entries(self, minion):
        """{app: entry} published for `minion` by a rollout that still runs
        (empty for a minion not in a batch)."""
        bank = _bank(minion)
        records = store.Store(self.cache)
        out = {}
        for app in self.cache.list(bank):
            entry = self.cache.fetch(bank, app)
            if entry and records.is_running(app, entry.get("env"), entry.get("rollout")) \
                    and self._alive(entry.get("holder")):
                out[app] = entry
        return out

    def _alive(self, owner):
        """Does the publisher of an entry still run it? With a shared store, while its
        lock is held at its token (the process may be on another master); else
        while its process lives on this master."""
        if isinstance(owner, dict) and owner.get("token") is not None and hasattr(self.cache, "holds"):
            return self.cache.holds(owner.get("lock"), owner["token"])
        return holder.alive(owner)


def resolved_environment(app, environment, pillar, resolve):
    """The container environment: sdb:// values looked up by `resolve` (which
    returns None or raises for a URI that does not resolve), then the minion's
    pillar `saltcd_environment:<app>` over it."""
    out = {}
    for name, value in environment.items():
        if isinstance(value, str) and value.startswith("sdb://"):
            try:
                looked_up = resolve(value)
            except Exception as exc:  # noqa: BLE001 - any driver error means "did not resolve"
                raise UnresolvedSecret(f"{app}: environment {name}: {value} did not resolve: "
                                       f"{type(exc).__name__}") from None
            if looked_up is None or looked_up == value or not isinstance(looked_up, (str, int, float)):
                raise UnresolvedSecret(f"{app}: environment {name}: {value} did not resolve")
            value = looked_up
        out[name] = str(value)
    extra = ((pillar or {}).get(ENV_PILLAR_KEY) or {}).get(app) or {}
    if isinstance(extra, dict):
        out.update({str(name): str(value) for name, value in extra.items()})
    return out


def build(entries, pillar, resolve, minion=None):
    """The ext_pillar's answer for `minion`: {"saltcd_deploy": {app: entry}}, or {}.

    Each entry is cut to this minion: the roles it runs (a role with
    `minions` runs only there), the app's containers it no longer runs
    (`gone`) and what it ran before (`previous_image`)."""
    if not entries:
        return {}
    # The app's and each role's environment share most values: each sdb:// URI
    # is looked up once per compile, not once per role (the cache is per call,
    # so a rotated secret is seen at the next compile).
    looked_up = {}

    def resolve_once(uri):
        if uri not in looked_up:
            looked_up[uri] = resolve(uri)
        return looked_up[uri]

    deploy = {}
    for app, entry in entries.items():
        entry = {key: value for key, value in entry.items() if key not in OWNER_KEYS}
        previous = entry.pop("previous_images", None) or {}
        roles = [{**{key: value for key, value in role.items() if key != "minions"},
                  "environment": resolved_environment(app, role.get("environment") or {}, pillar, resolve_once)}
                 for role in entry.get("roles") or [] if minion in role.get("minions", [minion])]
        mine = {role["container"] for role in roles}
        deploy[app] = {**entry, "roles": roles, "previous_image": previous.get(minion),
                       "gone": [name for name in entry.get("app_containers") or [] if name not in mine],
                       "environment": resolved_environment(app, entry.get("environment") or {}, pillar,
                                                           resolve_once)}
    return {PILLAR_KEY: deploy}

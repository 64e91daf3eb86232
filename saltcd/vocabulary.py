"""saltcd's words on the bus and in the records, each written once: event tags,
the steps a rollout announces, the statuses a rollout ends in (and which are
good), and the names the configuration accepts for behaviour that lives
higher up (failure policies, hook kinds, registry event formats). Everything
may import this; it imports nothing of saltcd's."""

# -- event tags ------------------------------------------------------------

# What a CI job fires (`salt-call event.send saltcd/push ...`); the reactor
# (reactor/ci_push.sls) catches it.
PUSH_TAG = "saltcd/push"
# What the saltcd_webhook engine fires for a registry's or hub's pushes.
INGRESS_TAG_PREFIX = "saltcd/ingress/"
# The path a webhook is posted to below the engine's (or netapi's) root:
# `/saltcd/<source>`.
SOURCE_PREFIX = "saltcd/"
# Where the saltcd_webhook engine listens unless its configuration says
# otherwise: registries post to http://<address>:<port>/saltcd/<source>.
WEBHOOK_ADDRESS = "127.0.0.1"
WEBHOOK_PORT = 8787
# Salt's own webhook engine and netapi fire these; saltcd reads its sources there too.
SALT_HOOK_PREFIXES = ("salt/engines/hook/", "salt/netapi/hook/")
# Every step of a rollout: `saltcd/deploy/<app>/<env>/<step>`.
DEPLOY_TAG_PREFIX = "saltcd/deploy/"
# A push saltcd refused (who, why; never the payload's secret).
REJECTED_TAG = "saltcd/rejected"
# The cue to run an app/env's queue: `saltcd/drain/<app>/<env>` (the saltcd_drains engine).
QUEUE_TAG_PREFIX = "saltcd/drain/"


def deploy_tag(app, env, step=""):
    """`saltcd/deploy/<app>/<env>/<step>`; without a step, the prefix of all of them."""
    return f"{DEPLOY_TAG_PREFIX}{app}/{env}/{step}"


def queue_tag(app, env):
    """`saltcd/drain/<app>/<env>`: run the queue of one app/env."""
    return f"{QUEUE_TAG_PREFIX}{app}/{env}"


# -- how a rollout ends ----------------------------------------------------

# Statuses a rollout (or a plan) ends in. Good ones exit 0 from `salt-run deploy.*`.
GOOD = ("succeeded", "unchanged", "planned", "converged")
BAD = ("failed", "rolled_back", "paused", "interrupted")

# -- names the configuration accepts ---------------------------------------

# What a spent failure budget does (`on_failure`); saltcd.rollout maps each to its code.
FAILURE_POLICIES = ("rollback", "pause", "continue")
# Release hooks, in the order a rollout runs them.
HOOK_KINDS = ("before", "after")
# Registry event payloads the webhook reads (`sources.<name>.format`).
REGISTRY_EVENT_FORMATS = ("distribution", "dockerhub")

"""The master configuration saltcd needs, as data (written to master.d/saltcd.conf).

One function builds it so the sandbox, the tests and an operator's install
(`python -m saltcd.master_config > /etc/salt/master.d/saltcd.conf`) use the same
wiring. It points at the state tree and reactor SLS of the installed package;
the runner, engine and minion modules need no paths: Salt finds them through
saltcd's `salt.loader` entry point (saltcd.master.extension).
"""

import argparse
import os
import sys

import yaml

from saltcd import vocabulary
from saltcd.master import extension

REGISTRY_HOOK_PATH = "saltcd/registry"  # the source named `registry` in saltcd:sources
INGRESS_TAGS = "saltcd/ingress/*"  # what the saltcd_webhook engine fires
NETAPI_TAGS = "salt/netapi/hook/saltcd/*"  # what salt-api fires for /hook/saltcd/<source>


def wiring(root=None, webhook_address=vocabulary.WEBHOOK_ADDRESS, webhook_port=vocabulary.WEBHOOK_PORT,
           resume_every=30, salt_api=False):
    """file_roots, reactor, the webhook and drain engines, the deploy ext_pillar, and the
    resume schedule.

    The SLS come from the installed package, or from the checkout at `root`.
    `salt_api`: also react to salt-api's `/hook/saltcd/<source>` (off unless asked:
    a minion can fire that tag too, and salt-api puts the raw headers on the bus).
    """
    tree = extension.folder("salt", root)
    reactor = extension.folder("reactor", root)
    registry_push = os.path.join(reactor, "registry_push.sls")
    # Every source under /saltcd/<name>: saltcd_webhook checked the request at
    # the door and signs its event with the master-local key; salt-api's hooks
    # are checked by the runner (header digests).
    hooks = [{INGRESS_TAGS: [registry_push]}]
    if salt_api:
        hooks.append({NETAPI_TAGS: [registry_push]})
    return {
        # saltcd.deploy, orch.deploy (salt/orch links to orch/), and _modules and
        # _states for minions that lack saltcd (the runner syncs them).
        "file_roots": {"base": [tree]},
        "reactor": [*hooks, {vocabulary.PUSH_TAG: [os.path.join(reactor, "ci_push.sls")]}],
        "engines": [
            # saltcd's webhook (not Salt's `webhook`, which puts headers and
            # bodies of any size, authenticated or not, on the bus).
            {"saltcd_webhook": {"address": webhook_address, "port": webhook_port}},
            # Runs the rollouts that accept and resume ask for (saltcd/drain/<app>/<env>).
            {"saltcd_drains": {}},
            # Posts rollout notifications to saltcd:notify's endpoints (idle without any).
            {"saltcd_notify": {}},
        ],
        # The deploy data of a batch reaches its minions as pillar (per minion,
        # encrypted), not in the published job: saltcd.rollout.deploy_pillar.
        "ext_pillar": [{"saltcd": {}}],
        # Requests are durable; this restarts their rollouts after a master
        # restart (or a lost drain event). Not at start: minions need a few
        # seconds to reconnect first.
        "schedule": {
            "saltcd-resume": {
                "function": "deploy.resume",
                "seconds": resume_every,
                "run_on_start": False,
                "return_job": False,
            }
        },
    }


def main(argv=None):
    """Print master.d/saltcd.conf for the installed saltcd."""
    parser = argparse.ArgumentParser(
        description="Print the master.d file that wires saltcd into a Salt master "
                    "(python -m saltcd.master_config > /etc/salt/master.d/saltcd.conf).")
    parser.add_argument("--root", default=None,
                        help="serve the SLS of this saltcd checkout instead of the installed package")
    parser.add_argument("--webhook-address", default="127.0.0.1")
    parser.add_argument("--webhook-port", type=int, default=vocabulary.WEBHOOK_PORT)
    parser.add_argument("--salt-api", action="store_true",
                        help="also deploy on salt-api's /hook/saltcd/<source> (not needed with saltcd_webhook)")
    args = parser.parse_args(argv)
    conf = wiring(args.root, args.webhook_address, args.webhook_port, salt_api=args.salt_api)
    sys.stdout.write(yaml.safe_dump(conf, default_flow_style=False, sort_keys=False))


if __name__ == "__main__":
    main()

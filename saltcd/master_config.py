"""The master configuration saltcd needs, as data (written to master.d/saltcd.conf).

One function builds it so the sandbox, the tests and an operator's install
(`python -m saltcd.master_config --root /srv/saltcd`) use the same wiring.
"""

import argparse
import os
import sys

import yaml

REGISTRY_HOOK_PATH = "saltcd/registry"  # the source named `registry` in saltcd:sources
CI_TAG = "saltcd/push"


def wiring(root, webhook_address="127.0.0.1", webhook_port=8787, resume_every=30):
    """file_roots, runner and engine dirs, reactor, the webhook and drain engines,
    and the resume schedule."""
    root = os.path.abspath(root)
    return {
        # salt/orch and salt/_runners are symlinks to the top-level folders, so
        # `orch.deploy` and `salt://_runners` resolve without serving the rest.
        "file_roots": {"base": [os.path.join(root, "salt")]},
        "runner_dirs": [os.path.join(root, "_runners")],
        "engines_dirs": [os.path.join(root, "_engines")],
        "reactor": [
            # Every source under /saltcd/<name>; the runner authenticates each one.
            {"salt/engines/hook/saltcd/*": [os.path.join(root, "reactor", "registry_push.sls")]},
            {"salt/netapi/hook/saltcd/*": [os.path.join(root, "reactor", "registry_push.sls")]},
            {CI_TAG: [os.path.join(root, "reactor", "ci_push.sls")]},
        ],
        "engines": [
            {"webhook": {"address": webhook_address, "port": webhook_port}},
            # Runs the rollouts that accept and resume ask for (saltcd/drain/<app>/<env>).
            {"saltcd_drains": {}},
        ],
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
    """Print master.d/saltcd.conf for a checkout at --root."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=os.getcwd(), help="where the saltcd repository lives")
    parser.add_argument("--webhook-address", default="127.0.0.1")
    parser.add_argument("--webhook-port", type=int, default=8787)
    args = parser.parse_args(argv)
    sys.stdout.write(yaml.safe_dump(wiring(args.root, args.webhook_address, args.webhook_port),
                                    default_flow_style=False, sort_keys=False))


if __name__ == "__main__":
    main()

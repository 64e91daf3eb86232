"""Print the `saltcd/push` event payload for a CI job, signed when a secret is given.

    salt-call event.send saltcd/push "$(python -m saltcd.ci_push \\
        --repository registry.example.com/team/web --tag qa --secret-file /etc/saltcd/push.secret)"

The secret is read from a file so it never appears in a process list.
"""

import argparse
import json
import sys

from saltcd import ingress_auth


def payload(repository, tag, digest=None, secret=None):
    """The event data: repository, tag, optional digest, and the signature if `secret`."""
    data = {"repository": repository, "tag": tag}
    if digest:
        data["digest"] = digest
    if secret:
        data["signature"] = ingress_auth.push_signature(secret, repository, tag, digest)
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--digest")
    parser.add_argument("--secret-file", help="file holding saltcd:push_secret")
    args = parser.parse_args(argv)
    secret = None
    if args.secret_file:
        with open(args.secret_file, encoding="utf-8") as handle:
            secret = handle.read().strip()
    sys.stdout.write(json.dumps(payload(args.repository, args.tag, args.digest, secret)) + "\n")


if __name__ == "__main__":
    main()

"""Print a signed `saltcd/push` event payload for a CI job.

    salt-call event.send saltcd/push "$(python -m saltcd.ci_push \\
        --repository registry.example.com/team/web --tag qa --secret-file /etc/saltcd/push.secret)"

The payload carries the send time and a fresh nonce, signed together with
repository, tag and digest (HMAC-SHA256 with `saltcd:push_secret`): the master
accepts it once, within `saltcd:push_window` seconds. The secret is read from a
file so it never appears in a process list or a shell history.
"""

import argparse
import json
import secrets
import sys
import time

from saltcd.ingress import ingress_auth


def payload(repository, tag, secret, digest=None, timestamp=None, nonce=None):
    """The event data: repository, tag, optional digest, timestamp, nonce and signature."""
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    nonce = secrets.token_urlsafe(18) if nonce is None else nonce
    data = {"repository": repository, "tag": tag, "timestamp": timestamp, "nonce": nonce}
    if digest:
        data["digest"] = digest
    data["signature"] = ingress_auth.push_signature(secret, repository, tag, digest, timestamp, nonce)
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--digest")
    parser.add_argument("--secret-file", required=True, help="file holding saltcd:push_secret")
    args = parser.parse_args(argv)
    with open(args.secret_file, encoding="utf-8") as handle:
        secret = handle.read().strip()
    if not secret:
        parser.error(f"{args.secret_file} is empty")
    sys.stdout.write(json.dumps(payload(args.repository, args.tag, secret, args.digest)) + "\n")


if __name__ == "__main__":
    main()

"""The etcd v3 calls saltcd makes, to whichever member answers.

etcd3gw speaks etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/*`)
to one member; a cluster is several. Each call goes to the member that answered
last and, if that one does not answer (down, or cut off from the quorum, which
etcd reports as an error), to the next: one dead member of three changes
nothing for saltcd. Keys and values travel base64-encoded; int64 fields come
back as strings and are left out when zero (the gateway's JSON mapping).
"""

import base64
import logging
import threading
import urllib.parse

import requests
from etcd3gw import exceptions
from etcd3gw.client import Etcd3Client

from saltcd.errors import SaltcdError

log = logging.getLogger(__name__)

# What makes a call go to the next member: no connection, no answer in time, or
# an answer that says the member cannot serve (no leader, no quorum).
UNAVAILABLE = (exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError,
               exceptions.InternalServerError, exceptions.ApiVersionDiscoveryFailedError)
API_PATH = "/v3/"  # etcd 3.4 serves both /v3beta and /v3: no discovery round trip


class StoreUnavailable(SaltcdError):
    """No etcd member answered (the message names the members tried, never a value)."""


def encode(text):
    """etcd's bytes as the gateway carries them."""
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode("ascii")


def decode(field):
    return base64.b64decode(field).decode() if field else ""


def prefix_end(prefix):
    """The range end that makes `prefix` a prefix query (the next key after every key under it)."""
    raw = prefix.encode()
    return encode(raw[:-1] + bytes([raw[-1] + 1]))


def _client(endpoint, conf):
    url = urllib.parse.urlsplit(endpoint)
    session = requests.Session()
    # The environment's REQUESTS_CA_BUNDLE must not override ca_file, nor a proxy
    # variable route a loopback member elsewhere.
    session.trust_env = False
    if conf.ca_file:
        session.verify = conf.ca_file
    if conf.client_cert:
        session.cert = (conf.client_cert, conf.client_key)
    return Etcd3Client(host=url.hostname, port=url.port, protocol=url.scheme,
                       timeout=conf.timeout, api_path=API_PATH, session=session)


class EtcdCluster:
    """One etcd cluster, reached through any of its members."""

    def __init__(self, conf):
        self.endpoints = tuple(conf.endpoints)
        self._clients = [_client(endpoint, conf) for endpoint in self.endpoints]
        self._first = 0  # the member that answered last
        self._guard = threading.Lock()

    def call(self, path, body):
        """POST `body` to `/v3/<path>` of the first member that can answer; its JSON reply."""
        with self._guard:
            first = self._first
        tried = []
        for offset in range(len(self._clients)):
            index = (first + offset) % len(self._clients)
            client = self._clients[index]
            try:
                reply = client.post(client.get_url(path), json=body)
            except UNAVAILABLE as exc:
                tried.append(f"{self.endpoints[index]} ({type(exc).__name__})")
                continue
            if index != first:
                log.info("saltcd: etcd member %s answers (passed over: %s)", self.endpoints[index],
                         ", ".join(tried))
                with self._guard:
                    self._first = index
            return reply
        raise StoreUnavailable(f"no etcd member answered: {', '.join(tried)}")

    # keys
    def range(self, key, prefix=False, keys_only=False):
        """[(key, value, create_revision)] of `key`, or of every key under it (`prefix`)."""
        body = {"key": encode(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        if keys_only:
            body["keys_only"] = True
        reply = self.call("kv/range", body)
        return [(decode(kv["key"]), decode(kv.get("value")), int(kv.get("create_revision", 0)))
                for kv in reply.get("kvs", [])]

    def txn(self, compare, success, failure=()):
        """(succeeded, reply) of one transaction: `success` ops if every `compare` holds."""
        reply = self.call("kv/txn", {"compare": list(compare), "success": list(success),
                                     "failure": list(failure)})
        return bool(reply.get("succeeded")), reply

    # leases
    def grant(self, ttl):
        """A new lease of `ttl` seconds: its id."""
        return int(self.call("lease/grant", {"TTL": int(ttl)})["ID"])

    def keepalive(self, lease):
        """Renew `lease`: the seconds it has left, 0 if it had expired."""
        return int(self.call("lease/keepalive", {"ID": lease}).get("result", {}).get("TTL", 0))

    def revoke(self, lease):
        """End `lease` now (its keys go with it); an expired lease is no error."""
        try:
            self.call("lease/revoke", {"ID": lease})
        except exceptions.Etcd3Exception as exc:  # 404-ish: already gone
            log.debug("saltcd: revoking lease %s: %s", lease, exc)


def put_op(key, value, lease=None):
    """A txn's put of `value` (text) at `key`, under `lease` if given."""
    op = {"key": encode(key), "value": encode(value)}
    if lease:
        op["lease"] = lease
    return {"request_put": op}


def delete_op(key, prefix=False):
    op = {"key": encode(key)}
    if prefix:
        op["range_end"] = prefix_end(key)
    return {"request_delete_range": op}


def absent(key):
    """A txn compare: `key` does not exist."""
    return {"key": encode(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}


def created_at(key, revision):
    """A txn compare: `key` exists and was created at `revision` (a lock still held by its taker)."""
    return {"key": encode(key), "target": "CREATE", "result": "EQUAL", "create_revision": int(revision)}

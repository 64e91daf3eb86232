"""Asking a registry which digest a tag points to right now.

Events are hints; the registry is the truth. Deploying the digest resolved here
(`repo@sha256:...`) means every minion runs exactly the same image even if the
tag moves during the rollout.

The distribution protocol (the 401 challenge, Basic credentials, Bearer tokens
from the registry's token realm, manifest HEAD/GET) is python-dxf's `dxf.DXF`.
This module adds only what python-dxf lacks, each piece commented where it is:
reusing a token until its `expires_in` runs out, a client certificate, the
system CA store, refusing to hand credentials to a host the registry redirected
to, and error messages that name the registry and never carry a secret.
"""

import collections
import hashlib
import logging
import ssl
import threading
import time
import urllib.parse

import dxf
import dxf.exceptions
import requests
import www_authenticate

from saltcd.config import references

log = logging.getLogger(__name__)

# Docker Hub's canonical name is docker.io (see references); its API is here.
DOCKER_HUB_API = "registry-1.docker.io"
# The token spec: "When omitted, this defaults to 60 seconds."
DEFAULT_TOKEN_LIFETIME = 60
# Clients (each with its session and token) kept for reuse across rollouts.
# Reconcile asks about every repository on every pass, in the same order: the
# cache must hold them all, or each pass evicts what the next one needs first
# (a new session, and a new token, for every repository).
CACHE_SIZE = 256

# Tests move this clock to let a token run out without waiting for it.
_clock = time.monotonic


class RegistryError(RuntimeError):
    """The registry could not tell the digest: unreachable, refused, or no such tag."""


class TagNotFound(RegistryError):
    """The registry answered, and the tag does not exist."""


def api_host(registry):
    """The host that serves the registry API of a canonical registry name."""
    return DOCKER_HUB_API if registry == references.DOCKER_HUB else registry


def system_ca():
    """The system CA store as OpenSSL finds it (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured).

    requests would otherwise verify against certifi's bundle, which knows nothing
    of the CAs an administrator installed with update-ca-certificates.
    """
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.capath or True


def resolve_digest(repository, tag, settings):
    """Return the digest `repository:tag` has at its registry, or raise RegistryError.

    `tag` may also be a digest (`sha256:...`): then the answer is that digest
    if the registry has a manifest of it under `repository` (TagNotFound if
    not), which is how a digest signed by CI is confirmed before it deploys.
    `repository` is a references.Repository, `settings` a config.Registry (scheme,
    credentials, timeout, ca_file, client_cert/client_key). Clients are cached per
    (registry, path, settings), so a Bearer token is reused while it is valid.
    """
    try:
        if str(tag).startswith("sha256:"):
            references.parse_digest(tag)
        else:
            references.parse_tag(tag)
    except references.ReferenceError as exc:
        raise RegistryError(f"not asking registry {repository.registry}: {exc}") from None
    return _client(repository, settings).resolve(tag)


def forget_clients():
    """Drop every cached client and its token (e.g. after the configuration changed)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


_clients = collections.OrderedDict()
_clients_lock = threading.Lock()


def _client(repository, settings):
    """The cached client for this repository and settings (least recently used goes first)."""
    key = (repository.registry, repository.path, settings)
    with _clients_lock:
        client = _clients.pop(key, None) or _Client(repository, settings)
        _clients[key] = client
        evicted = []
        while len(_clients) > CACHE_SIZE:
            evicted.append(_clients.popitem(last=False)[1])
    for old in evicted:
        old.close()
    return client


def _netloc(url):
    return urllib.parse.urlsplit(url).netloc


class _SessionDXF(dxf.DXF):
    """dxf.DXF that sends every request through one long-lived Session of ours."""

    def __init__(self, *args, session, **kwargs):
        super().__init__(*args, **kwargs)
        # Private attribute, on purpose: python-dxf sends each request through
        # `self._sessions[0]`, which is the `requests` module itself unless a
        # `with` context makes it a fresh Session we could not configure. Putting
        # our Session first gives python-dxf's requests our client certificate
        # (python-dxf has no option for one) and keeps connections open between
        # rollouts, without holding a `with` open for the master's lifetime.
        self._sessions.insert(0, session)


class _Client:
    """One repository at one registry: a python-dxf client, its session, its token's lifetime."""

    def __init__(self, repository, settings):
        self.repository = repository
        self.settings = settings
        self.host = api_host(repository.registry)
        self.name = repository.registry if self.host == repository.registry \
            else f"{repository.registry} ({self.host})"
        self.lock = threading.Lock()
        self.session = requests.Session()
        if settings.client_cert:
            self.session.cert = (settings.client_cert, settings.client_key)
        # python-dxf reads the token answer and drops it, `expires_in` included;
        # this hook keeps the responses seen while we authenticate (see _auth).
        self.session.hooks["response"].append(self._observe)
        self._seen = None
        self.last_host = None
        self.realm = None
        self.expires_at = None
        self.dxf = self._new_dxf()

    def _new_dxf(self):
        return _SessionDXF(
            self.host,
            self.repository.path,
            session=self.session,
            auth=self._auth,
            insecure=self.settings.scheme == "http",
            tlsverify=self.settings.ca_file or system_ca(),
            timeout=self.settings.timeout,
        )

    def close(self):
        """Close the session's connections, unless a rollout is using it right now."""
        if self.lock.acquire(blocking=False):
            try:
                self.session.close()
            finally:
                self.lock.release()

    def _observe(self, response, *args, **kwargs):
        self.last_host = _netloc(response.url)
        if self._seen is not None:
            self._seen.append(response)

    def resolve(self, tag):
        """The digest of `tag`: the HEAD's Docker-Content-Digest, else sha256 of the GET body."""
        if self.settings.scheme == "http" and self.settings.username:
            raise RegistryError(
                f"registry {self.name} is configured with scheme http and credentials: "
                "refusing to send a password in clear text (use https)")
        with self.lock:
            if self.expires_at is not None and _clock() >= self.expires_at:
                # python-dxf would send an expired token forever (or until a 401):
                # a fresh DXF starts without one, so the registry's challenge makes
                # it fetch a new one. Same session, same connections.
                log.debug("token for %s/%s expired, fetching a new one", self.name,
                          self.repository.path)
                self.dxf = self._new_dxf()
                self.expires_at = None
            try:
                return self._digest(tag)
            except RegistryError:
                raise
            except dxf.exceptions.DXFUnauthorizedError:
                raise self._refused() from None
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else "?"
                if status == 404:
                    at = "@" if tag.startswith("sha256:") else ":"
                    raise TagNotFound(
                        f"{self.repository}{at}{tag} does not exist at registry {self.name}") from None
                raise RegistryError(f"registry {self.name} answered HTTP {status}") from None
            except requests.RequestException as exc:
                raise self._failed(exc) from None
            except OSError as exc:
                # requests raises plain OSError for an unreadable ca_file or client key.
                raise RegistryError(f"registry {self.name}: {exc}") from None

    def _digest(self, tag):
        digest, _ = self.dxf.head_manifest_and_response(tag)
        if digest is None:
            # Some registries (and proxies) leave the header out of HEAD answers:
            # the digest is the sha256 of the manifest exactly as served.
            _, response = self.dxf.get_manifest_and_response(tag)
            return "sha256:" + hashlib.sha256(response.content).hexdigest()
        try:
            return references.parse_digest(digest)
        except references.ReferenceError:
            raise RegistryError(
                f"registry {self.name} sent no usable Docker-Content-Digest") from None

    def _auth(self, client, response):
        """python-dxf's `auth` callback: answer the registry's 401 challenge."""
        if _netloc(response.url) != self.host:
            # The 401 comes from a host the registry redirected us to. python-dxf
            # would answer its challenge with our credentials (Basic, or to a token
            # realm of that host's choosing): they belong to the registry only.
            raise self._refused()
        challenge = response.headers.get("WWW-Authenticate")
        if not challenge:
            raise RegistryError(f"registry {self.name} answered HTTP 401 without a challenge")
        bearer = www_authenticate.parse(challenge).get("bearer")
        self.realm = _netloc(bearer["realm"]) if bearer and bearer.get("realm") else None
        self._seen = []
        started = _clock()
        try:
            token = client.authenticate(self.settings.username, self.settings.password,
                                        actions=["pull"], response=response)
        except dxf.exceptions.DXFAuthInsecureError:
            raise RegistryError(
                f"registry {self.name} asks for credentials over plain http: "
                "not sent (use https)") from None
        except dxf.exceptions.DXFUnauthorizedError:
            whose = "the credentials" if self.settings.username else "anonymous access"
            raise RegistryError(f"registry {self.name}: token realm {self.realm} refused "
                                f"{whose}: HTTP 401 Unauthorized") from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise RegistryError(
                f"registry {self.name}: token realm {self.realm} answered HTTP {status}") from None
        except (ValueError, KeyError, TypeError):
            # requests' JSONDecodeError is a ValueError; no `token` is a KeyError.
            raise RegistryError(
                f"registry {self.name}: token realm {self.realm} sent no token") from None
        finally:
            seen, self._seen = self._seen, None
        if token is None:
            self.expires_at = None  # Basic: the credentials stay valid
            return
        self.expires_at = started + _lifetime(seen[-1] if seen else None)
        log.debug("token for %s/%s from %s, valid %.0f s", self.name, self.repository.path,
                  self.realm, self.expires_at - started)

    def _refused(self):
        """The error for a final 401 (python-dxf raises it without the response)."""
        if self.last_host and self.last_host != self.host:
            # requests already dropped the Authorization header on the way there.
            return RegistryError(
                f"registry {self.name} redirected to {self.last_host}, which asks for "
                "credentials: not sent (they are only for the registry itself)")
        if self.settings.username:
            return RegistryError(
                f"registry {self.name} refused the credentials: HTTP 401 Unauthorized")
        return RegistryError(
            f"registry {self.name} refused anonymous access: HTTP 401 Unauthorized "
            f"(configure a username and password for {self.repository.registry})")

    def _failed(self, exc):
        """A RegistryError for a connection that failed, naming the host it failed with."""
        host = _netloc(exc.request.url) if getattr(exc, "request", None) is not None else self.host
        if host == self.host:
            where = f"registry {self.name}"
        elif host == self.realm:
            where = f"registry {self.name}: token realm {host}"
        else:
            where = f"registry {self.name}: redirect target {host}"
        if isinstance(exc, requests.exceptions.SSLError):
            return RegistryError(f"{where}: TLS failed: {_innermost(exc)}")
        if isinstance(exc, requests.Timeout):
            return RegistryError(f"{where} unreachable: no answer within "
                                 f"{self.settings.timeout} s")
        if isinstance(exc, requests.ConnectionError):
            return RegistryError(f"{where} unreachable: {_innermost(exc)}")
        return RegistryError(f"{where}: request failed ({type(exc).__name__})")


def _lifetime(answer):
    """Seconds the token in a token-realm answer stays valid (`expires_in`, else 60)."""
    try:
        expires_in = answer.json().get("expires_in")
    except (AttributeError, ValueError):
        expires_in = None
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
        return expires_in
    return DEFAULT_TOKEN_LIFETIME


def _innermost(exc):
    """The root cause of a requests/urllib3 error, as short text (hosts and ports only)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None)
        if isinstance(inner, BaseException):
            exc = inner
        elif exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            break
    return str(exc)[:200]

"""The registry client against real HTTP(S) servers on loopback.

A fake registry answers the distribution API (`/v2/<path>/manifests/<tag>`, HEAD and
GET, with or without Docker-Content-Digest, 401 with a Basic or Bearer challenge);
a fake token realm issues tokens and counts how often it is asked.
"""

import base64
import hashlib
import itertools
import json
import socket
import ssl
import threading
import urllib.parse
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from saltcd import config
from saltcd.config import references
from saltcd.queue import registry_client
from sandbox import tls

PATH = "saltcd/web"
# Odd spacing on purpose: the digest is of these exact bytes, not of re-serialised JSON.
MANIFEST = b'{"schemaVersion": 2,  "mediaType": "application/vnd.oci.image.manifest.v1+json"}\n'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
USER, PASSWORD = "ci", "pa55-word-not-for-logs"


# --- servers ---------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self, method):
        status, headers, body = self.server.app(method, self.path, self.headers)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self._serve("GET")

    def do_HEAD(self):
        self._serve("HEAD")

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that fails the TLS handshake is part of some tests


class Served:
    """`app(method, path, headers) -> (status, headers, body)` served in a thread."""

    def __init__(self, app, address="127.0.0.1", cert=None, client_ca=None):
        self.server = _Server((address, 0), _Handler)
        self.server.app = app
        self.scheme = "http"
        if cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*cert)
            if client_ca:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(client_ca)
            # The handshake happens in the request's thread, not in the accept loop.
            self.server.socket = context.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False)
            self.scheme = "https"
        self.host = f"{address}:{self.server.server_address[1]}"
        self.url = f"{self.scheme}://{self.host}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _basic(headers):
    value = headers.get("Authorization") or ""
    if not value.startswith("Basic "):
        return None
    return tuple(base64.b64decode(value[6:]).decode().split(":", 1))


class TokenRealm:
    """Issues tokens to `users` (or to anyone when users is None); counts requests."""

    def __init__(self, users=None, field="token", expires_in=None):
        self.users = users
        self.field = field
        self.expires_in = expires_in
        self.requests = []  # (query dict, Authorization header)
        self.valid = set()
        self.counter = itertools.count(1)

    def __call__(self, method, path, headers):
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        self.requests.append((query, headers.get("Authorization")))
        if self.users is not None and _basic(headers) not in self.users.items():
            return 401, {"WWW-Authenticate": 'Basic realm="token"'}, b'{"errors": []}'
        token = f"tok-{next(self.counter)}-{query.get('scope')}"
        self.valid.add(token)
        answer = {self.field: token}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()


class Registry:
    """A distribution registry with one manifest, and optionally auth or a redirect."""

    def __init__(self, manifests=None, digest_header=True, basic=None, realm=None,
                 realm_url=None, redirect_to=None):
        self.manifests = {(PATH, "dev"): MANIFEST} if manifests is None else manifests
        self.digest_header = digest_header
        self.basic = basic  # (user, password)
        self.realm = realm  # a TokenRealm whose tokens are accepted
        self.realm_url = realm_url
        self.redirect_to = redirect_to
        self.requests = []  # (method, path, Authorization header)

    def _authorised(self, headers):
        value = headers.get("Authorization") or ""
        if self.basic:
            return _basic(headers) == self.basic
        if self.realm:
            return value.startswith("Bearer ") and value[7:] in self.realm.valid
        return True

    def _challenge(self, path):
        if self.basic:
            return 'Basic realm="registry"'
        return (f'Bearer realm="{self.realm_url}/token",service="test-registry",'
                f'scope="repository:{path}:pull"')

    def __call__(self, method, path, headers):
        self.requests.append((method, path, headers.get("Authorization")))
        if path == "/v2/":
            return 200, {}, b"{}"
        repo, _, tag = path[len("/v2/"):].rpartition("/manifests/")
        if not self._authorised(headers):
            return 401, {"WWW-Authenticate": self._challenge(repo)}, b'{"errors": []}'
        if self.redirect_to:
            return 307, {"Location": self.redirect_to + path}, b""
        body = self.manifests.get((repo, tag))
        if body is None:
            return 404, {"Content-Type": "application/json"}, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}'
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        if self.digest_header:
            headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(body).hexdigest()
        return 200, headers, body


# --- fixtures --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = tls.make_ca(directory / "ca")
    other = tls.make_ca(directory / "other", name="some other CA")
    hosts = ["127.0.0.1", "127.0.0.2", "localhost"]
    return {
        "ca": str(ca.cert_path),
        "server": tls.issue(ca, directory, "server", hosts=hosts),
        "client": tuple(str(p) for p in tls.issue(ca, directory, "client", hosts=["saltcd"])),
        "stranger": tls.issue(other, directory, "stranger", hosts=hosts),
    }


@pytest.fixture
def serve(pki):
    servers = []

    def start(app, address="127.0.0.1", tls_cert="server", client_ca=None):
        server = Served(app, address, cert=pki[tls_cert] if tls_cert else None, client_ca=client_ca)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def fresh_clients():
    registry_client.forget_clients()
    yield
    registry_client.forget_clients()


@pytest.fixture
def clock(monkeypatch):
    """The client's clock, moved by hand: `clock.now += 61`."""
    class Clock:
        now = 1000.0
    monkeypatch.setattr(registry_client, "_clock", lambda: Clock.now)
    return Clock


def settings(pki, **overrides):
    values = {"scheme": "https", "ca_file": pki["ca"], "timeout": 5, **overrides}
    return config.Registry(**values)


def repo(server, path=PATH):
    return references.Repository(server.host, path)


def bearer_setup(serve, realm):
    token_server = serve(realm)
    registry = Registry(realm=realm, realm_url=token_server.url)
    return registry, serve(registry)


def assert_no_secret(error, *secrets):
    for secret in secrets:
        assert secret not in str(error)


# --- anonymous, digests, errors -----------------------------------------------------------

def test_anonymous_https_digest_from_the_head_answer(serve, pki):
    registry = Registry()
    server = serve(registry)
    assert registry_client.resolve_digest(repo(server), "dev", settings(pki)) == DIGEST
    assert [(m, p) for m, p, _ in registry.requests] == [("HEAD", f"/v2/{PATH}/manifests/dev")]


def test_without_docker_content_digest_the_digest_is_the_sha256_of_the_body(serve, pki):
    registry = Registry(digest_header=False)
    server = serve(registry)
    assert registry_client.resolve_digest(repo(server), "dev", settings(pki)) == DIGEST
    assert [m for m, _, _ in registry.requests] == ["HEAD", "GET"]


def test_unknown_tag_is_tag_not_found_naming_the_registry(serve, pki):
    server = serve(Registry())
    with pytest.raises(registry_client.TagNotFound, match=f"does not exist at registry {server.host}"):
        registry_client.resolve_digest(repo(server), "nope", settings(pki))


def test_plain_http_anonymous_registry(serve, pki):
    server = serve(Registry(), tls_cert=None)
    assert registry_client.resolve_digest(repo(server), "dev", settings(pki, scheme="http")) == DIGEST


def test_credentials_for_a_plain_http_registry_are_refused_before_any_request(serve, pki):
    registry = Registry(basic=(USER, PASSWORD))
    server = serve(registry, tls_cert=None)
    with pytest.raises(registry_client.RegistryError, match="clear text") as caught:
        registry_client.resolve_digest(
            repo(server), "dev", settings(pki, scheme="http", username=USER, password=PASSWORD))
    assert server.host in str(caught.value)
    assert registry.requests == []


def test_unreachable_registry(pki):
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        with pytest.raises(registry_client.RegistryError, match=f"registry {host} unreachable"):
            registry_client.resolve_digest(references.Repository(host, PATH), "dev", settings(pki))


def test_invalid_tag_is_a_registry_error_without_a_request(pki):
    with pytest.raises(registry_client.RegistryError, match="invalid tag"):
        registry_client.resolve_digest(references.Repository("127.0.0.1:1", PATH), "a;b", settings(pki))


# --- Basic ---------------------------------------------------------------------------------

def test_basic_credentials(serve, pki):
    registry = Registry(basic=(USER, PASSWORD))
    server = serve(registry)
    found = registry_client.resolve_digest(
        repo(server), "dev", settings(pki, username=USER, password=PASSWORD))
    assert found == DIGEST
    assert registry.requests[-1][2].startswith("Basic ")


def test_wrong_basic_credentials_name_the_registry_not_the_password(serve, pki):
    server = serve(Registry(basic=(USER, PASSWORD)))
    with pytest.raises(registry_client.RegistryError) as caught:
        registry_client.resolve_digest(
            repo(server), "dev", settings(pki, username=USER, password="wrong-secret"))
    assert str(caught.value) == f"registry {server.host} refused the credentials: HTTP 401 Unauthorized"
    assert_no_secret(caught.value, "wrong-secret")


def test_missing_credentials_are_named_as_such(serve, pki):
    server = serve(Registry(basic=(USER, PASSWORD)))
    with pytest.raises(registry_client.RegistryError, match="refused anonymous access"):
        registry_client.resolve_digest(repo(server), "dev", settings(pki))


# --- Bearer --------------------------------------------------------------------------------

def test_bearer_with_credentials_and_a_token_field(serve, pki):
    realm = TokenRealm(users={USER: PASSWORD}, field="token", expires_in=300)
    registry, server = bearer_setup(serve, realm)
    found = registry_client.resolve_digest(
        repo(server), "dev", settings(pki, username=USER, password=PASSWORD))
    assert found == DIGEST
    (query, authorization), = realm.requests
    assert query == {"service": "test-registry", "scope": f"repository:{PATH}:pull"}
    assert _basic({"Authorization": authorization}) == (USER, PASSWORD)
    assert registry.requests[-1][2].startswith("Bearer tok-1-")


def test_bearer_anonymous_with_an_access_token_field(serve, pki):
    realm = TokenRealm(field="access_token")
    registry, server = bearer_setup(serve, realm)
    assert registry_client.resolve_digest(repo(server), "dev", settings(pki)) == DIGEST
    (_, authorization), = realm.requests
    assert authorization is None


def test_token_is_reused_until_expires_in_runs_out(serve, pki, clock):
    realm = TokenRealm(expires_in=300)
    _, server = bearer_setup(serve, realm)
    for _ in range(3):  # three rollouts in five minutes
        assert registry_client.resolve_digest(repo(server), "dev", settings(pki)) == DIGEST
        clock.now += 90
    assert len(realm.requests) == 1
    clock.now += 31  # 301 s after the token was fetched
    assert registry_client.resolve_digest(repo(server), "dev", settings(pki)) == DIGEST
    assert len(realm.requests) == 2


def test_without_expires_in_a_token_lives_60_seconds(serve, pki, clock):
    realm = TokenRealm(expires_in=None)
    _, server = bearer_setup(serve, realm)
    registry_client.resolve_digest(repo(server), "dev", settings(pki))
    clock.now += 59
    registry_client.resolve_digest(repo(server), "dev", settings(pki))
    assert len(realm.requests) == 1
    clock.now += 2
    registry_client.resolve_digest(repo(server), "dev", settings(pki))
    assert len(realm.requests) == 2


def test_a_token_the_registry_rejects_is_renewed_once_and_the_request_retried(serve, pki):
    realm = TokenRealm(expires_in=3600)
    registry, server = bearer_setup(serve, realm)
    registry_client.resolve_digest(repo(server), "dev", settings(pki))
    realm.valid.clear()  # revoked (or expired early)
    registry.requests.clear()
    assert registry_client.resolve_digest(repo(server), "dev", settings(pki)) == DIGEST
    assert len(realm.requests) == 2
    assert [(m, a.split("-")[1]) for m, _, a in registry.requests] == [("HEAD", "1"), ("HEAD", "2")]


def test_a_registry_that_keeps_rejecting_tokens_is_an_error_after_one_renewal(serve, pki):
    realm = TokenRealm()
    token_server = serve(realm)

    class Rejecting(Registry):
        def _authorised(self, headers):
            return False

    server = serve(Rejecting(realm=realm, realm_url=token_server.url))
    with pytest.raises(registry_client.RegistryError, match="refused anonymous access: HTTP 401"):
        registry_client.resolve_digest(repo(server), "dev", settings(pki))
    assert len(realm.requests) == 1


def test_token_realm_refusing_the_credentials_is_named(serve, pki):
    realm = TokenRealm(users={USER: PASSWORD})
    token_server = serve(realm)
    server = serve(Registry(realm=realm, realm_url=token_server.url))
    with pytest.raises(registry_client.RegistryError) as caught:
        registry_client.resolve_digest(
            repo(server), "dev", settings(pki, username=USER, password="wrong-secret"))
    assert str(caught.value) == (f"registry {server.host}: token realm {token_server.host} "
                                 "refused the credentials: HTTP 401 Unauthorized")
    assert_no_secret(caught.value, "wrong-secret")


def test_no_error_message_carries_a_token(serve, pki):
    realm = TokenRealm()
    registry, server = bearer_setup(serve, realm)
    registry_client.resolve_digest(repo(server), "dev", settings(pki))
    with pytest.raises(registry_client.TagNotFound) as caught:
        registry_client.resolve_digest(repo(server), "gone", settings(pki))
    assert_no_secret(caught.value, *realm.valid, "tok-")


# --- the client cache ----------------------------------------------------------------------

def test_concurrent_rollouts_share_one_token(serve, pki):
    realm = TokenRealm(expires_in=300)
    _, server = bearer_setup(serve, realm)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        registry_client.resolve_digest(repo(server), "dev", settings(pki)))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == [DIGEST] * 6
    assert len(realm.requests) == 1


def test_the_client_cache_is_bounded(serve, pki, monkeypatch):
    monkeypatch.setattr(registry_client, "CACHE_SIZE", 2)
    realm = TokenRealm(expires_in=300)
    token_server = serve(realm)
    paths = ["saltcd/a", "saltcd/b", "saltcd/c"]
    server = serve(Registry(manifests={(p, "dev"): MANIFEST for p in paths},
                            realm=realm, realm_url=token_server.url))
    for path in paths + paths[-2:]:  # the last two are still cached
        registry_client.resolve_digest(repo(server, path), "dev", settings(pki))
    assert len(realm.requests) == 3
    registry_client.resolve_digest(repo(server, paths[0]), "dev", settings(pki))  # evicted
    assert len(realm.requests) == 4


def test_other_settings_are_another_client(serve, pki):
    realm = TokenRealm(users={USER: PASSWORD, "other": "other-pw"}, expires_in=300)
    _, server = bearer_setup(serve, realm)
    registry_client.resolve_digest(repo(server), "dev", settings(pki, username=USER, password=PASSWORD))
    registry_client.resolve_digest(repo(server), "dev", settings(pki, username="other", password="other-pw"))
    assert [_basic({"Authorization": a})[0] for _, a in realm.requests] == [USER, "other"]


# --- TLS -----------------------------------------------------------------------------------

def test_a_certificate_from_another_ca_fails_verification(serve, pki):
    server = serve(Registry(), tls_cert="stranger")
    with pytest.raises(registry_client.RegistryError) as caught:
        registry_client.resolve_digest(repo(server), "dev", settings(pki))
    assert str(caught.value).startswith(f"registry {server.host}: TLS failed: ")
    assert "certificate verify failed" in str(caught.value)


def test_without_ca_file_the_system_store_is_used(serve, pki, monkeypatch):
    server = serve(Registry())
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(registry_client.RegistryError, match="TLS failed"):
        registry_client.resolve_digest(repo(server), "dev", settings(pki, ca_file=None))
    registry_client.forget_clients()
    # OpenSSL's default store is what the system trusts; SSL_CERT_FILE moves it.
    monkeypatch.setenv("SSL_CERT_FILE", pki["ca"])
    assert registry_client.resolve_digest(repo(server), "dev", settings(pki, ca_file=None)) == DIGEST


def test_ca_file_also_verifies_the_token_realm(serve, pki):
    realm = TokenRealm()
    token_server = serve(realm, tls_cert="stranger")
    server = serve(Registry(realm=realm, realm_url=token_server.url))
    with pytest.raises(registry_client.RegistryError) as caught:
        registry_client.resolve_digest(repo(server), "dev", settings(pki))
    assert str(caught.value).startswith(
        f"registry {server.host}: token realm {token_server.host}: TLS failed: ")
    assert realm.requests == []


def test_client_certificate(serve, pki):
    server = serve(Registry(), client_ca=pki["ca"])
    cert, key = pki["client"]
    found = registry_client.resolve_digest(
        repo(server), "dev", settings(pki, client_cert=cert, client_key=key))
    assert found == DIGEST


def test_a_registry_that_wants_a_client_certificate_and_gets_none(serve, pki):
    server = serve(Registry(), client_ca=pki["ca"])
    with pytest.raises(registry_client.RegistryError, match=f"registry {server.host}"):
        registry_client.resolve_digest(repo(server), "dev", settings(pki))


# --- redirects -----------------------------------------------------------------------------

def test_credentials_are_not_sent_to_the_host_a_registry_redirects_to(serve, pki):
    elsewhere = Registry()
    target = serve(elsewhere, address="127.0.0.2")
    server = serve(Registry(basic=(USER, PASSWORD), redirect_to=target.url))
    found = registry_client.resolve_digest(
        repo(server), "dev", settings(pki, username=USER, password=PASSWORD))
    assert found == DIGEST
    assert elsewhere.requests == [("HEAD", f"/v2/{PATH}/manifests/dev", None)]


def test_a_redirect_target_asking_for_credentials_gets_none(serve, pki):
    harvester = TokenRealm()
    harvester_server = serve(harvester, address="127.0.0.2")
    elsewhere = Registry(realm=harvester, realm_url=harvester_server.url)
    target = serve(elsewhere, address="127.0.0.2")
    server = serve(Registry(basic=(USER, PASSWORD), redirect_to=target.url))
    for _ in range(2):  # the second time, the first request already carries the credentials
        with pytest.raises(registry_client.RegistryError, match=f"redirected to {target.host}"):
            registry_client.resolve_digest(
                repo(server), "dev", settings(pki, username=USER, password=PASSWORD))
    assert harvester.requests == []
    assert all(authorization is None for _, _, authorization in elsewhere.requests)


# --- Docker Hub ----------------------------------------------------------------------------

def test_docker_hub_names_the_api_host():
    assert registry_client.api_host("docker.io") == "registry-1.docker.io"
    assert registry_client.api_host("127.0.0.1:5000") == "127.0.0.1:5000"


def test_docker_hub_requests_go_to_registry_1(pki, monkeypatch):
    """Through an HTTPS proxy on loopback, which sees the CONNECT and refuses it."""
    seen = []
    with closing(socket.socket()) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def proxy():
            conn, _ = listener.accept()
            with conn:
                seen.append(conn.recv(4096).split(b"\r\n", 1)[0])
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=proxy, daemon=True)
        thread.start()
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
        hub = references.parse_repository("web")
        assert str(hub) == "docker.io/library/web"
        with pytest.raises(registry_client.RegistryError, match=r"docker\.io \(registry-1\.docker\.io\)"):
            registry_client.resolve_digest(hub, "latest", settings(pki, timeout=3))
        thread.join(5)
    assert [line.split()[:2] for line in seen] == [[b"CONNECT", b"registry-1.docker.io:443"]]

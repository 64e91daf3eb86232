"""A small token issuer for registries with ``auth.token`` (test and sandbox support).

It implements the issuing side of the distribution token spec: the registry
answers 401 with ``WWW-Authenticate: Bearer realm=…,service=…,scope=…``; the
client asks ``GET realm?service=…&scope=repository:<path>:pull,push`` (Basic
credentials, or none); we answer a JWT (RS256) whose ``x5c`` header carries
our signing certificate, which the registry trusts through its
``rootcertbundle``. The token grants only the actions the user may have.

HTTPS with a certificate of the test CA. ``TokenServer`` runs in a thread of
this process (tests); ``TokenServerProcess`` runs it as a daemon of its own
(the sandbox, which outlives the command that started it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sandbox import processes, tls

log = logging.getLogger(__name__)

ACTIONS = ("pull", "push")


class TokenServer:
    """Issues registry tokens for ``users`` ({name: {"password", "actions"}}).

    ``anonymous`` is the list of actions granted without credentials (default:
    none, i.e. anonymous requests get 401).
    """

    def __init__(self, directory, ca: tls.CA, users: dict, service: str = "saltcd-registry",
                 issuer: str = "saltcd-token-server", address: str = "127.0.0.1", port: int = 0,
                 expires_in: int = 300, anonymous: tuple[str, ...] = ()):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca = ca
        self.users = {name: {"password": u["password"], "actions": tuple(u.get("actions", ACTIONS))}
                      for name, u in users.items()}
        self.service = service
        self.issuer = issuer
        self.address = address
        self.port = int(port)
        self.expires_in = int(expires_in)
        self.anonymous = tuple(anonymous)
        # TLS certificate of the endpoint; also the token signing certificate
        # (a registry needs only the certificate, the key stays here). Kept
        # when it exists: a registry may already trust it.
        self.cert_path = self.directory / "token-server.pem"
        self.key_path = self.directory / "token-server-key.pem"
        if not (self.cert_path.exists() and self.key_path.exists()):
            tls.issue(ca, self.directory, "token-server", hosts=[address, "localhost"])
        self._key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def rootcertbundle(self) -> Path:
        """The file a registry's ``auth.token.rootcertbundle`` names."""
        return self.cert_path

    @property
    def realm(self) -> str:
        return f"https://{self.address}:{self.port}/token"

    def registry_auth(self) -> dict:
        """The ``auth.token`` section of a registry config trusting this server."""
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": str(self.rootcertbundle)}}

    # -- bookkeeping -----------------------------------------------------

    @property
    def request_count(self) -> int:
        """Token requests answered so far (any outcome)."""
        with self._lock:
            return len(self._requests)

    def requests(self) -> list[dict]:
        """[{"user", "scope", "status", "agent", "at"}] of the requests so far (no secrets)."""
        with self._lock:
            return list(self._requests)

    def _record(self, request, user, scope, status) -> None:
        entry = {"user": user, "scope": scope, "status": status, "at": time.time(),
                 "agent": request.headers.get("User-Agent", "")}
        with self._lock:
            self._requests.append(entry)

    # -- issuing ---------------------------------------------------------

    def authenticate(self, header: str | None) -> str | None:
        """The user name for a valid Basic header; "" for none; None for bad credentials."""
        if not header:
            return ""
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = self.users.get(name)
        # Compared in constant time; an unknown user compares against a dummy.
        expected = user["password"] if user else secrets.token_hex(16)
        if hmac.compare_digest(password.encode(), expected.encode()) and user:
            return name
        return None

    def grant(self, user: str, scopes: list[str]) -> list[dict]:
        """The ``access`` claim: requested actions the user may have, per repository."""
        allowed = self.users[user]["actions"] if user else self.anonymous
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            wanted = [a for a in parts[2].split(",") if a in allowed]
            if wanted:
                access.append({"type": "repository", "name": parts[1], "actions": wanted})
        return access

    def token(self, user: str, access: list[dict]) -> dict:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "iat": now,
                  # A little leeway for clock reads that differ by a second.
                  "nbf": now - 10, "exp": now + self.expires_in, "jti": secrets.token_hex(16),
                  "access": access}
        signed = jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": self._x5c})
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": signed, "access_token": signed, "expires_in": self.expires_in, "issued_at": issued}

    # -- serving ---------------------------------------------------------

    def start(self) -> None:
        """Listen (HTTPS) and serve in a daemon thread."""
        if self._httpd is not None:
            return
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server._handle(self)

            def log_message(self, fmt, *args):  # quiet: logged our way, without secrets
                log.debug("token server: " + fmt, *args)

        httpd = ThreadingHTTPServer((self.address, self.port), Handler)
        httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="token-server", daemon=True)
        self._thread.start()
        log.info("token server on %s (service %s, tokens for %ss)", self.realm, self.service, self.expires_in)

    def stop(self) -> None:
        """Stop serving. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(request.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ")]
        if url.path != "/token":
            return _answer(request, 404, {"errors": [{"code": "NOT_FOUND"}]})
        if query.get("service", [""])[0] != self.service:
            self._record(request, None, scopes, 400)
            return _answer(request, 400, {"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]})
        user = self.authenticate(request.headers.get("Authorization"))
        if user is None or (user == "" and not self.anonymous):
            self._record(request, None, scopes, 401)
            return _answer(request, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                           {"WWW-Authenticate": f'Basic realm="{self.realm}"'})
        access = self.grant(user, scopes)
        self._record(request, user or None, scopes, 200)
        return _answer(request, 200, self.token(user, access))


def _answer(request: BaseHTTPRequestHandler, status: int, body: dict, headers: dict | None = None) -> None:
    data = json.dumps(body).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        request.send_header(key, value)
    request.end_headers()
    request.wfile.write(data)


class TokenServerError(RuntimeError):
    """The token server process could not be started."""


class TokenServerProcess:
    """A ``TokenServer`` in a process of its own: ``python -m sandbox.token_server CONFIG``.

    The config file (mode 0600: it holds the users' passwords) is written below
    ``directory``; ``stop`` also ends a server that another process started with
    that same config file (``sandbox up`` before ``sandbox down``).
    """

    def __init__(self, directory, ca: tls.CA, users: dict, port: int, **options):
        self.directory = Path(directory).absolute()
        self.server = TokenServer(self.directory, ca, users, port=port, **options)
        self.settings = {"ca_cert": str(ca.cert_path), "ca_key": str(ca.key_path), "users": users,
                         "port": int(port), **options}
        self.config_file = self.directory / "token-server.json"
        self.logfile = self.directory / "token-server.log"
        self._proc: subprocess.Popen | None = None

    def registry_auth(self) -> dict:
        return self.server.registry_auth()

    @property
    def realm(self) -> str:
        return self.server.realm

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 30) -> None:
        """Write the config, start the process, wait until the realm answers (401 without credentials)."""
        self.config_file.touch(mode=0o600, exist_ok=True)
        self.config_file.chmod(0o600)
        self.config_file.write_text(json.dumps(self.settings))
        repo_root = Path(__file__).resolve().parents[1]
        # env(1) execs python in place; PYTHONPATH lets it import `sandbox` from any cwd.
        cmd = ["/usr/bin/env", f"PYTHONPATH={repo_root}", sys.executable, "-m", "sandbox.token_server",
               str(self.config_file)]
        self._proc = processes.start_daemon(cmd, self.logfile)
        try:
            processes.wait_until_up(self._proc, self._answers, f"token server on {self.realm}", timeout,
                                    lambda: processes.tail(self.logfile, 30) or "", TokenServerError,
                                    interval=0.2)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.settings["ca_cert"]))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
        url = f"{self.realm}?service={urllib.parse.quote(self.server.service)}"
        try:
            with opener.open(url, timeout=2):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False

    def stop(self, timeout: float = 10) -> None:
        """Stop our process and any other serving this config file. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            processes.terminate(proc.pid, timeout, "token server", reap=proc.poll)
        self.stop_serving(self.config_file, timeout)

    @staticmethod
    def stop_serving(config_file, timeout: float = 10) -> None:
        """Stop token server processes run with this config file, whoever started them."""
        wanted = ["-m", "sandbox.token_server", str(Path(config_file).absolute())]
        for pid in processes.other_pids():
            argv = processes.argv(pid)
            if argv[-3:] == wanted and argv and Path(argv[0]).name.startswith("python"):
                log.info("stopping token server pid %s (%s)", pid, config_file)
                processes.terminate(pid, timeout, f"token server pid {pid}")


def main(argv=None) -> int:
    """Serve the token server a TokenServerProcess configured, until SIGTERM."""
    argv = sys.argv[1:] if argv is None else argv
    config_file = Path(argv[0])
    settings = json.loads(config_file.read_text())
    ca = tls.CA(Path(settings.pop("ca_cert")), Path(settings.pop("ca_key")))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = TokenServer(config_file.parent, ca, settings.pop("users"), **settings)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server.start()
    try:
        stopping.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

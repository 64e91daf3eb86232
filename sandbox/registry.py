"""A local Docker registry (distribution 2.8) that can notify saltcd of pushes."""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

from sandbox import processes

log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """The registry could not be started."""


class LocalRegistry:
    """``docker-registry serve`` with filesystem storage below ``root``."""

    def __init__(
        self,
        root: Path | str,
        address: str = "127.0.0.1",
        port: int = 5000,
        notify_url: str | None = None,
        notify_headers: dict[str, str] | None = None,
        notify_timeout: str = "2s",
        notify_ignore: dict[str, list[str]] | None = None,
        tls_cert: Path | str | None = None,
        tls_key: Path | str | None = None,
        ca_file: Path | str | None = None,
        htpasswd_users: dict[str, str] | None = None,
        token_auth: dict | None = None,
    ):
        """``tls_cert``/``tls_key``: serve HTTPS (``ca_file`` verifies it in the
        readiness check); ``htpasswd_users`` ({user: password}): Basic auth from
        an htpasswd file with bcrypt hashes; ``token_auth``: the ``auth.token``
        settings (realm, service, issuer, rootcertbundle), e.g.
        ``TokenServer.registry_auth()["token"]``. At most one of the two auths."""
        if htpasswd_users and token_auth:
            raise ValueError("a registry has one auth method: htpasswd or token, not both")
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("TLS needs both a certificate and a key")
        self.root = Path(root).absolute()
        self.address = address
        self.port = int(port)
        self.notify_url = notify_url
        self.notify_headers = dict(notify_headers or {})
        self.notify_timeout = notify_timeout
        # e.g. {"actions": ["pull"], "mediatypes": ["application/octet-stream"]}:
        # events the registry should not POST at all (distribution 2.7+).
        self.notify_ignore = dict(notify_ignore or {})
        self.tls_cert = Path(tls_cert) if tls_cert else None
        self.tls_key = Path(tls_key) if tls_key else None
        self.ca_file = Path(ca_file) if ca_file else None
        self.htpasswd_users = dict(htpasswd_users or {})
        self.token_auth = dict(token_auth or {})
        self.htpasswd_file = self.root / "htpasswd"
        self.config_file = self.root / "config.yml"
        self.logfile = self.root / "registry.log"
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r}, {self.host!r})"

    @property
    def host(self) -> str:
        """``ADDRESS:PORT``, the registry part of image references."""
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the registry's HTTP API."""
        return f"{'https' if self.tls_cert else 'http'}://{self.host}"

    def config(self) -> dict:
        """The registry configuration as a dict (written as JSON, which is YAML)."""
        cfg = {
            "version": 0.1,
            "log": {"level": "info", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "data")},
                "delete": {"enabled": True},
            },
            "http": {
                "addr": self.host,
                # Without a secret the registry makes up one and warns about it.
                "secret": secrets.token_hex(16),
            },
        }
        if self.tls_cert:
            cfg["http"]["tls"] = {"certificate": str(self.tls_cert), "key": str(self.tls_key)}
        if self.htpasswd_users:
            cfg["auth"] = {"htpasswd": {"realm": "saltcd-registry", "path": str(self.htpasswd_file)}}
        elif self.token_auth:
            cfg["auth"] = {"token": {key: str(value) for key, value in self.token_auth.items()}}
        if self.notify_url:
            cfg["notifications"] = {
                "endpoints": [
                    {
                        "name": "saltcd",
                        "url": self.notify_url,
                        # The registry wants a list of values per header.
                        "headers": {k: [v] for k, v in self.notify_headers.items()},
                        "timeout": self.notify_timeout,
                        "threshold": 5,
                        "backoff": "1s",
                    }
                ]
            }
            if self.notify_ignore:
                cfg["notifications"]["endpoints"][0]["ignore"] = self.notify_ignore
        return cfg

    def start(self, timeout: float = 30) -> None:
        """Write the config, start the registry and wait until ``/v2/`` answers 200."""
        if self._proc is not None and self._proc.poll() is None:
            return
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        if self.htpasswd_users:
            self._write_htpasswd()
        self.config_file.write_text(json.dumps(self.config(), indent=2))
        cmd = ["docker-registry", "serve", str(self.config_file)]
        log.info("starting registry on %s: %s", self.host, cmd)
        self._proc = processes.start_daemon(cmd, self.logfile)
        try:
            processes.wait_until_up(self._proc, self._answers, f"registry on {self.host}", timeout,
                                    self.log_tail, RegistryError, interval=0.1)
        except BaseException:
            self.stop()  # a registry that never answered is of no use
            raise

    def _write_htpasswd(self) -> None:
        """``user:bcrypt-hash`` lines (the only hash distribution accepts), mode 0600.

        A low cost: the registry checks the hash on every request, and these
        are throwaway test credentials."""
        lines = [f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                 for user, password in self.htpasswd_users.items()]
        self.htpasswd_file.touch(mode=0o600, exist_ok=True)
        self.htpasswd_file.chmod(0o600)
        self.htpasswd_file.write_text("".join(lines))

    def _opener(self) -> urllib.request.OpenerDirector:
        # Never through a proxy: the registry is on loopback.
        handlers = [urllib.request.ProxyHandler({})]
        if self.tls_cert:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        return urllib.request.build_opener(*handlers)

    def _answers(self) -> bool:
        """``/v2/`` answers: 200, or 401 when the registry wants credentials."""
        try:
            with self._opener().open(f"{self.url}/v2/", timeout=2) as resp:
                return resp.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 401 and (self.htpasswd_users or self.token_auth)
        except (OSError, urllib.error.URLError) as exc:
            log.debug("registry %s not ready: %s", self.host, exc)
            return False

    @property
    def pid(self) -> int | None:
        """PID of the registry this object started, while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop(self, timeout: float = 10) -> None:
        """Terminate the registry, kill it if it does not exit in time. Idempotent.

        Also stops a registry serving this same root that another process
        started (e.g. `sandbox up` before `sandbox down`, or a crashed run).
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            processes.terminate(proc.pid, timeout, f"registry on {self.host}", reap=proc.poll)
        for pid in self._leftover_pids():
            log.info("stopping registry pid %s serving %s", pid, self.config_file)
            processes.terminate(pid, timeout, f"registry pid {pid}")

    def _leftover_pids(self) -> list[int]:
        """``docker-registry serve <our config file>`` processes, whoever started them."""
        def ours(argv: list[str]) -> bool:
            return len(argv) == 3 and Path(argv[0]).name == "docker-registry" and argv[2] == str(self.config_file)

        return [pid for pid in processes.other_pids() if ours(processes.argv(pid))]

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the registry's log (for error messages)."""
        text = processes.tail(self.logfile, lines)
        return "(no registry log)" if text is None else text

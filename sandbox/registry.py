"""A local Docker registry (distribution 2.8) that can notify saltcd of pushes."""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import urllib.error
from pathlib import Path

from sandbox import loopback, processes

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
    ):
        self.root = Path(root).absolute()
        self.address = address
        self.port = int(port)
        self.notify_url = notify_url
        self.notify_headers = dict(notify_headers or {})
        self.notify_timeout = notify_timeout
        # e.g. {"actions": ["pull"], "mediatypes": ["application/octet-stream"]}:
        # events the registry should not POST at all (distribution 2.7+).
        self.notify_ignore = dict(notify_ignore or {})
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
        return f"http://{self.host}"

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

    def _answers(self) -> bool:
        try:
            with loopback.OPENER.open(f"{self.url}/v2/", timeout=2) as resp:
                return resp.status == 200
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

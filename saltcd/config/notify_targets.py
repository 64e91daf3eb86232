"""`saltcd:notify`: the endpoints rollout notifications go to, validated when
the configuration is read. The sending is saltcd.present.outgoing's."""

import ipaddress
import urllib.parse
from dataclasses import dataclass, field

EVENTS = ("started", "failed", "rolled_back", "finished")
FORMATS = ("slack", "json")


class NotifyConfigError(ValueError):
    """An entry of `saltcd:notify` is invalid; the message names the key."""


@dataclass(frozen=True)
class Target:
    """One endpoint and what it wants to hear."""

    url: str
    format: str = "json"
    events: tuple = EVENTS
    secret: str = field(default=None, repr=False)
    timeout: float = 5
    retries: int = 2

    def __str__(self):
        """Scheme and host (and port) for log lines: a URL's path and query may be its secret."""
        return origin(self.url)


def origin(url):
    """`https://hooks.slack.com` of a URL: scheme, host, port; no user, path or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "-"
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is no number: not shown
        port = ""
    return f"{parts.scheme}://{host}{port}"


def _loopback(url):
    """Is the URL's host a loopback address, written as one (a name may resolve anywhere)?"""
    try:
        return ipaddress.ip_address(urllib.parse.urlsplit(url).hostname or "").is_loopback
    except ValueError:
        return False


def targets(raw, key="saltcd:notify", resolve_secret=lambda value: value):
    """The validated list of Targets of `saltcd:notify`."""
    if not isinstance(raw, list):
        raise NotifyConfigError(f"{key}: must be a list of endpoints ({{url, format, events, ...}})")
    out = []
    for index, entry in enumerate(raw):
        where = f"{key}:{index}"
        if not isinstance(entry, dict):
            raise NotifyConfigError(f"{where}: must be a mapping with at least `url`")
        unknown = set(entry) - set(Target.__dataclass_fields__)
        if unknown:
            raise NotifyConfigError(f"{where}: unknown keys {sorted(unknown, key=str)}")
        url = entry.get("url")
        if not (isinstance(url, str) and url.startswith(("http://", "https://"))
                and urllib.parse.urlsplit(url).hostname):
            raise NotifyConfigError(f"{where}:url: must be an http:// or https:// URL")
        # A bearer secret over plain http is readable on the path. Only to a
        # loopback address (a relay on the master itself, the test lab) does it
        # never leave the host, so there plain http is allowed.
        if entry.get("secret") is not None and not url.startswith("https://") and not _loopback(url):
            raise NotifyConfigError(f"{where}:url: an endpoint with a `secret` must use https:// "
                                    "(plain http only to a loopback address)")
        fmt = entry.get("format", Target.format)
        if fmt not in FORMATS:
            raise NotifyConfigError(f"{where}:format: must be one of {FORMATS}, got {fmt!r}")
        events = entry.get("events", list(Target.events))
        if not (isinstance(events, list) and events and all(e in EVENTS for e in events)):
            raise NotifyConfigError(f"{where}:events: must be a list of {EVENTS}")
        timeout, retries = entry.get("timeout", Target.timeout), entry.get("retries", Target.retries)
        if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout <= 60):
            raise NotifyConfigError(f"{where}:timeout: must be seconds, 0-60")
        if not (isinstance(retries, int) and not isinstance(retries, bool) and 0 <= retries <= 10):
            raise NotifyConfigError(f"{where}:retries: must be a count 0-10")
        secret = entry.get("secret")
        if secret is not None:
            secret = resolve_secret(secret)
            if not (isinstance(secret, str) and secret):
                raise NotifyConfigError(f"{where}:secret: must be a non-empty string (or an sdb:// URI)")
        out.append(Target(url=url, format=fmt, events=tuple(events), secret=secret,
                          timeout=float(timeout), retries=retries))
    return tuple(out)

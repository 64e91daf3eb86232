"""The webhook's door: what the saltcd_webhook master engine serves.

It replaces Salt's ``webhook`` engine, which puts every request (headers with
the bearer token, bodies up to Tornado's 100 MB, authenticated or not) on the
master's bus. This one checks each request at the door:

- ``POST /saltcd/<source>`` for a source of ``saltcd:sources``, else 404;
- from an address of the source's ``allow_from`` (if it lists any), else
  403 before the body is read;
- a body larger than ``saltcd:max_body_bytes`` is refused with 413 before it
  is read (Content-Length); a chunked one is cut off at the cap;
- the source's bearer token is checked on the headers (without it the body is
  dropped as it comes, then 401), its HMAC (ingress_auth) with the body, else
  401; a timestamped HMAC seen before is a replay (409); at most MAX_IN_FLIGHT
  bodies per source are read at once, half of them from one address (else
  503); any method but POST gets 405 before its body;
- every body is parsed here (its source's format, in a thread of its own):
  one that does not parse is refused (400, with the parser's reason); one
  that holds only blob pushes and pulls (a registry sends a dozen with every
  push) is answered 200 and goes no further, so it starts no runner; one
  that announces a tagged push of a repository its source may not announce
  (``repositories``) has that push taken out and counted as refused, and is
  answered 200 (``ignored: ...``) if nothing else is left: a registry retries
  a refused notification forever and holds back every later one meanwhile;
- only then ONE event, ``saltcd/ingress/<source>``, with what saltcd uses of
  the body (its pushes: repository, tag, digest, media type; the reasons for
  what it ignored, bounded), the time, a nonce and a MAC made with the
  master-local ingress key (saltcd.ingress.ingress_key): the runner checks that MAC,
  so a minion cannot forge the event, and checks every field again. Neither
  the body nor any header value ever reaches the bus, the reactor or the job
  cache. If the bus refuses it, 503, and a timestamped signature's sighting
  is taken back (a retry is no replay).

Refused posts fire nothing and write nothing each: they are counted in memory
and the counts (source, reason, minute), plus a few full records a minute,
are written to the store every few seconds (``salt-run deploy.rejections``).

The engine (_engines/saltcd_webhook.py) only starts this on the running master
(saltcd.master.engines.serve_webhook).
"""

import asyncio
import collections
import concurrent.futures
import ipaddress
import logging
import re
import threading
import time

from saltcd import compat, store, vocabulary
from saltcd.ingress import ingress_auth, ingress_key, intake, nonces, registry_events

# tornado 6 itself on every Salt line: Salt 3006 would hand `import tornado`
# its vendored 4.x, whose loop is not asyncio's (saltcd.compat.tornado).
tornado = compat.tornado()

log = logging.getLogger(__name__)
# _first_sighting's answer for a signature another master saw first (a shared store).
ELSEWHERE = object()

UNKNOWN_SOURCE = "(unknown)"
FLUSH_EVERY = 5  # seconds between writes of the rejection counts
SAMPLES_PER_MINUTE = 3  # full records per source, reason and minute; the rest are counted
# Slow or idle clients may not hold connections open (a bounded engine).
BODY_TIMEOUT = 30
IDLE_TIMEOUT = 60
MAX_HEADER_BYTES = 64 * 1024
# Bodies read at once, per source: with max_body_bytes each, this bounds what
# senders that stall can make the engine hold. Per source, because an HMAC
# source's slots can be taken by anyone (its HMAC needs the whole body), a
# token source's only by holders of its token (checked first). A registry
# sends one notification at a time per endpoint.
MAX_IN_FLIGHT = 16
# Of those, what one sending address (an IPv6 /64) may hold: a sender that
# stalls from one address leaves the other half to the registry. The address is
# the connection's own (X-Forwarded-For is not trusted), so behind a proxy every
# post shares the proxy's half.
MAX_IN_FLIGHT_PER_ADDRESS = MAX_IN_FLIGHT // 2
INVALID_CONFIG = "saltcd configuration invalid (the master's log says why)"


def counted_reason(reason):
    """A reason as it is counted: numbers in it (ages, sizes, indexes, addresses)
    as N, or every post would be its own key."""
    return re.sub(r"(?<![\w-])[0-9]+", "N", reason)


class Rejections:
    """Refusal posts, counted in memory; `flush(records)` writes them to the store."""

    def __init__(self, samples_per_minute=SAMPLES_PER_MINUTE):
        self.samples_per_minute = samples_per_minute
        self._lock = threading.Lock()
        self._counts = {}
        self._samples = []
        self._sampled = {}

    def add(self, source, reason, now, peer=None, path=None):
        """Count one refused post; keep it in full if it is among the first few this minute."""
        minute = int(now // 60) * 60
        key = (source, counted_reason(reason), minute)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            seen = self._sampled.get(key, 0)
            if seen < self.samples_per_minute:
                self._sampled[key] = seen + 1
                self._samples.append(store.rejection(
                    f"POST /{registry_events.shown(path, 80)}",
                    {"kind": "registry", "origin": f"saltcd_webhook {peer or '?'}"}, reason, now))

    def take(self, now):
        """The counts and full records gathered since the last call (and forget them)."""
        with self._lock:
            counts, samples = self._counts, self._samples
            self._counts, self._samples = {}, []
            # Sampling state of past minutes is no longer needed.
            self._sampled = {k: v for k, v in self._sampled.items() if k[2] >= now - 120}
        return counts, samples

    def flush(self, records, now=None):
        """Write what was counted to `records` (a saltcd.store.Store); return the counts."""
        now = time.time() if now is None else now
        counts, samples = self.take(now)
        if counts:
            records.count_rejections(counts)
        records.add_rejections(samples, now)
        return counts


class Door:
    """What the handler needs: settings (None: invalid config), the ingress key,
    `fire(tag, data)`, the seen signatures (`nonces`: a saltcd.ingress.nonces.NonceCache)
    and the counts."""

    def __init__(self, settings, key, fire, nonces, rejections=None):
        self.settings = settings
        self.key = key
        self.fire = fire
        self.nonces = nonces
        self.rejections = rejections or Rejections()
        # Bodies being read (IOLoop thread only): by source name, and by (source name, sender_address).
        self.in_flight = collections.Counter()
        self.in_flight_from = collections.Counter()
        # One thread for the bus and the store: the IOLoop never blocks on them.
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="saltcd-webhook")
        # Another for parsing bodies (up to max_body_bytes each), so that a big
        # one holds up neither the events of others nor the rejection counts.
        self.parser = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                            thread_name_prefix="saltcd-webhook-parse")

    async def in_worker(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)

    async def in_parser(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.parser, function, *args)

    def shutdown(self):
        """Stop the threads (tests and benches; the master ends the engine's process)."""
        self.worker.shutdown()
        self.parser.shutdown()


class Refusal(Exception):
    """A post the door turns away: HTTP status, counted source and reason (and a
    detail for the answer only)."""

    def __init__(self, status, source, reason, detail=""):
        super().__init__(reason)
        self.status, self.source, self.reason, self.detail = status, source, reason, detail


TOO_LARGE = "body larger than max_body_bytes"
NOT_FROM_ALLOWED = "sender address not in the source's allow_from"


def sender_address(peer):
    """The address a post's share of the slots is counted by: the peer's own, or
    its /64 for IPv6 (one host is given a whole /64, so any of it is one sender)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return str(peer)
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _too_large(source, cap):
    """413, before the body is read (announced) or while it arrives (chunked)."""
    return Refusal(413, source, TOO_LARGE, f" ({cap} bytes)")


@tornado.web.stream_request_body
class Hook(tornado.web.RequestHandler):  # pylint: disable=abstract-method
    """POST /saltcd/<source>: checked at the door, one sanitized event if good."""

    def initialize(self, door):  # pylint: disable=arguments-differ
        self.door = door
        self.source = None
        self.chunks = []
        self.size = 0
        self.refused = None
        self.counted = None  # (source name, sender address) while counted in door.in_flight*

    def _release(self):
        if self.counted:
            name, address = self.counted
            self.counted = None
            self.door.in_flight[name] -= 1
            self.door.in_flight_from[name, address] -= 1
            if not self.door.in_flight_from[name, address]:
                del self.door.in_flight_from[name, address]  # no key left behind per address ever seen

    def on_finish(self):
        self._release()

    def on_connection_close(self):
        self._release()

    def _refuse(self, refused, answer_now=True):
        """Count the post and answer with the status; nothing else is kept. With
        `answer_now` False the answer waits for the end of the body, which
        data_received drops as it comes: a client still sending a body of the
        announced size reads its 401 instead of a reset connection."""
        self.refused = refused
        self.door.rejections.add(refused.source, refused.reason, time.time(),
                                 peer=self.request.remote_ip, path=self.request.path.lstrip("/"))
        if answer_now:
            self._answer(refused)

    def _answer(self, refused):
        self.set_status(refused.status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{refused.reason}{refused.detail}\n")

    def prepare(self):
        """Before the body: the source must exist, the announced size fit, a bearer
        token match, and the engine not be reading too many bodies already."""
        settings = self.door.settings
        if settings is None:
            self._refuse(Refusal(503, UNKNOWN_SOURCE, INVALID_CONFIG))
            return
        path = self.path_args[0] if self.path_args else ""
        name = path[len(vocabulary.SOURCE_PREFIX):] if path.startswith(vocabulary.SOURCE_PREFIX) else None
        if self.request.method != "POST":
            # At once: tornado would read the whole body before its own 405.
            self._refuse(Refusal(405, UNKNOWN_SOURCE, "only POST is accepted"))
            return
        if not name or name not in settings.sources:
            self._refuse(Refusal(404, UNKNOWN_SOURCE, "no webhook source is configured for this path"))
            return
        self.source = settings.sources[name]
        if not self.source.allows_sender(self.request.remote_ip):
            # At once, before the size and the credential: nothing of this sender is read.
            self._refuse(Refusal(403, name, NOT_FROM_ALLOWED))
            return
        cap = settings.max_body_bytes
        length = self.request.headers.get("Content-Length")
        try:
            announced = int(length) if length is not None else 0
        except ValueError:
            announced = cap + 1  # tornado refuses it too; say so first
        if announced > cap:
            self._refuse(_too_large(name, cap))
            return
        try:
            ingress_auth.check_token(self.source, ingress_auth.hashed_headers(dict(self.request.headers)))
        except ingress_auth.Unauthenticated as exc:
            self._refuse(Refusal(401, name, f"unauthenticated: {exc}"), answer_now=False)
            return
        address = sender_address(self.request.remote_ip)
        if self.door.in_flight[name] >= MAX_IN_FLIGHT:
            self._refuse(Refusal(503, name, "too many posts in flight"))
            return
        if self.door.in_flight_from[name, address] >= MAX_IN_FLIGHT_PER_ADDRESS:
            self._refuse(Refusal(503, name, "too many posts in flight from one address"))
            return
        self.door.in_flight[name] += 1
        self.door.in_flight_from[name, address] += 1
        self.counted = (name, address)
        # A chunked body without Content-Length: tornado drops the connection at the cap.
        self.request.connection.set_max_body_size(cap)

    def data_received(self, chunk):
        if self.refused is not None or self._finished or not self.counted:
            return  # refused: the rest of the body is not kept (the connection closes)
        self.size += len(chunk)
        if self.size > self.door.settings.max_body_bytes:
            self.chunks = []
            self._refuse(_too_large(self.source.name, self.door.settings.max_body_bytes))
            return
        self.chunks.append(chunk)

    async def post(self, path):  # pylint: disable=arguments-differ,unused-argument
        if self._finished:
            return
        if self.refused is not None:  # refused on its headers; its body is gone
            self._answer(self.refused)
            return
        try:
            text, now = self._admit(b"".join(self.chunks))
            parsed = await self._parsed(text)
            dropped = self._drop_unannounced(parsed)
            if dropped and not parsed.pushes:
                answer = f"ignored: {dropped}\n"
            elif parsed.only_routine:
                # Blob pushes and pulls, which a registry reports by the dozen with
                # every push and every reconcile lookup: none starts a runner.
                log.debug("saltcd_webhook: %s: %d routine item(s), nothing to deploy", self.source.name,
                          len(parsed.ignored))
                answer = registry_events.NOTHING_TO_DEPLOY + "\n"
            elif (nonce := await self._first_sighting(now)) is ELSEWHERE:
                # Several masters (a shared store): the registry notified each, another took it.
                answer = "ignored: already accepted by another master\n"
            else:
                name = self.source.name
                data = ingress_key.reduced(parsed)  # all that goes on of the body
                await self._fire(vocabulary.INGRESS_TAG_PREFIX + name,
                                 ingress_key.envelope(self.door.key, name, data, now), nonce)
                answer = "accepted\n"
        except Refusal as refused:
            self._refuse(refused)
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(answer)

    async def _parsed(self, text):
        """The body parsed in its source's format (registry_events.Parsed), or
        Refusal 400 with the parser's reason: a body that does not parse goes
        no further than the door."""
        try:
            return await self.door.in_parser(registry_events.PARSERS[self.source.format], text)
        except registry_events.PayloadError as exc:
            raise Refusal(400, self.source.name, str(exc)) from None
        except RecursionError:
            raise Refusal(400, self.source.name, "payload nested too deeply") from None
        except Exception as exc:  # pylint: disable=broad-except
            # A shape a parser missed: refused all the same; the log says which.
            log.warning("saltcd_webhook: %s: parser failed: %s", self.source.name,
                        registry_events.shown(f"{type(exc).__name__}: {exc}"))
            raise Refusal(400, self.source.name, f"malformed payload ({type(exc).__name__})") from None

    def _drop_unannounced(self, parsed):
        """Take the pushes of repositories the source may not announce (`repositories`)
        out of `parsed`, each counted as a refusal; return the last reason, or None.

        Refusal, but answered 200 when nothing else is in the post: a registry
        retries a refused notification until it is accepted and sends nothing
        else to the endpoint meanwhile (distribution 2.8 and 3), so one push of
        another repository would stop every later notification."""
        kept, reason = [], None
        for push in parsed.pushes:
            try:
                intake.check_announced(self.source, [push])
            except intake.NotAllowed as exc:
                reason = str(exc)
                self.door.rejections.add(self.source.name, reason, time.time(), peer=self.request.remote_ip,
                                         path=self.request.path.lstrip("/"))
                continue
            kept.append(push)
        parsed.pushes = kept
        return reason

    async def _fire(self, tag, envelope, nonce):
        """Put the event on the bus; if the bus refuses it, nothing was accepted:
        the signature's sighting is taken back, so that the sender's retry is
        not a replay, and the answer is 503."""
        try:
            await self.door.in_worker(self.door.fire, tag, envelope)
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("saltcd_webhook: the event bus refused a post from %s: %s", self.source.name,
                        type(exc).__name__)
            if nonce is not None:
                try:
                    await self.door.in_worker(self.door.nonces.forget, *nonce)
                except Exception:  # pylint: disable=broad-except  # its retry is then a replay (409)
                    log.exception("saltcd_webhook: could not take back a signature's sighting")
            raise Refusal(503, self.source.name, "event bus unavailable: not accepted, retry") from None

    def _timestamp(self):
        """The clear value of the source's timestamp header, or None."""
        header = self.source.timestamp_header
        return self.request.headers.get(header) if header else None

    def _admit(self, body):
        """(body text, the time it was received) for an authenticated body, or
        raise Refusal."""
        source, settings, now = self.source, self.door.settings, time.time()
        headers = dict(self.request.headers)
        data = {"body": body, **ingress_auth.hashed_headers(headers), "timestamp": self._timestamp()}
        try:
            ingress_auth.check(source, data, now=now, window=settings.push_window)
        except ingress_auth.Unauthenticated as exc:
            raise Refusal(401, source.name, f"unauthenticated: {exc}") from None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(400, source.name, "body is not UTF-8") from None
        return text, now

    async def _first_sighting(self, now):
        """(nonce, time) of a timestamped signature, seen now for the first time,
        or None for a source without one, or ELSEWHERE when another master saw it
        first (several masters, each notified); Refusal 409 for a replay. Asked only
        of a post about to be fired: one refused or ignored for what it holds
        (400, or pushes its source may not announce) does not use up its
        signature, so its retry after a fix is no replay."""
        if self.source.hmac_secret is None or self._timestamp() is None:
            return None
        # A timestamped signature is valid for push_window: seen twice, it is a replay.
        signature = self.request.headers.get(self.source.signature_header, "")
        sighting = (ingress_auth.sha256_hex(signature), now)
        try:
            fresh = await self.door.in_worker(self.door.nonces.first_sighting, *sighting,
                                              self.door.settings.push_window)
        except nonces.SeenElsewhere:
            return ELSEWHERE
        except Exception as exc:  # pylint: disable=broad-except  # nonces.Full, store errors
            raise Refusal(503, self.source.name, f"replay check failed: {type(exc).__name__}") from None
        if not fresh:
            raise Refusal(409, self.source.name, "unauthenticated: signature seen before: a replay")
        return sighting


def make_app(door):
    return tornado.web.Application([(r"/(.*)", Hook, {"door": door})])


async def flush_forever(door, records, every=FLUSH_EVERY):
    """Write the rejection counts every `every` seconds (one line in the log, not one a post)."""
    while True:
        await asyncio.sleep(every)
        try:
            counts = await door.in_worker(door.rejections.flush, records)
        except Exception:  # pylint: disable=broad-except
            log.exception("saltcd_webhook: could not write rejection counts")
            continue
        if counts:
            summary = {f"{s}: {r}": n for (s, r, _), n in sorted(counts.items())}
            log.warning("saltcd_webhook: refused %d post(s) in the last %d s: %s",
                        sum(counts.values()), every, summary)


def server(door, address, port, ssl_options=None):
    """An HTTPServer listening on address:port (call from a running event loop)."""
    cap = door.settings.max_body_bytes if door.settings else 1024
    http = tornado.httpserver.HTTPServer(
        make_app(door), ssl_options=ssl_options, max_body_size=cap,
        max_header_size=MAX_HEADER_BYTES, body_timeout=BODY_TIMEOUT,
        idle_connection_timeout=IDLE_TIMEOUT)
    http.listen(port, address=address)
    return http

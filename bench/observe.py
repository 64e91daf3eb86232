"""Everything on the master's event bus, recorded with the master's own time stamps."""

import datetime
import threading
import time


def stamp_seconds(data):
    """The `_stamp` Salt put on an event (UTC, when it was fired), as epoch seconds."""
    stamp = (data or {}).get("_stamp") if isinstance(data, dict) else None
    if not stamp:
        return None
    parsed = datetime.datetime.fromisoformat(stamp)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


class Event:
    """One bus event: tag, data, and when the master fired it (`at`, epoch seconds)."""

    __slots__ = ("tag", "data", "at")

    def __init__(self, tag, data):
        self.tag = tag
        self.data = data if isinstance(data, dict) else {}
        self.at = stamp_seconds(self.data) or time.time()


class BusRecorder:
    """Subscribes before anything happens and keeps every event in order."""

    def __init__(self, master_conf_file):
        import salt.config  # pylint: disable=import-outside-toplevel
        import salt.utils.event  # pylint: disable=import-outside-toplevel

        opts = salt.config.master_config(master_conf_file)
        self._bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        self.events = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._record, name="bench-bus", daemon=True)
        self._thread.start()

    def _record(self):
        while not self._stop.is_set():
            raw = self._bus.get_event(wait=0.2, full=True)
            if raw:
                with self._changed:
                    self.events.append(Event(raw["tag"], raw["data"]))
                    self._changed.notify_all()

    def close(self):
        """Stop recording and disconnect."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._bus.destroy()

    def mark(self):
        """An index: wait_for(since=mark) only looks at events after this point."""
        with self._changed:
            return len(self.events)

    def wait_for(self, predicate, since=0, timeout=120.0):
        """The first event at or after index `since` that satisfies predicate, or None."""
        deadline = time.monotonic() + timeout
        with self._changed:
            index = since
            while True:
                while index < len(self.events):
                    if predicate(self.events[index]):
                        return self.events[index]
                    index += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 1.0))

    def between(self, since, until=None):
        """The events recorded from index `since` (to `until`)."""
        with self._changed:
            return list(self.events[since:until])

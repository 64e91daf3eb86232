"""What a person sees of saltcd's runner returns: plain text tables and lines.

Pure functions of the runner's return values (no Salt imports), so they are
tested as they are and the `saltcd` outputter (_output/saltcd_out.py) is a thin
shell. Records are read defensively: a missing key shows as `-`, never a crash,
so older records and newer fields both render.

Records hold text minions reported (state comments, digests, ids): it is data,
never terminal control. `clean` is the one place that makes such text fit to
show, and every view (these functions, deploy.watch, the HTML report, the
notifications) shows it through `clean`; the public functions here clean what
they are given (`_cleaned`) before they add colours of their own.
"""

import datetime
import functools
import re
import time

from saltcd import vocabulary

_CODES = {"green": "\033[32m", "red": "\033[31m", "yellow": "\033[33m", "dim": "\033[2m",
          "bold": "\033[1m", "reset": "\033[0m"}


# Terminal escape sequences, 7-bit and 8-bit: CSI (`ESC [` ... final byte, e.g.
# colours, clear screen); OSC, DCS, SOS, PM, APC (`ESC ]` ... up to BEL or ST, e.g.
# a window title, a hyperlink; unterminated: to the end); any other ESC with its
# intermediates and final byte, or a lone ESC.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f]).*?(?:\x07|\x1b\\|\x9c|\Z)"
    r"|\x1b[ -/]*[0-~]?",
    re.DOTALL,
)
# Line breaks and tabs become one space: a shown value stays on its line.
_BREAKS = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")
# What is left of C0 and C1 controls (NUL, backspace, BEL, ...), DEL, and the
# bidirectional overrides that make a line read otherwise than it is.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(value):
    """`value` as text fit to show on one line: escape sequences and control
    characters removed, line breaks flattened to a space."""
    text = value if isinstance(value, str) else str(value)
    return _CONTROLS.sub("", _BREAKS.sub(" ", _ESCAPES.sub("", text)))


def scrub(data):
    """`data` (a record, a runner return) with `clean` applied to every string in it, keys too.

    A key that cleaning would turn into another one (`dev-2\\x1b[8m` next to
    `dev-2`) is shown as its repr instead: no minion's line hides another's."""
    if isinstance(data, str):
        return clean(data)
    if isinstance(data, dict):
        shown = {}
        # Keys that are clean already come first (a stable sort): they keep their names.
        for key in sorted(data, key=lambda k: isinstance(k, str) and clean(k) != k):
            name = scrub(key)
            shown[clean(repr(key)) if name in shown else name] = scrub(data[key])
        return shown
    if isinstance(data, (list, tuple)):
        return [scrub(item) for item in data]
    return data


def _cleaned(function):
    """`function` shown only cleaned data: its positional arguments go through `scrub`."""

    @functools.wraps(function)
    def shown(*args, **kwargs):
        return function(*(scrub(arg) for arg in args), **kwargs)

    return shown


class Paint:
    """ANSI colours when `enabled` (a TTY and no --no-color), else plain text."""

    def __init__(self, enabled=False):
        self.enabled = bool(enabled)

    def __call__(self, colour, text):
        text = str(text)
        return f"{_CODES[colour]}{text}{_CODES['reset']}" if self.enabled else text

    def outcome(self, status):
        colour = "green" if status in vocabulary.GOOD else "red" if status in vocabulary.BAD else "yellow"
        return self(colour, status)


def short(digest):
    """`sha256:0123456789ab`, or `-`."""
    return digest[:19] if isinstance(digest, str) and digest else "-"


def ago(seconds):
    """`12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`."""
    seconds = max(0, int(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def when(moment, now=None):
    """Local ISO time and how long ago: `2026-11-26 22:30:01 (5 min ago)`."""
    if not isinstance(moment, (int, float)):
        return "-"
    now = time.time() if now is None else now
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(moment))} ({ago(now - moment)})"


def duration(record):
    start, end = record.get("started"), record.get("ended")
    if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
        return "-"
    seconds = end - start
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _table(rows, indent="  "):
    """Left-aligned columns; every row a list of plain strings."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


# ---------------------------------------------------------------------------
# deploy.status


def _nothing_here(view):
    minions = view.get("minions") or {}
    return (not view.get("pending") and not view.get("awaiting_approval")
            and not view.get("rollout_running") and not view.get("last_good")
            and all(not (info or {}).get("digest") for info in minions.values()))


def _epoch(moment):
    """Seconds since the epoch of a number or Docker's `StartedAt` (RFC 3339, nanoseconds), else None."""
    if isinstance(moment, (int, float)) and not isinstance(moment, bool):
        return float(moment)
    if not isinstance(moment, str) or moment.startswith("0001-"):  # Docker's "never started"
        return None
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", moment)
    if not match:
        return None
    zone = match.group(3) or "Z"
    stamp = datetime.datetime.fromisoformat(match.group(1) + ("+00:00" if zone == "Z" else zone))
    return stamp.timestamp() + float("0" + (match.group(2) or ".0"))


def _minion_row(minion, info, now):
    if not info or info.get("answered") is False:
        return [minion, "-", "no answer", "-", "-"]
    running = "running" if info.get("running") else "stopped" if info.get("digest") else "absent"
    healthy = info.get("healthy")
    health = "healthy" if healthy else "unhealthy" if healthy is False else "-"
    started = _epoch(info.get("started_at"))
    age = ago(now - started) if started is not None else (info.get("container_id") or "-")
    return [minion, short(info.get("digest")), running, health, age]


@_cleaned
def status_text(status, paint=None, now=None):
    """One table per app and environment; environments with nothing deployed and
    nothing pending one line each."""
    paint, now = paint or Paint(), time.time() if now is None else now
    if not isinstance(status, dict):
        return str(status)
    if status.get("error"):
        return paint("red", f"error: {status['error']}")
    lines, idle = [], []
    for app in sorted(status):
        envs = status[app]
        if not isinstance(envs, dict):
            continue
        for env in sorted(envs):
            view = envs[env] if isinstance(envs[env], dict) else {}
            minions = view.get("minions") or {}
            if _nothing_here(view):
                idle.append(f"{app}/{env}: nothing deployed, nothing pending "
                            f"({len(minions)} minion(s), mode {view.get('mode', '-')})")
                continue
            converged = paint("green", "converged") if view.get("converged") else paint("yellow", "not converged")
            lines.append(paint("bold", f"{app}/{env}") + f"  {converged} on {short(view.get('last_good'))}"
                         f"  (mode {view.get('mode', '-')})")
            rows = [["minion", "digest", "container", "health", "age"]]
            rows += [_minion_row(m, minions[m], now) for m in sorted(minions)]
            lines += _table(rows)
            for rollout_id in view.get("rollout_running") or []:
                lines.append(paint("yellow", f"  running: rollout {rollout_id}"))
            for item in view.get("pending") or []:
                wait = f", waiting: {item['reason']}" if item.get("reason") else ""
                at = f" (runs at {item['runs_at']})" if item.get("runs_at") else ""
                lines.append(f"  queued: {item.get('tag', '-')} from {trigger_text(item.get('trigger'))}"
                             f"{' pinned ' + short(item['pinned']) if item.get('pinned') else ''}{wait}{at}")
            for item in view.get("awaiting_approval") or []:
                pushed = trigger_text(item.get("pushed_by"))
                lines.append(paint("yellow", f"  awaiting approval: {item.get('tag', '-')} -> "
                                             f"{short(item.get('digest'))} pushed by {pushed}"
                                             f" {when(item.get('received'), now)}"))
            lines.append("")
    lines += idle
    return "\n".join(lines).rstrip() or "no app configured"


# ---------------------------------------------------------------------------
# deploy.history and one rollout


def forward_batches(record):
    """The record's batches towards its digest (not its rollback batches)."""
    return [b for b in record.get("batches") or [] if b.get("kind", "batch") == "batch"]


def from_digest(record):
    froms = {d for d in (record.get("from_digests") or {}).values() if d}
    if len(froms) == 1:
        return short(froms.pop())
    return "mixed" if froms else "-"


def trigger_text(trigger):
    """`registry (saltcd/ingress/registry)`, `operator (alice)`: what started it, and who or where."""
    if isinstance(trigger, dict):
        kind, origin = trigger.get("kind") or "-", trigger.get("origin") or trigger.get("minion")
        return f"{kind} ({origin})" if origin else str(kind)
    return str(trigger or "-")


def who(record):
    trigger = trigger_text(record.get("trigger"))
    approved = record.get("approved_by")
    return f"{trigger}, approved by {approved}" if approved else trigger


@_cleaned
def history_line(record, paint=None, now=None):
    """One rollout in one line: when, trigger and who, from -> to, batches, duration, outcome."""
    paint = paint or Paint()
    batches = forward_batches(record)
    reason = record.get("reason")
    return (f"{when(record.get('started'), now)}  {who(record)}  {from_digest(record)} -> "
            f"{short(record.get('to_digest'))}  {len(batches)} batch(es)  {duration(record)}  "
            f"{paint.outcome(record.get('status', '-'))}" + (f": {reason}" if reason else ""))


@_cleaned
def batch_lines(record, paint=None):
    """Per batch, per minion: from -> to, replaced or not, healthy or why not."""
    paint = paint or Paint()
    lines = []
    for entry in record.get("batches") or []:
        took = duration(entry)
        lines.append(f"  {entry.get('kind', 'batch')} {entry.get('number', '?')} ({took})")
        for minion, result in sorted((entry.get("minions") or {}).items()):
            lines.append("    " + minion_line(minion, result, paint))
    return lines


@_cleaned
def minion_line(minion, result, paint=None):
    paint = paint or Paint()
    ok = result.get("ok")
    state = paint("green", "healthy") if ok else paint("red", "FAILED")
    changed = "replaced" if result.get("changed") else "unchanged"
    why = "" if ok or not result.get("comment") else f" ({result['comment']})"
    return f"{minion}: {short(result.get('from'))} -> {short(result.get('to'))} {changed}, {state}{why}"


@_cleaned
def history_text(records, detail=False, paint=None, now=None):
    """deploy.history: newest first, one line each; `detail` adds the batches."""
    paint = paint or Paint()
    if isinstance(records, dict) and records.get("error"):
        return paint("red", f"error: {records['error']}")
    if not records:
        return "no rollouts recorded"
    lines = []
    for record in records:
        lines.append(f"{record.get('id', '-')}  " + history_line(record, paint, now))
        if detail:
            lines += batch_lines(record, paint)
    return "\n".join(lines)


@_cleaned
def rollout_text(record, paint=None, now=None):
    """The summary a rollout, rollback, approve or promote ends with (its
    progress lines were shown while it ran)."""
    paint = paint or Paint()
    if not isinstance(record, dict):
        return str(record)
    if record.get("error"):
        return paint("red", f"error: {record['error']}")
    status = record.get("status", "-")
    if status == "queued":
        return paint("yellow", f"queued: {record.get('reason', '')}")
    head = (f"{record.get('app', '-')}/{record.get('env', '-')}: {paint.outcome(status)}"
            f" {from_digest(record)} -> {short(record.get('to_digest'))}")
    lines = [head + (f": {record['reason']}" if record.get("reason") else "")]
    if record.get("roles"):
        placed = record.get("placement") or {}
        lines.append("  roles, replaced in this order in each batch: " + ", ".join(
            f"{role} (on {', '.join(placed[role]) or 'no minion'})" if role in placed else role
            for role in record["roles"]))
    if status == "planned":
        for step in record.get("plan") or []:
            for minion, item in sorted((step.get("minions") or {}).items()):
                change = (item.get("why") or "change") if item.get("change") else "already there"
                lines.append(f"  batch {step.get('number', '?')}: {minion}: {short(item.get('from'))} -> "
                             f"{short(item.get('to'))} ({change})")
    else:
        batches = forward_batches(record)
        lines.append(f"  rollout {record.get('id', '-')}, {len(record.get('minions') or [])} minion(s), "
                     f"{len(batches)} batch(es), {duration(record)}"
                     + (f", failed: {', '.join(record['failed_minions'])}" if record.get("failed_minions") else ""))
    return "\n".join(lines)


def _step_lines(where, entry, paint):
    """One batch or rollback step of a record: its verdict, then a line per minion."""
    minions = entry.get("minions") or {}
    healthy = all((result or {}).get("ok") for result in minions.values())
    lines = [f"{where} {entry.get('kind', 'batch')} {entry.get('number', '?')}: "
             f"{'healthy' if healthy else paint('red', 'failed')}"]
    return lines + ["  " + minion_line(m, r or {}, paint) for m, r in sorted(minions.items())]


def _record_parts(record, paint):
    """(key, lines) of each part of a rollout record, in the order they happen:
    its start, each batch or rollback step, the watch after the last batch, its end."""
    where = f"{record.get('app', '-')}/{record.get('env', '-')}"
    if record.get("minions"):
        yield "started", [f"{where}: rollout {record.get('id', '-')} started -> {short(record.get('to_digest'))} "
                          f"on {', '.join(map(str, record['minions']))}"]
    for index, entry in enumerate(record.get("batches") or []):
        yield f"step {index}", _step_lines(where, entry, paint)
    watched = record.get("watch")
    if isinstance(watched, dict):
        problems = "; ".join(f"{m} {p}" for m, p in sorted((watched.get("problems") or {}).items()))
        yield "watch", [f"{where}: watch after the last batch: {watched.get('outcome', '-')}"
                        + (f": {problems}" if problems else "")]
    status = record.get("status")
    if status not in (None, "running"):
        reason = record.get("reason")
        yield "end", [f"{where}: {paint.outcome(status)}" + (f": {reason}" if reason else "")]


@_cleaned
def record_lines(record, shown, paint=None):
    """deploy.watch's progress lines of `record` that are not in `shown` yet.

    `shown` is a set this adds to, so a record read again yields only what is
    new: the lines come from saltcd's record, never from an event's data."""
    lines = []
    for key, part in _record_parts(record, paint or Paint()):
        if key not in shown:
            shown.add(key)
            lines += part
    return lines


VIEWS = {
    "status": lambda data, paint, opts: status_text(data, paint),
    "history": lambda data, paint, opts: history_text(data, opts.get("detail"), paint),
    "rollout": lambda data, paint, opts: rollout_text(data, paint),
    "report": lambda data, paint, opts: (f"report written: {clean(data['path'])}" if isinstance(data, dict)
                                         and data.get("path") else rollout_text(data, paint)),
}


def render(shown, paint=None):
    """The text of a runner return marked for the `saltcd` outputter:
    {"view": name, "shown": data, ...}. None when it is not one of ours."""
    paint = paint or Paint()
    if not isinstance(shown, dict):
        return None
    if shown.get("suffix") == "progress" and isinstance(shown.get("event"), dict):
        # A rollout's progress lines carry minions' state comments.
        return clean(shown["event"].get("message", ""))
    view = VIEWS.get(shown.get("view"))
    if view is None or "shown" not in shown:
        return None
    return view(shown["shown"], paint, shown)

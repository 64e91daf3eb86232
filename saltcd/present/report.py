"""A rollout as one self-contained HTML page (deploy.report).

Inline CSS and SVG, no external asset, every value from a record cleaned of
control characters (views.clean: minions report some of that text) and
HTML-escaped. The page is private to the master's user (0600).
The timeline is as fine-grained as the record: one bar per batch step (batch,
rollback, or any later kind such as a watch) per minion, from the step's start
to its end, coloured by its result. Below it: per-minion results, and the
environment's recent history.
"""

import html
import os
import tempfile
import time

from saltcd.present import views

COLOURS = {"ok": "#2e9e44", "failed": "#d33a2c", "rollback": "#e08a1e", "other": "#5577aa"}
WIDTH, LABEL, ROW = 900, 170, 26

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
code{font-family:ui-monospace,Menlo,monospace}.succeeded,.unchanged{color:#2e9e44}
.failed,.rolled_back,.paused,.interrupted{color:#d33a2c}.legend span{display:inline-block;width:1em;height:1em;
vertical-align:middle;margin:0 .3em 0 1em}svg text{font-size:12px;font-family:ui-monospace,Menlo,monospace}
"""


def _e(value):
    """A record's value fit for the page: cleaned (views.clean), then HTML-escaped."""
    return html.escape(views.clean("-" if value is None else value), quote=True)


def newest_run(records):
    """The newest record that ran batches (else the newest), or None."""
    records = list(records)
    return next((r for r in records if r.get("batches")), records[0] if records else None)


def _steps(record):
    """(minion, kind, number, start, end, ok) for every minion of every batch step."""
    for entry in record.get("batches") or []:
        start, end = entry.get("started"), entry.get("ended")
        if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
            continue
        for minion, result in (entry.get("minions") or {}).items():
            yield minion, entry.get("kind", "batch"), entry.get("number", "?"), start, end, bool(result.get("ok"))


def timeline_svg(record):
    """The batches per minion on a time axis, as an inline SVG."""
    steps = list(_steps(record))
    minions = sorted(set(record.get("minions") or []) | {s[0] for s in steps})
    if not minions:
        return "<p>No minion was targeted.</p>"
    times = [t for s in steps for t in s[3:5]] + [t for t in (record.get("started"), record.get("ended"))
                                                 if isinstance(t, (int, float))]
    begin, finish = (min(times), max(times)) if times else (0, 1)
    span = max(finish - begin, 0.001)
    scale = (WIDTH - LABEL - 20) / span
    height = ROW * len(minions) + 40
    rows = {m: i for i, m in enumerate(minions)}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img" '
             f'aria-label="rollout timeline">']
    for minion, index in rows.items():
        y = 10 + index * ROW
        parts.append(f'<text x="4" y="{y + 15}">{_e(minion)}</text>'
                     f'<line x1="{LABEL}" x2="{WIDTH - 10}" y1="{y + 20}" y2="{y + 20}" stroke="#eee"/>')
    for minion, kind, number, start, end, ok in steps:
        x = LABEL + (start - begin) * scale
        w = max((end - start) * scale, 3)
        colour = COLOURS["failed"] if not ok else COLOURS["ok"] if kind == "batch" else \
            COLOURS.get(kind, COLOURS["other"])
        y = 10 + rows[minion] * ROW
        parts.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="18" rx="3" fill="{colour}">'
                     f'<title>{_e(minion)}: {_e(kind)} {_e(number)}, {end - start:.1f} s, '
                     f'{"healthy" if ok else "FAILED"}</title></rect>'
                     f'<text x="{x + 4:.1f}" y="{y + 15}" fill="#fff">{_e(kind)} {_e(number)}</text>')
    axis_y = height - 12
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        x = LABEL + fraction * (WIDTH - LABEL - 20)
        parts.append(f'<text x="{x:.1f}" y="{axis_y}" fill="#777">+{span * fraction:.1f}s</text>')
    parts.append("</svg>")
    return "".join(parts)


def _results_table(record):
    rows = ["<tr><th>step</th><th>minion</th><th>from</th><th>to</th><th>replaced</th><th>result</th></tr>"]
    for entry in record.get("batches") or []:
        for minion, result in sorted((entry.get("minions") or {}).items()):
            ok = result.get("ok")
            rows.append(
                f"<tr><td>{_e(entry.get('kind', 'batch'))} {_e(entry.get('number'))}</td><td>{_e(minion)}</td>"
                f"<td><code>{_e(views.short(result.get('from')))}</code></td>"
                f"<td><code>{_e(views.short(result.get('to')))}</code></td>"
                f"<td>{'yes' if result.get('changed') else 'no'}</td>"
                f"<td class=\"{'succeeded' if ok else 'failed'}\">{'healthy' if ok else 'FAILED'}"
                f"{'' if ok or not result.get('comment') else ': ' + _e(result['comment'])}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _history_table(records, now):
    rows = ["<tr><th>rollout</th><th>started</th><th>trigger</th><th>from &rarr; to</th><th>took</th>"
            "<th>outcome</th></tr>"]
    for r in records:
        status = r.get("status", "-")
        rows.append(
            f"<tr><td><code>{_e(r.get('id'))}</code></td><td>{_e(views.when(r.get('started'), now))}</td>"
            f"<td>{_e(views.trigger_text(r.get('trigger')))}</td><td><code>{_e(views.from_digest(r))} &rarr; "
            f"{_e(views.short(r.get('to_digest')))}</code></td><td>{_e(views.duration(r))}</td>"
            f"<td class=\"{_e(status)}\">{_e(status)}{': ' + _e(r['reason']) if r.get('reason') else ''}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def page(record, history=(), now=None):
    """The HTML text of the report on `record`, with `history` (records, newest first)."""
    now = time.time() if now is None else now
    status = record.get("status", "-")
    title = f"{record.get('app', '-')}/{record.get('env', '-')} rollout {record.get('id', '-')}"
    legend = "".join(f'<span style="background:{c}"></span>{_e(n)}' for n, c in COLOURS.items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f"<p>Outcome: <strong class=\"{_e(status)}\">{_e(status)}</strong>"
        f"{' &mdash; ' + _e(record['reason']) if record.get('reason') else ''}</p>"
        "<table>"
        f"<tr><th>to digest</th><td><code>{_e(record.get('to_digest'))}</code></td></tr>"
        f"<tr><th>from</th><td><code>{_e(views.from_digest(record))}</code></td></tr>"
        f"<tr><th>trigger</th><td>{_e(views.who(record))}</td></tr>"
        f"<tr><th>started</th><td>{_e(views.when(record.get('started'), now))}</td></tr>"
        f"<tr><th>took</th><td>{_e(views.duration(record))}</td></tr>"
        f"<tr><th>minions</th><td>{_e(', '.join(record.get('minions') or []))}</td></tr>"
        "</table>"
        f"<h2>Timeline</h2><p class=\"legend\">{legend}</p>{timeline_svg(record)}"
        f"<h2>Per minion</h2>{_results_table(record)}"
        f"<h2>Recent history of {_e(record.get('app'))}/{_e(record.get('env'))}</h2>"
        f"{_history_table(history, now)}"
        f"<p style=\"color:#777\">Written by saltcd {_e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now)))}"
        "</p></body></html>\n")


def write(path, record, history=()):
    """Write the page to `path` atomically, readable by the master's user only
    (its folder is made, 0700, if missing)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".html.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            # The page shows the environment's minions, digests and failures:
            # 0600 before it gets its name, whatever mkstemp's default.
            os.fchmod(out.fileno(), 0o600)
            out.write(page(record, list(history)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path

"""The retention report as one self-contained HTML page for a compliance officer.

Headline tiles (green when a check holds, red when it fails, grey when it was not
run), two inline SVG bar charts and one table per section. Nothing is fetched: no
fonts, scripts, images or links to other hosts, so the page opens offline and can be
archived as evidence; ``@media print`` keeps tables whole on paper. Every value goes
through ``html.escape``: client ids, hold reasons and keys are data, not markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from itertools import cycle

from retention.report_model import AGE_BUCKETS, RetentionReport

Cell = str | int | float | bool | datetime | None
_PALETTE = ("#2563eb", "#f59e0b", "#0d9488", "#9333ea", "#dc2626", "#64748b")

_CSS = """
:root{--ok:#15803d;--ok-bg:#dcfce7;--bad:#b91c1c;--bad-bg:#fee2e2;--na:#475569;--na-bg:#e2e8f0;
--ink:#0f172a;--muted:#64748b;--line:#e2e8f0}*{box-sizing:border-box}body{margin:0;
padding:24px 32px;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--ink);background:#f8fafc}header{display:flex;justify-content:space-between;
align-items:baseline;flex-wrap:wrap;border-bottom:3px solid var(--ink);padding-bottom:8px;
margin-bottom:16px}h1{font-size:24px;margin:0}h2{font-size:17px;margin:0 0 8px}.meta{
color:var(--muted)}.tiles{display:grid;grid-template-columns:repeat(5,1fr);gap:12px;
margin-bottom:16px}.tile{border-radius:10px;padding:12px 14px;border:1px solid transparent}
.tile .v{font-size:26px;font-weight:700}.tile .l{font-size:12px;text-transform:uppercase;
letter-spacing:.04em}.tile .d{font-size:12px}.ok{background:var(--ok-bg);color:var(--ok);
border-color:var(--ok)}.bad{background:var(--bad-bg);color:var(--bad);border-color:var(--bad)}.na{
background:var(--na-bg);color:var(--na);border-color:var(--na)}.charts{display:grid;
grid-template-columns:1fr 1fr;gap:12px;margin-bottom:16px}section,figure{background:#fff;
border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin:0 0 12px}figure svg{
width:100%;height:auto}figcaption{font-weight:600;margin-bottom:4px}table{border-collapse:collapse;
width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid var(--line);vertical-align:top}th{background:#f1f5f9;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.empty{color:var(--muted);
font-style:italic}.note{color:var(--muted);font-size:12px;margin:6px 0 0}table+table{
margin-top:12px}.grid2{display:grid;grid-template-columns:1fr 1fr;gap:12px}@media print{body{
background:#fff;padding:0;font-size:11px}section,figure,tr{break-inside:avoid}.tiles{
grid-template-columns:repeat(5,1fr)}.tile,th{-webkit-print-color-adjust:exact;
print-color-adjust:exact}@page{margin:12mm}}
"""


def to_html(report: RetentionReport) -> str:
    """The dashboard page (UTF-8, no external references)."""
    r = report
    who = "all clients" if r.client_id is None else f"client {r.client_id}"
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>Retention report — {_e(who)} — {_e(_time(r.generated_at))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>Retention report</h1><span class=meta>{_e(who)} · period "
        f"{_e(_time(r.period.start))} → {_e(_time(r.period.end))} ({r.period.days} days) · "
        f"generated {_e(_time(r.generated_at))}</span></header>",
        _tiles(r),
        '<div class="charts">',
        _inventory_chart(r),
        _forecast_chart(r),
        "</div>",
        *_sections(r),
        "</body></html>",
    ]
    return "\n".join(parts)


def _tiles(r: RetentionReport) -> str:
    cov, recon, audit, c = r.coverage, r.reconciliation, r.audit, r.checks
    chain = {None: "not checked", True: "intact", False: "broken"}[c.audit_chain]
    match = {None: "not run", True: "matches", False: "differs"}[c.reconciliation]
    tiles = [
        (c.no_overdue, str(r.overdue.total), "Overdue recordings", "must be 0"),
        (c.full_coverage, "—" if cov.percent is None else f"{cov.percent:g} %",
         "Consent coverage", f"{cov.covered} of {cov.live} live recordings"),
        (c.audit_chain, chain, "Audit chain",
         f"{audit.events} events" if audit.checked else "run: callrec audit verify"),
        (c.reconciliation, match, "Reconciliation",
         f"orphans {recon.orphans}, ghosts {recon.ghosts}" if recon.run else "catalog vs bucket"),
        (c.subject_requests_on_time, str(len(r.subject_requests.overdue)),
         "Subject requests overdue", "must be 0"),
        (c.webhooks_delivered, str(r.webhooks.dead), "Webhooks dead",
         f"must be 0; {r.webhooks.pending} pending"),
    ]  # fmt: skip
    cells = []
    for ok, value, label, detail in tiles:
        css, mark = {True: ("ok", "✓"), False: ("bad", "✗"), None: ("na", "–")}[ok]
        cells.append(
            f'<div class="tile {css}"><div class=l>{_e(label)}</div>'
            f"<div class=v>{_e(value)} {mark}</div><div class=d>{_e(detail)}</div></div>"
        )
    return f'<div class="tiles">{"".join(cells)}</div>'


def _inventory_chart(r: RetentionReport) -> str:
    totals = [i for i in r.inventory if i.purpose == "all"]
    clients = sorted({i.client_id for i in totals})
    shown = clients[: len(_PALETTE) - 1]  # the rest share one "other" bar segment
    series = [(c, [0.0] * len(AGE_BUCKETS)) for c in shown]
    if len(clients) > len(shown):
        series.append(("other clients", [0.0] * len(AGE_BUCKETS)))
    index = {c: min(k, len(series) - 1) for k, c in enumerate(clients)}
    for i in totals:
        series[index[i.client_id]][1][AGE_BUCKETS.index(i.age)] += i.recordings
    labels = [f"{b} d" for b in AGE_BUCKETS]
    return _figure("Live recordings by age (days since created)", labels, series)


def _forecast_chart(r: RetentionReport) -> str:
    labels = [f"{f.start.day} {f.start:%b}" for f in r.forecast]
    series = [
        ("to purge", [float(f.recordings_purged) for f in r.forecast]),
        ("held", [float(f.recordings_held) for f in r.forecast]),
    ]
    return _figure("Recordings whose last purpose expires, per week (next 90 days)", labels, series)


def _figure(title: str, labels: Sequence[str], series: Sequence[tuple[str, list[float]]]) -> str:
    """A stacked bar chart as inline SVG; an empty chart says so instead of drawing zeros."""
    width, height, left, top, bottom = 560, 240, 44, 24, 36
    plot_w, plot_h = width - left - 12, height - top - bottom
    stacks = [sum(values[k] for _, values in series) for k in range(len(labels))]
    peak = _nice(max(stacks, default=0))
    out = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">']
    for step in range(5):  # horizontal grid lines with their values
        y = top + plot_h - plot_h * step / 4
        out.append(f'<path d="M{left} {y:.1f}H{width - 12}" stroke="#e2e8f0"/>')
        out.append(_label(left - 6, y + 4, f"{peak * step / 4:g}", 'text-anchor="end"'))
    slot = plot_w / max(len(labels), 1)
    bar = min(slot * 0.7, 64)
    for k, label in enumerate(labels):
        x, base = left + slot * k + (slot - bar) / 2, float(top + plot_h)
        for n, (name, values) in enumerate(series):
            h = plot_h * values[k] / peak
            if h > 0:
                base -= h
                out.append(
                    f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                    f'fill="{_PALETTE[n]}"><title>{_e(name)}: {values[k]:g}</title></rect>'
                )
        if stacks[k]:
            out.append(_label(x + bar / 2, base - 4, f"{stacks[k]:g}", 'font-weight="600"'))
        out.append(_label(x + bar / 2, height - bottom + 14, label))
    if not any(stacks):
        out.append(_label(left + plot_w / 2, top + plot_h / 2, "no recordings", size=13))
    x = left
    for n, (name, _) in enumerate(series):  # the legend, along the bottom
        out.append(f'<rect x="{x}" y="{height - 12}" width="10" height="10" fill="{_PALETTE[n]}"/>')
        out.append(_label(x + 14, height - 3, name, 'text-anchor="start"'))
        x += 24 + 6 * len(name)
    return f"<figure><figcaption>{_e(title)}</figcaption>{''.join(out)}</svg></figure>"


def _label(x: float, y: float, text: str, extra: str = "", size: int = 10) -> str:
    anchor = "" if "text-anchor" in extra else 'text-anchor="middle" '
    return f'<text x="{x:.1f}" y="{y:.1f}" {anchor}font-size="{size}" {extra}>{_e(text)}</text>'


def _nice(value: float) -> float:
    """A round axis maximum at or above ``value``: four steps of 1, 2 or 5 times 10ⁿ."""
    factors, step = cycle((2.0, 2.5, 2.0)), 1.0  # 1, 2, 5, 10, 20, 50…
    while step * 4 < value:
        step *= next(factors)
    return step * 4


def _sections(r: RetentionReport) -> list[str]:
    p, h, s, cov = r.purges, r.holds, r.subject_requests, r.coverage
    days = sum(x.day_precision for x in p.by_cause)
    coverage = [(c.client_id, c.live, c.covered, f"{100 * c.covered / c.live:.2f} %")
                for c in cov.by_client]  # fmt: skip
    forecast = [(f.start, f.end, _pairs(f.purposes_expiring), f.recordings_purged,
                 f.recordings_held) for f in r.forecast]  # fmt: skip
    policy = [(x.purpose, x.legal_basis, x.regulator_reference, x.default_days, x.max_days,
               _pairs(x.overrides)) for x in r.policy]  # fmt: skip
    return [
        _section("policy", "Retention policy", _table(
            "Purpose|Legal basis|Regulator reference|Default days|Max days|Client overrides",
            policy)),
        _section("inventory", "Inventory of live recordings", _table(
            "Client|Purpose|" + "|".join(f"{b} days" for b in AGE_BUCKETS) + "|Total",
            _inventory(r), right=range(2, 7)),
            "Recordings · size, by days since created. “all” counts each recording once; one "
            "with several purposes is under each; “none” has no purpose left."),
        _section("forecast", "Expiry forecast — next 90 days", _table(
            "Week from|to|Purposes expiring|Recordings to purge|Held", forecast),
            "A recording counts in the week its last purpose expires; one that a legal hold "
            "covers now counts as held, not purged: holds block the purge, nothing else."),
        _section("purges", "Purges in the period", _table(
            "Cause|Purged|On time|Late|Early|Lag unknown|Mean lag (h)|Max lag (h)",
            _rows(p.by_cause, "cause purged on_time late early lag_unknown mean_lag_hours "
                  "max_lag_hours"), "No purge.")
            + _table("Late purge|Client|Purged at|Lag (h)",
                     _rows(p.late, "recording_id client_id purged_at lag_hours"), "No late purge.")
            + _table("Early purge|Client|Purged at|Cause|Hours before expiry",
                     _rows(p.early, "recording_id client_id purged_at cause hours_before_expiry"),
                     "No early purge."),
            f"On time: purged at most {p.late_after_hours:g} h after its last purpose expired; "
            "early: purged before it expired (its cause says why). "
            f"{days} lag(s) count from the expiry date at 00:00 UTC (day precision, so never "
            f"under-stated). Recordings kept after losing an expired purpose: "
            f"{p.purposes_expired_events}."),
        _section("overdue", f"Overdue recordings ({r.overdue.total})", _table(
            "Recording|Client|Reason", _rows(r.overdue.items, "recording_id client_id reason"),
            "None: nothing is overdue."),
            "Held recordings with no purpose left are not overdue: see legal holds."),
        _section("holds", "Legal holds", _table(
            "Case|Reason|Opened|Review by|Recordings covered",
            _rows(h.cases, "id reason created_at until recordings"), "No active case.")
            + _table("Kept only by a hold", [(i,) for i in h.kept_only_by_hold_ids], ""),
            f"{h.kept_only_by_hold} live recording(s) have no purpose left; a hold keeps them."),
        '<div class="grid2">',
        _section("restrictions", "Restricted recordings", _table(
            "Client|Recordings", _rows(r.restrictions, "client_id recordings"))),
        _section("coverage", "Consent coverage", _table("Client|Live|Covered|Coverage", coverage)
            + _table("Gap|Recordings", list(cov.gaps.items()), "No gap.")),
        "</div>",
        _section("subjects", "Subject requests", _table(
            "Kind|Received|Open|Partially completed|Completed|Overdue", _rows(s.by_kind,
            "kind received open partially_completed completed overdue"))
            + _table("Overdue request|Client|Kind|Status|Due",
                     _rows(s.overdue, "id client_id kind status due_at"), "None overdue."),
            "Received and completed count the period; the other columns count all time."),
        '<div class="grid2">',
        _section("reconciliation", "Reconciliation (catalog vs bucket)",
                 _table("Item|Value", _reconciliation(r))),
        _section("audit", "Audit chain", _table("Item|Value", _audit(r))),
        "</div>",
        _section("webhooks", "Webhooks", _table("Item|Value", _webhooks(r)),
            "Pending: waiting, or retried with backoff after a failed attempt. Dead: not "
            "delivered within the maximum age; the receiver never got it."),
    ]  # fmt: skip


def _webhooks(r: RetentionReport) -> list[Sequence[Cell]]:
    w = r.webhooks
    return [
        ("Pending deliveries", w.pending),
        ("Oldest pending since", w.oldest_pending),
        ("Dead deliveries", w.dead),
        ("Last one died", w.last_dead),
    ]


def _inventory(r: RetentionReport) -> list[Sequence[Cell]]:
    cells: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for i in r.inventory:  # sorted by client, purpose ("all" first), age
        row = cells.setdefault((i.client_id, i.purpose), [(0, 0)] * len(AGE_BUCKETS))
        row[AGE_BUCKETS.index(i.age)] = (i.recordings, i.bytes)
    return [
        (client, purpose, *(_count(*a) for a in ages), _count(*map(sum, zip(*ages, strict=True))))
        for (client, purpose), ages in cells.items()
    ]


def _count(recordings: int, size: int) -> str:
    return f"{recordings} · {_size(size)}" if recordings else "—"


def _reconciliation(r: RetentionReport) -> list[Sequence[Cell]]:
    x = r.reconciliation
    if not x.run:
        return [("status", "not run")]
    rows: list[Sequence[Cell]] = [("checked at", x.checked_at), ("objects", x.objects),
                                  ("stored recordings", x.recordings), ("orphans", x.orphans),
                                  ("ghosts", x.ghosts)]  # fmt: skip
    return rows + [("orphan key", k) for k in x.orphan_keys] + [("ghost", g) for g in x.ghost_ids]


def _audit(r: RetentionReport) -> list[Sequence[Cell]]:
    a = r.audit
    if not a.checked:
        return [("status", "not checked")]
    return [("status", "intact" if a.ok else "broken"), ("events", a.events),
            ("first bad event", a.first_bad), ("problem", a.problem)]  # fmt: skip


def _rows(items: Sequence[object], fields: str) -> list[Sequence[Cell]]:
    return [tuple(getattr(item, f) for f in fields.split()) for item in items]


def _pairs(values: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in values.items()) or "—"


def _section(anchor: str, title: str, body: str, note: str = "") -> str:
    note_html = f"<p class=note>{_e(note)}</p>" if note else ""
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}{note_html}</section>'


def _table(
    columns: str, rows: Sequence[Sequence[Cell]], empty: str = "None.", right: Iterable[int] = ()
) -> str:
    """A table; columns of numbers (or those in ``right``) are aligned right."""
    header, forced = columns.split("|"), set(right)
    if not rows:
        return f"<p class=empty>{_e(empty)}</p>" if empty else ""
    numeric = [
        k in forced
        or (
            all(isinstance(row[k], int | float | None) for row in rows)
            and any(isinstance(row[k], int | float) for row in rows)
        )
        for k in range(len(header))
    ]
    head = "".join(
        f"<th{' class=n' if n else ''}>{_e(h)}</th>" for h, n in zip(header, numeric, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=n' if n else ''}>{_e(_text(v))}</td>"
            for v, n in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value: Cell) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _time(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{count} B"


def _e(value: str) -> str:
    return escape(value, quote=True)

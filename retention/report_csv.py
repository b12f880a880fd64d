"""The retention report as one CSV file, one block per section.

Each block starts with a header row whose first cell is ``section``, followed by its
data rows whose first cell is the section's name; blocks are separated by a blank
row. A spreadsheet shows the sections one under the other, and a program keeps the
rows of one section by their first cell. Column names are the JSON field names;
times are ISO 8601 UTC; a mapping (overrides, purposes expiring) is ``k=v; k=v``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from retention import report_model as rp
from retention.report_model import RetentionReport

# A text cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def to_csv(report: RetentionReport) -> str:
    """The whole report, section by section (see the module docstring for the layout)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for name, header, rows in _sections(report):
        writer.writerow(["section", *header])
        writer.writerows([name, *(_cell(v) for v in row)] for row in rows)
        writer.writerow([])
    return out.getvalue()


Block = tuple[str, Sequence[str], Iterable[Sequence[Any]]]


def _sections(r: RetentionReport) -> Iterable[Block]:
    summary: dict[str, Any] = {
        "generated_at": r.generated_at,
        "period_start": r.period.start,
        "period_end": r.period.end,
        "period_days": r.period.days,
        "client": r.client_id or "all",
        "overdue": r.overdue.total,
        "consent_live": r.coverage.live,
        "consent_covered": r.coverage.covered,
        "consent_coverage_percent": r.coverage.percent,
        "kept_only_by_hold": r.holds.kept_only_by_hold,
        "late_after_hours": r.purges.late_after_hours,
        "purposes_expired_events": r.purges.purposes_expired_events,
    }
    summary |= {f"check_{k}": "not checked" if v is None else v for k, v in r.checks}
    yield "summary", ("key", "value"), summary.items()
    yield _models("policy", rp.PolicyRow, r.policy)
    yield _models("inventory", rp.InventoryRow, r.inventory)
    yield _models("forecast", rp.ForecastWeek, r.forecast)
    yield _models("purges", rp.PurgeRow, r.purges.by_cause)
    yield _models("late_purges", rp.LatePurge, r.purges.late)
    yield _models("early_purges", rp.EarlyPurge, r.purges.early)
    yield _models("overdue", rp.OverdueItem, r.overdue.items)
    yield _models("holds", rp.HoldRow, r.holds.cases)
    yield "kept_only_by_hold", ("recording_id",), [(i,) for i in r.holds.kept_only_by_hold_ids]
    yield _models("restrictions", rp.ClientCount, r.restrictions)
    yield _models("consent_coverage", rp.CoverageRow, r.coverage.by_client)
    yield "consent_gaps", ("reason", "recordings"), r.coverage.gaps.items()
    yield _models("subject_requests", rp.SubjectRow, r.subject_requests.by_kind)
    yield _models("subject_requests_overdue", rp.SubjectOverdue, r.subject_requests.overdue)
    recon = r.reconciliation.model_dump(exclude={"orphan_keys", "ghost_ids"})
    recon_rows = [*recon.items(), *(("orphan_key", k) for k in r.reconciliation.orphan_keys)]
    yield (
        "reconciliation",
        ("key", "value"),
        recon_rows + [("ghost_id", g) for g in r.reconciliation.ghost_ids],
    )
    yield "audit_chain", ("key", "value"), r.audit.model_dump().items()
    yield "webhooks", ("key", "value"), r.webhooks.model_dump().items()


def _models(name: str, model: type[BaseModel], items: Sequence[BaseModel]) -> Block:
    fields = list(model.model_fields)
    return name, fields, [[getattr(item, f) for f in fields] for item in items]


def _cell(value: Any) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return "; ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value  # shown as text, never evaluated
    return value if isinstance(value, int | float | str) else str(value)

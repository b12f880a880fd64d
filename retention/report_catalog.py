"""The retention report's pass over the live catalog (inventory, restrictions, consent
coverage) and its expiry forecast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from consent.calls import CallDecision
from retention.report_model import (
    AGE_BUCKETS,
    FORECAST_DAYS,
    ClientCount,
    Coverage,
    CoverageRow,
    ForecastWeek,
    InventoryRow,
)
from retention.report_scope import Scope, on_hold
from storage.catalog import Recording, RecordingPurpose, RecordingState

# The tables read, as Core tables: the report only reads aggregates.
_R: sa.Table = Recording.__table__  # type: ignore[attr-defined]
_P: sa.Table = RecordingPurpose.__table__  # type: ignore[attr-defined]
_D: sa.Table = CallDecision.__table__  # type: ignore[attr-defined]
_COUNTED = (sa.func.count(), sa.func.coalesce(sa.func.sum(_R.c.size), 0))


def _age(now: datetime) -> sa.ColumnElement[str]:
    # Whole days of age: "0-30" is younger than 31 days, and so on.
    created = _R.c.created_at
    return sa.case(
        (created > now - timedelta(days=31), AGE_BUCKETS[0]),
        (created > now - timedelta(days=91), AGE_BUCKETS[1]),
        (created > now - timedelta(days=366), AGE_BUCKETS[2]),
        else_=AGE_BUCKETS[3],
    ).label("age_bucket")


def _week(scope: Scope, expiry: sa.ColumnElement[datetime]) -> sa.ColumnElement[int]:
    """-1 once expired, 0… for each week of the forecast, NULL beyond it."""
    ends = _week_ends(scope.now)
    return sa.case(
        (expiry <= scope.now, sa.literal_column("-1")),
        *[(expiry <= end, sa.literal_column(str(w))) for w, end in enumerate(ends)],
    ).label("week")


def _week_ends(now: datetime) -> list[datetime]:
    horizon = now + timedelta(days=FORECAST_DAYS)
    return [min(now + timedelta(days=7 * (w + 1)), horizon) for w in range(-(-FORECAST_DAYS // 7))]


@dataclass
class CatalogScan:
    """What the pass over the live catalog finds."""

    inventory: list[InventoryRow]  # by client × age, in all and per purpose
    restrictions: list[ClientCount]
    coverage: Coverage
    bare: dict[bool, int]  # live recordings with no purpose left, by held (by a case) or not


def scan_catalog(scope: Scope) -> CatalogScan:
    """The one pass over the live catalog, with each recording's call decision.

    Grouped by the names of the live purposes kept on each row, it gives the
    inventory in all and per purpose, restrictions, consent coverage and the
    recordings with no purpose left.
    """
    d = _D.alias("d")
    gap = sa.case(
        (_R.c.decision_id.is_(None), "no_decision_id"),
        # Another client's decision never covers a recording.
        (sa.or_(d.c.id.is_(None), d.c.client_id != _R.c.client_id), "decision_not_found"),
        (sa.not_(d.c.record), "decision_not_to_record"),
        (d.c.grant_id.is_(None), "no_grant_id"),
        else_="covered",
    ).label("gap")
    bare_held = sa.case((sa.and_(_R.c.purpose_names == "", on_hold()), 1), else_=0).label("held")
    on = d.c.id == _R.c.decision_id
    query = (
        sa.select(
            _R.c.client_id,
            _age(scope.now),
            _R.c.state,
            _R.c.purpose_names,
            gap,
            bare_held,
            *_COUNTED,
        )
        .select_from(_R.outerjoin(d, on))
        .where(*scope.live())
        .group_by(_R.c.client_id, "age_bucket", _R.c.state, _R.c.purpose_names, "gap", "held")
    )
    cells: dict[tuple[str, str, str], list[int]] = {}  # (client, purpose or "all", age)
    restricted: dict[str, int] = {}
    covered: dict[str, list[int]] = {}
    gaps: dict[str, int] = {}
    bare: dict[bool, int] = {}
    for client, age, state, names, reason, held, count, size in scope.rows(query):
        if not names:
            bare[bool(held)] = bare.get(bool(held), 0) + count
        for purpose in ("all", *(names.split(",") if names else ["none"])):
            cell = cells.setdefault((client, purpose, age), [0, 0])
            cell[0], cell[1] = cell[0] + count, cell[1] + int(size)
        if state == RecordingState.RESTRICTED:
            restricted[client] = restricted.get(client, 0) + count
        live_covered = covered.setdefault(client, [0, 0])
        live_covered[0] += count
        if reason == "covered":
            live_covered[1] += count
        else:
            gaps[reason] = gaps.get(reason, 0) + count
    live, hits = sum(v[0] for v in covered.values()), sum(v[1] for v in covered.values())
    return CatalogScan(
        inventory=[
            InventoryRow(client_id=c, purpose=p, age=a, recordings=n, bytes=b)
            for (c, p, a), (n, b) in cells.items()
        ],
        restrictions=[
            ClientCount(client_id=c, recordings=n) for c, n in sorted(restricted.items())
        ],
        coverage=Coverage(
            live=live,
            covered=hits,
            percent=round(100 * hits / live, 2) if live else None,
            gaps=dict(sorted(gaps.items())),
            by_client=[
                CoverageRow(client_id=c, live=v[0], covered=v[1])
                for c, v in sorted(covered.items())
            ],
        ),
        bare=bare,
    )


def expiring_purposes(scope: Scope) -> dict[tuple[int, str], int]:
    """Purposes of live recordings expiring in each week of the forecast: (week, purpose)
    → count. Only live and in-flight recordings have purposes (``RecordingPurpose``),
    so the few in flight are left out instead of every purpose joined to its row."""
    expiry = _P.c.expires_at
    in_flight = sa.select(_R.c.id).where(_R.c.state == RecordingState.RECORDING.value)
    where = [
        expiry > scope.now,
        expiry <= _week_ends(scope.now)[-1],
        _P.c.recording_id.not_in(in_flight),
    ]
    if scope.client_id is not None:
        where.append(_P.c.recording_id.in_(sa.select(_R.c.id).where(*scope.own(_R.c.client_id))))
    query = sa.select(_week(scope, expiry), _P.c.purpose, sa.func.count()).where(*where)
    rows = scope.rows(query.group_by("week", _P.c.purpose))
    return {(int(week), purpose): n for week, purpose, n in rows}


def sorted_inventory(rows: list[InventoryRow]) -> list[InventoryRow]:
    order = {bucket: i for i, bucket in enumerate(AGE_BUCKETS)}
    return sorted(rows, key=lambda r: (r.client_id, r.purpose != "all", r.purpose, order[r.age]))


def forecast_weeks(scope: Scope, expiring: dict[tuple[int, str], int]) -> list[ForecastWeek]:
    """Through the index on ``last_expiry``: the week each recording will be purged."""
    now, ends = scope.now, _week_ends(scope.now)
    expiry = _R.c.last_expiry
    held = sa.case((on_hold(), 1), else_=0).label("held")
    query = (
        sa.select(_week(scope, expiry), held, sa.func.count())
        .where(*scope.live(), expiry > now, expiry <= ends[-1])
        .group_by("week", "held")
    )
    recordings = {(int(w), int(h)): n for w, h, n in scope.rows(query)}
    return [
        ForecastWeek(
            week=w,
            start=now + timedelta(days=7 * w),
            end=end,
            purposes_expiring={p: n for (week, p), n in sorted(expiring.items()) if week == w},
            recordings_purged=recordings.get((w, 0), 0),
            recordings_held=recordings.get((w, 1), 0),
        )
        for w, end in enumerate(ends)
    ]

"""The retention report's purges of the period: by cause, each timed against its last expiry."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSON

from retention.purge import CALLER_OPT_OUT, ERASURE, RETENTION, REVOCATION
from retention.report_model import (
    EarlyPurge,
    LatePurge,
    PurgeRow,
    Purges,
)
from retention.report_scope import LIST_LIMIT, Scope
from storage.audit import AuditEvent

# The tables read, as Core tables: the report only reads aggregates.
_E: sa.Table = AuditEvent.__table__  # type: ignore[attr-defined]
# What ``retention.plan`` writes into a retention purge's rule, before the date.
_RULE_PREFIX = "retention expired: last purpose ended "


def _json_text(scope: Scope, key: str) -> sa.ColumnElement[str]:
    if scope.dialect == "postgresql":
        return sa.func.json_extract_path_text(sa.cast(_E.c.data, JSON), key)
    return sa.func.json_extract(_E.c.data, f"$.{key}")


def _lag_seconds(
    scope: Scope, at: sa.ColumnElement[datetime], since: sa.ColumnElement[str]
) -> sa.ColumnElement[float]:
    """Seconds from the ISO time ``since`` (UTC) to ``at``."""
    if scope.dialect == "postgresql":
        start = sa.func.timezone("UTC", sa.cast(since, sa.DateTime()))
        return sa.func.date_part("epoch", at - start, type_=sa.Float)  # a double, not numeric
    return (sa.func.julianday(at) - sa.func.julianday(since)) * 86400.0


def purge_summary(scope: Scope, start: datetime, late_after: timedelta) -> Purges:
    """Deletion certificates of the period, by cause, each timed against its last expiry."""
    in_period = [_E.c.at > start, _E.c.at <= scope.now, *scope.own(_E.c.client_id)]
    fields = (
        sa.select(
            _E.c.subject,
            _E.c.client_id,
            _E.c.at,
            _json_text(scope, "rule").label("rule"),
            _json_text(scope, "reason").label("reason"),
            _json_text(scope, "last_expiry").label("last_expiry"),
        )
        .where(_E.c.kind == "recording.purged", *in_period)
        # Each certificate's JSON is parsed once, and its lag computed once, not once per use.
        .cte("fields")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    f = fields.c
    by_date, bare = f.rule.like(f"{_RULE_PREFIX}%"), f.rule.like("no purpose left%")
    expired_at = sa.func.coalesce(
        f.last_expiry,
        sa.case((by_date, sa.func.substr(f.rule, len(_RULE_PREFIX) + 1, 10))),
    )
    certificates = (
        sa.select(
            f.subject,
            f.client_id,
            f.at,
            sa.case(
                # Certificates carry their reason; older ones only say it in their rule.
                (f.reason.is_not(None), f.reason),
                (sa.or_(by_date, bare), RETENTION),
                (f.rule.like("erasure%"), ERASURE),
                (f.rule.like("consent % revoked%"), REVOCATION),
                (sa.or_(f.rule.like("%opt-out%"), f.rule.like("%opt_out%")), CALLER_OPT_OUT),
                else_="other",
            ).label("cause"),
            _lag_seconds(scope, f.at, expired_at).label("lag"),
            sa.case((sa.and_(by_date, f.last_expiry.is_(None)), 1), else_=0).label("day"),
        )
        .cte("certificates")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    c, grace = certificates.c, late_after.total_seconds()
    # Before its last purpose expired is early, whatever the cause: never on time.
    kept = c.lag >= 0
    totals = sa.select(
        c.cause,
        sa.func.count(),
        sa.func.sum(sa.case((sa.and_(kept, c.lag <= grace), 1), else_=0)),
        sa.func.sum(sa.case((c.lag > grace, 1), else_=0)),
        sa.func.sum(sa.case((c.lag < 0, 1), else_=0)),
        sa.func.sum(sa.case((c.lag.is_not(None), c.day), else_=0)),
        sa.func.avg(sa.case((kept, c.lag))),
        sa.func.max(sa.case((kept, c.lag))),
    ).group_by(c.cause)
    late = sa.select(c.subject, c.client_id, c.at, c.lag).where(c.lag > grace)
    early = sa.select(c.subject, c.client_id, c.at, c.cause, c.lag).where(c.lag < 0)
    expired_events = sa.select(sa.func.count()).where(
        _E.c.kind == "recording.purposes_expired", *in_period
    )
    return Purges(
        late_after_hours=grace / 3600,
        purposes_expired_events=scope.values(expired_events)[0],
        by_cause=[
            PurgeRow(
                cause=cause,
                purged=n,
                on_time=int(on_time or 0),
                late=int(late or 0),
                early=int(early or 0),
                lag_unknown=n - int(on_time or 0) - int(late or 0) - int(early or 0),
                day_precision=int(day or 0),
                mean_lag_hours=None if mean is None else round(float(mean) / 3600, 2),
                max_lag_hours=None if top is None else round(float(top) / 3600, 2),
            )
            for cause, n, on_time, late, early, day, mean, top in scope.rows(
                totals.order_by(c.cause)
            )
        ],
        late=[
            LatePurge(
                recording_id=subject or "",
                client_id=client,
                purged_at=at,
                lag_hours=round(float(seconds) / 3600, 2),
            )
            for subject, client, at, seconds in scope.rows(
                late.order_by(c.lag.desc(), c.subject).limit(LIST_LIMIT)
            )
        ],
        early=[
            EarlyPurge(
                recording_id=subject or "",
                client_id=client,
                purged_at=at,
                cause=cause,
                hours_before_expiry=round(-float(seconds) / 3600, 2),
            )
            for subject, client, at, cause, seconds in scope.rows(
                early.order_by(c.at.desc(), c.subject).limit(LIST_LIMIT)
            )
        ],
    )

"""The retention report's overdue recordings and the legal holds keeping recordings."""

from __future__ import annotations

import sqlalchemy as sa

from retention.holds import LegalHold, LegalHoldTarget
from retention.report_model import (
    HoldRow,
    Holds,
    Overdue,
    OverdueItem,
)
from retention.report_scope import LIST_LIMIT, Scope, on_hold
from storage.catalog import Recording, RecordingPurpose

# The tables read, as Core tables: the report only reads aggregates.
_R: sa.Table = Recording.__table__  # type: ignore[attr-defined]
_P: sa.Table = RecordingPurpose.__table__  # type: ignore[attr-defined]
_H: sa.Table = LegalHold.__table__  # type: ignore[attr-defined]
_T: sa.Table = LegalHoldTarget.__table__  # type: ignore[attr-defined]


def overdue_recordings(scope: Scope, *, bare_unheld: int) -> Overdue:
    """Expired purposes still present (few: the expiry index finds them), and bare recordings."""
    expired = [*scope.live(), _P.c.expires_at <= scope.now]
    joined = _R.join(_P, _P.c.recording_id == _R.c.id)
    total = sa.select(sa.func.count(sa.distinct(_R.c.id))).select_from(joined).where(*expired)
    first = (
        sa.select(_R.c.id).select_from(joined).where(*expired).distinct()
        .order_by(_R.c.id).limit(LIST_LIMIT).scalar_subquery()
    )  # fmt: skip
    details = (
        sa.select(_R.c.id, _R.c.client_id, _P.c.purpose, _P.c.expires_at)
        .select_from(joined)
        .where(*expired, _R.c.id.in_(first))
        .order_by(_R.c.id, _P.c.purpose)
    )
    found: dict[tuple[str, str], list[str]] = {}
    for recording_id, client, purpose, expiry in scope.rows(details):
        found.setdefault((recording_id, client), []).append(
            f"{purpose} (expired {expiry:%Y-%m-%d})"
        )
    still = "expired purpose still present: "
    items = [
        OverdueItem(recording_id=r, client_id=c, reason=still + ", ".join(p))
        for (r, c), p in found.items()
    ]
    if bare_unheld and len(items) < LIST_LIMIT:  # listed only when some exist: none should
        bare = sa.select(_R.c.id, _R.c.client_id).where(*scope.live(), _bare(), sa.not_(on_hold()))
        items += [
            OverdueItem(recording_id=r, client_id=c, reason="no purpose left and no legal hold")
            for r, c in scope.rows(bare.order_by(_R.c.id).limit(LIST_LIMIT - len(items)))
        ]
    return Overdue(total=scope.values(total)[0] + bare_unheld, items=items)


def _bare() -> sa.ColumnElement[bool]:
    return ~sa.exists().where(_P.c.recording_id == _R.c.id)


def _covered_by_cases(scope: Scope) -> sa.Subquery:
    """(case, recording) for each live recording an active case covers, through indexes."""
    active = _T.join(_H, _H.c.id == _T.c.hold_id)
    return sa.union_all(
        *[
            sa.select(_T.c.hold_id, _R.c.id.label("recording_id"))
            .select_from(active.join(_R, match))
            .where(_H.c.released_at.is_(None), _T.c.kind == kind, *scope.live())
            for kind, match in (
                ("recording", _R.c.id == _T.c.target),
                ("call", _R.c.call_id == _T.c.target),
                ("client", _R.c.client_id == _T.c.target),
            )
        ]
    ).subquery()


def active_holds(scope: Scope, *, kept: int) -> Holds:
    covered = _covered_by_cases(scope)
    counts = sa.select(covered.c.hold_id, sa.func.count(sa.distinct(covered.c.recording_id)))
    held = dict(scope.rows(counts.group_by(covered.c.hold_id)))
    mine = scope.values(
        sa.select(_T.c.hold_id).where(_T.c.kind == "client", *scope.own(_T.c.target))
    )
    cases = sa.select(_H).where(_H.c.released_at.is_(None)).order_by(_H.c.created_at, _H.c.id)
    kept_ids: list[str] = []
    if kept:  # recordings with no purpose left that only a case keeps
        query = (
            sa.select(covered.c.recording_id).distinct()
            .where(~sa.exists().where(_P.c.recording_id == covered.c.recording_id))
            .order_by(covered.c.recording_id).limit(LIST_LIMIT)
        )  # fmt: skip
        kept_ids = scope.values(query)
    return Holds(
        cases=[
            HoldRow(
                id=h.id,
                reason=h.reason,
                created_at=h.created_at,
                until=h.until,
                recordings=held.get(h.id, 0),
            )
            for h in scope.rows(cases)
            # One client's report shows the cases that cover its recordings or name it.
            if scope.client_id is None or h.id in held or h.id in mine
        ],
        kept_only_by_hold=kept,
        kept_only_by_hold_ids=kept_ids,
    )

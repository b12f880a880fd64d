"""The retention report's checks from outside the catalog: subject requests, the last
reconciliation, the audit chain and the webhook outbox.
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from retention.reconcile import RECONCILIATION_EVENT, ReconciliationReport
from retention.report_model import (
    AuditStatus,
    ReconciliationStatus,
    SubjectOverdue,
    SubjectRow,
    Subjects,
    WebhookStatus,
)
from retention.report_scope import LIST_LIMIT, Scope
from retention.subjects import RequestKind, SubjectRequest
from storage import webhook_fanout
from storage.audit import AuditEvent, ChainReport
from storage.catalog import Recording

# The tables read, as Core tables: the report only reads aggregates.
_R: sa.Table = Recording.__table__  # type: ignore[attr-defined]
_E: sa.Table = AuditEvent.__table__  # type: ignore[attr-defined]
_S: sa.Table = SubjectRequest.__table__  # type: ignore[attr-defined]


def subject_requests(scope: Scope, start: datetime) -> Subjects:
    done, partial = "completed", "partially_completed"
    late = sa.and_(_S.c.due_at < scope.now, _S.c.status != done)

    def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    query = (
        sa.select(
            _S.c.kind,
            count(_S.c.created_at > start),
            count(_S.c.status.not_in([done, partial])),
            count(_S.c.status == partial),
            count(sa.and_(_S.c.status == done, _S.c.completed_at > start)),
            count(late),
        )
        .where(*scope.own(_S.c.client_id))
        .group_by(_S.c.kind)
    )
    found = {row[0]: [int(v or 0) for v in row[1:]] for row in scope.rows(query)}
    kinds = [*[k.value for k in RequestKind], *sorted(set(found) - {k.value for k in RequestKind})]
    overdue = (
        sa.select(_S.c.id, _S.c.client_id, _S.c.kind, _S.c.status, _S.c.due_at)
        .where(late, *scope.own(_S.c.client_id))
        .order_by(_S.c.due_at, _S.c.id)
        .limit(LIST_LIMIT)
    )
    return Subjects(
        by_kind=[
            SubjectRow(
                kind=k,
                **dict(
                    zip(
                        ("received", "open", "partially_completed", "completed", "overdue"),
                        found.get(k, [0] * 5),
                        strict=True,
                    )
                ),
            )
            for k in kinds
        ],
        overdue=[
            SubjectOverdue(id=i, client_id=c, kind=k, status=s, due_at=d)
            for i, c, k, s, d in scope.rows(overdue)
        ],
    )


def reconciliation_status(
    scope: Scope, report: ReconciliationReport | None
) -> ReconciliationStatus:
    """The reconciliation given, else the last one run (by ``callrec reconcile`` or the
    scheduled job), as the audit log recorded it."""
    if report is None:
        return _last_reconciliation(scope)
    orphans, ghosts = report.orphans, report.ghosts
    if scope.client_id is not None:
        orphans, ghosts = _own_findings(scope, orphans, ghosts)
    return ReconciliationStatus(
        run=True,
        ok=not orphans and not ghosts,
        checked_at=report.checked_at,
        objects=report.objects,
        recordings=report.recordings,
        orphans=len(orphans),
        ghosts=len(ghosts),
        orphan_keys=orphans[:LIST_LIMIT],
        ghost_ids=ghosts[:LIST_LIMIT],
    )


def _own_findings(
    scope: Scope, orphans: list[str], ghosts: list[str]
) -> tuple[list[str], list[str]]:
    # Keys start with the client (DESIGN.md, Object store layout); ghosts are row ids.
    mine = [k for k in orphans if k.startswith(f"{scope.client_id}/")]
    query = sa.select(_R.c.id).where(_R.c.id.in_(ghosts), *scope.own(_R.c.client_id))
    return mine, sorted(scope.values(query))


def _last_reconciliation(scope: Scope) -> ReconciliationStatus:
    last = (
        sa.select(_E.c.at, _E.c.data)
        .where(_E.c.kind == RECONCILIATION_EVENT, _E.c.at <= scope.now)
        .order_by(_E.c.seq.desc())
        .limit(1)
    )
    found = scope.rows(last)
    if not found:
        return ReconciliationStatus(run=False)
    at, data = found[0].at, json.loads(found[0].data)
    orphans, ghosts = list(data.get("orphans", [])), list(data.get("ghosts", []))
    orphan_count = int(data.get("orphan_count", len(orphans)))
    ghost_count = int(data.get("ghost_count", len(ghosts)))
    if scope.client_id is not None:
        # The event lists the first findings only; one client's counts come from them.
        orphans, ghosts = _own_findings(scope, orphans, ghosts)
        orphan_count, ghost_count = len(orphans), len(ghosts)
    return ReconciliationStatus(
        run=True,
        ok=not orphan_count and not ghost_count,
        checked_at=at,
        objects=int(data.get("objects", 0)),
        recordings=int(data.get("recordings", 0)),
        orphans=orphan_count,
        ghosts=ghost_count,
        orphan_keys=orphans[:LIST_LIMIT],
        ghost_ids=ghosts[:LIST_LIMIT],
    )


def audit_status(report: ChainReport | None) -> AuditStatus:
    if report is None:
        return AuditStatus(checked=False)
    return AuditStatus(
        checked=True,
        ok=report.ok,
        events=report.events,
        first_bad=report.first_bad,
        problem=report.problem,
    )


def webhook_status(scope: Scope) -> WebhookStatus:
    """Deliveries waiting and dead, of the client when the report is one client's."""
    found = webhook_fanout.backlog(scope.session, client_id=scope.client_id)
    return WebhookStatus(
        pending=found.pending,
        oldest_pending=found.oldest_pending,
        dead=found.dead,
        last_dead=found.last_dead,
    )

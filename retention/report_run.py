"""The retention report as both edges ask for it (``GET /v1/reports/retention`` and
``callrec report``): the client checked, the audit chain walked unless told not to."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from consent import clients
from retention.report import build_report
from retention.report_model import RetentionReport
from storage.audit import AuditLog


def retention_report(
    session: Session,
    *,
    audit: AuditLog,
    now: datetime,
    client_id: str | None = None,
    period_days: int = 30,
    verify_audit: bool = True,
) -> RetentionReport:
    """The report as of ``now``; NotFound for a client that does not exist (an unknown
    id would otherwise give an empty report that looks like a clean one)."""
    if client_id is not None:
        clients.get_client(session, client_id)
    return build_report(
        session,
        now=now,
        client_id=client_id,
        period_days=period_days,
        audit_report=audit.verify(session) if verify_audit else None,
    )

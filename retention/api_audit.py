"""HTTP routes of the audit trail, for compliance: the events and the chain check."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from consent.api_auth import allow
from consent.api_context import Context
from consent.apikeys import Principal, Role
from retention import audit_trail

router = APIRouter(prefix="/v1", tags=["audit"])

Compliance = Annotated[Principal, Depends(allow(Role.COMPLIANCE))]


SEQ_MAX = 2**31 - 1  # audit_events.seq is a 32-bit INTEGER


class AuditEventList(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    items: list[audit_trail.AuditEventPublic]
    """This page's items."""
    next: str | None
    """The cursor of the next page (none: this is the last)."""


@router.get("/audit")
def list_audit_events(
    context: Context,
    principal: Compliance,
    client_id: str | None = None,
    recording_id: str | None = None,
    call_id: str | None = None,
    kind: Annotated[list[str] | None, Query()] = None,
    actor: str | None = None,
    since: Annotated[datetime | None, Query(alias="from")] = None,
    until: Annotated[datetime | None, Query(alias="to")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditEventList:
    """Audit events in chain order; `from` inclusive, `to` exclusive; `kind` may repeat."""
    selection = audit_trail.AuditFilter(
        client_id=client_id,
        recording_id=recording_id,
        call_id=call_id,
        kinds=tuple(kind or ()),
        actor=actor,
        since=since,
        until=until,
    )
    # Past the largest sequence number there is nothing; on PostgreSQL a larger number
    # would not even fit the column's type.
    after = min(int(cursor), SEQ_MAX) if cursor is not None else None
    with context.read() as session:
        items = audit_trail.list_events(session, selection, after=after, limit=limit + 1)
    more = len(items) > limit
    return AuditEventList(items=items[:limit], next=str(items[limit - 1].seq) if more else None)


@router.get("/audit/verify", response_model_exclude_none=True)
def verify_audit_chain(context: Context, principal: Compliance) -> audit_trail.ChainCheckPublic:
    """Check the whole chain: any edited, inserted or removed event is found."""
    with context.read() as session:
        return audit_trail.check_chain(session, context.audit)

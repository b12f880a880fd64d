"""HTTP routes of the retention layer: legal holds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from consent.api import Context, allow
from consent.apikeys import Principal, Role
from retention import holds
from storage.objectstore import ObjectStore

router = APIRouter(prefix="/v1", tags=["retention"])

Compliance = Annotated[Principal, Depends(allow(Role.COMPLIANCE))]


def get_store(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


Store = Annotated[ObjectStore, Depends(get_store)]


@router.post("/legal-holds", status_code=status.HTTP_201_CREATED)
def place_hold(
    body: holds.HoldRequest, context: Context, store: Store, principal: Compliance
) -> holds.HoldPublic:
    """Open a legal hold case over recordings, calls or a whole client."""
    with context.write() as session:
        return holds.place_hold(
            session,
            request=body,
            store=store,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )


@router.delete("/legal-holds/{hold_id}")
def release_hold(
    hold_id: str, context: Context, store: Store, principal: Compliance
) -> holds.HoldPublic:
    """Release a case; what no other case covers may be purged again."""
    with context.write() as session:
        return holds.release_hold(
            session,
            hold_id=hold_id,
            store=store,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )

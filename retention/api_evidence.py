"""HTTP routes of evidence: why a recording was made and kept, who read it, proof it is gone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from consent.api_auth import allow
from consent.api_context import Context
from consent.apikeys import Principal, Role
from retention.errors import NotFound
from retention.evidence import recording_evidence
from retention.evidence_lookup import number_evidence
from retention.evidence_model import EvidenceLookup, NumberEvidence, RecordingEvidence

router = APIRouter(prefix="/v1", tags=["evidence"])

# compliance for every client, client_admin for its own (another's ids answer 404).
Inspector = Annotated[Principal, Depends(allow(Role.COMPLIANCE, Role.CLIENT_ADMIN))]


@router.get("/recordings/{recording_id}/evidence")
def get_recording_evidence(
    recording_id: str, context: Context, principal: Inspector
) -> RecordingEvidence:
    """Why it was recorded and is kept, every read, and its deletion certificate; each fact
    with the id and hash of its audit event."""
    with context.read() as session:
        return recording_evidence(
            session,
            recording_id,
            client_id=principal.client_id,
            audit=context.audit,
            now=context.clock(),
        )


@router.post("/evidence/lookup")
def look_up_evidence(
    body: EvidenceLookup, context: Context, principal: Inspector
) -> NumberEvidence:
    """Every decision and recording for a number at a client, with the same evidence."""
    if principal.client_id not in (None, body.client_id):
        raise NotFound(f"no client {body.client_id}")
    with context.read() as session:
        return number_evidence(
            session,
            client_id=body.client_id,
            phone=body.phone,
            phone_key=context.phone_key,
            audit=context.audit,
            now=context.clock(),
        )

"""HTTP routes of evidence: why a recording was made and kept, who read it, proof it is gone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from consent.api_auth import allow
from consent.api_context import Context
from consent.apikeys import Principal, Role
from retention.evidence import recording_evidence
from retention.evidence_model import RecordingEvidence

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

"""The evidence answer's shape: facts about a recording, each naming its audit event.

Every fact carries ``event_id`` (the event's place in the chain) and ``event_hash``, so
that a reader can fetch the event (``GET /v1/audit``) and check it against the chain;
``chain`` says whether the chain verified through the newest event cited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CallEvidence",
    "CallerConsentFact",
    "CertificateFact",
    "ChainStatus",
    "Cited",
    "DecisionFact",
    "EvidenceLookup",
    "GrantFact",
    "HoldFact",
    "HoldRelease",
    "NumberEvidence",
    "PurposeEnd",
    "PurposeFact",
    "ReadFact",
    "RecordingEvidence",
    "RestrictionFact",
    "RevocationFact",
    "StoredFact",
]


class Cited(BaseModel):
    """Where a fact comes from: one event of the audit log."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    event_id: int
    """The audit event's sequence number (its place in the chain)."""
    event_hash: str
    """The audit event's hash, as the chain holds it."""
    at: datetime
    """When the event happened."""
    actor: str
    """Who caused it: `key:<key id>`, or `callrec` for callrec's own jobs."""


class DecisionFact(Cited):
    decision_id: str
    """The call's decision."""
    call_id: str
    """The platform's call id."""
    record: bool
    """Whether the call could be recorded."""
    reason: str
    """The decision's stable reason code."""
    rule: str
    """The jurisdiction rule that fired: `one_party` or `all_party`."""
    rule_jurisdiction: str | None
    """The jurisdiction whose rule fired (none: unknown, the strictest rule)."""
    rule_version: int | None
    """The version of that rule in the rule book."""
    purposes: dict[str, datetime]
    """Each purpose decided and when it expires."""
    grant_id: str | None
    """The consent grant the decision rests on."""
    grant_version: int | None
    """The ledger version of that grant."""


class RevocationFact(Cited):
    reason: str | None
    """Why the grant was revoked."""
    purge_existing: bool
    """Whether its purposes were withdrawn from existing recordings too."""


class GrantFact(Cited):
    grant_id: str
    """The consent grant."""
    version: int
    """Its ledger version."""
    purposes: list[str]
    """The purposes it grants."""
    notice: str
    """`announcement` (played to callers) or `contract`."""
    notice_version: str | None
    """The version of the notice."""
    notice_sha256: str | None
    """SHA-256 of the notice's text or audio."""
    granted_by: str | None
    """Who granted it."""
    evidence: str | None
    """The evidence reference given with it (a document reference or hash)."""
    evidence_matches_event: bool
    """Whether `evidence` hashes to the SHA-256 its audit event recorded."""
    valid_from: datetime | None
    """When it took effect."""
    valid_until: datetime | None
    """When it ends (none: open-ended)."""
    revoked: RevocationFact | None = None
    """Its revocation, if it was revoked."""


class CallerConsentFact(Cited):
    accepted: bool
    """Whether the caller agreed to be recorded."""
    method: str | None
    """How the caller answered: `dtmf` or `speech`."""
    notice_version: str | None
    """The version of the notice the caller heard."""


class StoredFact(Cited):
    sha256: str | None
    """SHA-256 of the stored (encrypted) object."""
    size: int | None
    """Its size in bytes."""
    audio_sha256: str | None
    """SHA-256 of the audio as served."""
    object_key: str | None
    """Where it was stored (nothing personal in it)."""


class PurposeEnd(Cited):
    how: str
    """`expired`, `withdrawn` or `purged`."""
    why: str | None
    """What ended it (a revoked grant, the caller's opt-out, a purge's rule)."""


class PurposeFact(Cited):
    name: str
    """The purpose."""
    legal_basis: str | None
    """Its legal basis, from the purpose registry."""
    regulator_reference: str | None
    """The regulator's reference for it (the CNDP receipt under Law 09-08), if any."""
    expires_at: datetime | None
    """When it expires (or expired)."""
    live: bool
    """Whether the recording still serves it."""
    ended: PurposeEnd | None = None
    """How and when it ended, once it has."""


class HoldRelease(Cited):
    pass


class HoldFact(Cited):
    hold_id: str
    """The case."""
    reason: str
    """The case as stated when the hold was placed."""
    covers: list[str]
    """What of this recording it names: `recording`, `call` and/or `client`."""
    until: datetime | None
    """The case's review date, if any."""
    released: HoldRelease | None = None
    """Its release, once released."""


class RestrictionFact(Cited):
    request_id: str
    """The subject request that restricted the recording."""
    status: str
    """The request's status when it was carried out."""


class ReadFact(Cited):
    role: str | None
    """The reader's role."""
    route: str
    """How it was read."""


class CertificateFact(Cited):
    certificate: dict[str, Any]
    """The deletion certificate as written into the audit log."""


class ChainStatus(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    ok: bool
    """Whether the chain verified from its first event through `checked_up_to`, every
    cited event re-hashed and linked to its neighbours, and the chain's head matched
    its anchor."""
    checked_up_to: int
    """The newest cited event."""
    first_bad: int | None = None
    """The first event that does not verify."""
    problem: str | None = None
    """What is wrong there."""


class RecordingEvidence(BaseModel):
    """Why a recording was made, why it is kept, who read it, and proof it is gone."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    recording_id: str
    """The recording."""
    client_id: str
    """The client it belongs to."""
    call_id: str
    """The platform's call id."""
    state: str
    """`recording`, `stored`, `restricted`, `purged` or `failed`."""
    kept_because: str
    """Why it is kept (or that it is gone), in one sentence."""
    decision: DecisionFact | None
    """Why it was recorded: the call's decision."""
    grant: GrantFact | None
    """The consent grant the decision rests on."""
    caller_consent: CallerConsentFact | None
    """The caller's answer, for a call under an all-party rule."""
    stored: StoredFact | None
    """When and what was stored."""
    purposes: list[PurposeFact]
    """Each purpose, its legal basis and expiry, and how it ended if it has."""
    holds: list[HoldFact]
    """The legal holds that cover or covered it."""
    restrictions: list[RestrictionFact]
    """The subject requests that restricted it."""
    reads: list[ReadFact]
    """Every read of its audio: who, when, through which route."""
    certificate: CertificateFact | None
    """Its deletion certificate, once purged."""
    chain: ChainStatus
    """Whether the audit chain verifies through the newest event cited."""


class CallEvidence(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    decision_id: str
    """The call's decision."""
    call_id: str
    """The platform's call id."""
    decision: DecisionFact | None
    """The decision as its audit event recorded it, recorded or not."""
    caller_consent: CallerConsentFact | None
    """The caller's answer, for a call under an all-party rule."""
    recordings: list[str]
    """The call's recordings (their evidence is in `recordings` of the answer)."""


class NumberEvidence(BaseModel):
    """Every decision and recording for one number at one client, with their evidence."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    client_id: str
    """The client."""
    calls: list[CallEvidence]
    """Every call decided in which the number took part, oldest first."""
    recordings: list[RecordingEvidence]
    """The evidence of each of those calls' recordings."""
    chain: ChainStatus
    """Whether the audit chain verifies through the newest event cited anywhere above."""


class EvidenceLookup(BaseModel):
    """Whose evidence to look up: a number at a client (in the body, never in a URL)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(
        max_length=63, description="The client the number called or was called by"
    )
    phone: str = Field(
        max_length=100,
        description="The number, E.164 (the forms the call hook accepts are normalised)",
        json_schema_extra={"examples": ["+212612345678"]},
    )

"""May this call's audio be kept now? One answer for every source of audio.

Uploads ask before they read a byte of the body; WHIP and SIPREC ask before a
capture starts. The call's grant is checked again first (``consent.lapse``), so a
call decided before a revocation or before its grant expired is refused like one
decided after it. The refusal's code says why: ``caller_opted_out``,
``consent_revoked``, ``consent_expired``, ``recording_not_allowed`` (any other reason
not to record), ``awaiting_caller_consent`` or ``recording_exists``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from consent.calls import get_call
from consent.decisions import CallDecision, CallState
from consent.domain import Reason
from consent.errors import StateConflict
from consent.lapse import captured, lapse_call
from storage.audit import AuditEntry, AuditLog

__all__ = ["AudioAdmission", "admit_audio"]

# Reasons a refusal names as its code: the integrator acts on each differently.
_OWN_CODE = frozenset({Reason.CONSENT_REVOKED, Reason.CONSENT_EXPIRED})


@dataclass(frozen=True, slots=True)
class AudioAdmission:
    """The answer: the call, and why its audio may not be kept (None: it may)."""

    call: CallDecision
    refusal: StateConflict | None

    def require(self) -> CallDecision:
        """The call, or its refusal raised (after the caller's transaction committed)."""
        if self.refusal is not None:
            raise self.refusal
        return self.call


def admit_audio(
    session: Session,
    *,
    client_id: str,
    call_id: str,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> AudioAdmission:
    """Whether audio of the client's call may be kept at ``now``.

    Not found (another client's call included) raises NotFound. A refusal is returned,
    not raised, so that the call's lapsed decision is committed with the caller's
    transaction; ``AudioAdmission.require`` raises it.
    """
    call = get_call(session, client_id=client_id, call_id=call_id)
    if call.state == CallState.OPTED_OUT:
        return _refuse(call, f"the caller opted out of call {call_id}", "caller_opted_out")
    if captured(session, call):
        return _refuse(call, f"call {call_id} already has a recording", "recording_exists")
    events: list[AuditEntry] = []
    if lapse_call(session, call, actor=actor, events=events, now=now):
        audit.append_many(session, events, now=now)
        session.flush()
    if not call.record:
        code = call.reason if call.reason in _OWN_CODE else "recording_not_allowed"
        return _refuse(call, f"call {call_id} may not be recorded ({call.reason})", code)
    if call.awaiting_caller_consent:
        return _refuse(
            call, f"call {call_id} still waits for the caller's consent", "awaiting_caller_consent"
        )
    return AudioAdmission(call, None)


def _refuse(call: CallDecision, detail: str, code: str) -> AudioAdmission:
    return AudioAdmission(call, StateConflict(detail, code=code))

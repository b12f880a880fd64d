"""A grant that ends reaches the calls decided under it.

A call is decided once, at setup; its audio comes later: after the caller's answer, in
an upload, from a live capture. Each time a call is used before any audio of it is
captured, its grant is checked again against the ledger at ``now`` (``decision.recheck``),
so that a revocation, or the end of the grant's validity, stops it like any call
decided afterwards. The new outcome is persisted on the call's row with an audit event
(``call.consent_lapsed``). Once audio is captured the decision stays as it was, the
record of why that audio was kept; what a revocation does to existing recordings is
``purge_existing``'s business.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from consent import ledger
from consent.decision import recheck
from consent.decisions import CallDecision, DecisionView, audit_entry, decision_fields, decision_of
from storage.audit import AuditEntry
from storage.catalog import Recording, RecordingState

__all__ = ["captured", "lapse_call"]

_RECORDINGS: sa.Table = Recording.__table__  # type: ignore[attr-defined]
# Any recording of the call but a failed one: its audio is (being) kept.
_CAPTURED = sa.select(
    sa.exists().where(
        _RECORDINGS.c.client_id == sa.bindparam("client_id"),
        _RECORDINGS.c.call_id == sa.bindparam("call_id"),
        _RECORDINGS.c.state != RecordingState.FAILED,
    )
)


def captured(session: Session, row: CallDecision) -> bool:
    """Whether audio of this call is stored or being stored."""
    params = {"client_id": row.client_id, "call_id": row.call_id}
    return bool(session.execute(_CAPTURED, params).scalar())


def lapse_call(
    session: Session, row: CallDecision, *, actor: str, events: list[AuditEntry], now: datetime
) -> bool:
    """Check ``row``'s grant again at ``now``; True if the call may no longer be recorded.

    The changed row is added to ``session`` and its audit entry to ``events``, for the
    caller to append in the same transaction.
    """
    if not row.record or captured(session, row):
        return False
    grant = None if row.grant_id is None else ledger.grant_of(session, row.client_id, row.grant_id)
    before = decision_of(row)
    after = recheck(before, grant, now)
    if after is before:
        return False
    for name, value in decision_fields(after).items():
        setattr(row, name, value)
    row.updated_at = now
    session.add(row)
    events.append(audit_entry(DecisionView.of(row), "call.consent_lapsed", actor))
    return True

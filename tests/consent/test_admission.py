"""May this call's audio be kept now? The one check uploads and live captures share."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from consent import calls
from consent.admission import AudioAdmission, admit_audio
from consent.calls import CallRequest
from consent.decision_service import DecisionService
from consent.decisions import CallDecision
from consent.errors import NotFound, StateConflict
from consent.reader import ConsentReader
from storage.db import session_scope
from storage.group_commit import GroupCommit
from tests.consent.ledger_helpers import (
    AUDIT,
    CALLEE,
    CALLER,
    PHONE_KEY,
    add_client,
    add_grant,
    revoke_grant,
)


def _decide(engine: Engine, now: datetime, call_id: str, jurisdiction: str = "US-NY") -> str:
    request = CallRequest.model_validate(
        {
            "call_id": call_id,
            "direction": "inbound",
            "from": CALLER,
            "to": CALLEE,
            "channel": "upload",
            "jurisdiction": jurisdiction,
        }
    )
    commit = GroupCommit(engine, AUDIT, lambda: now)
    service = DecisionService(group_commit=commit, reader=ConsentReader(), phone_key=PHONE_KEY)
    try:
        return service.decide_alone(client_id="acme", call=request, actor="t", now=now).reason
    finally:
        commit.close()


def _admit(engine: Engine, now: datetime, call_id: str) -> AudioAdmission:
    with session_scope(engine) as session:
        return admit_audio(
            session, client_id="acme", call_id=call_id, actor="t", audit=AUDIT, now=now
        )


def _code(admission: AudioAdmission) -> str | None:
    return None if admission.refusal is None else admission.refusal.code


def test_a_recorded_call_is_admitted(engine: Engine, now: datetime) -> None:
    add_client(engine, now)
    add_grant(engine, now)
    assert _decide(engine, now, "c1") == "recorded"
    admission = _admit(engine, now, "c1")
    assert admission.require().call_id == "c1"


def test_a_lapsed_call_is_refused_and_the_lapse_is_kept(engine: Engine, now: datetime) -> None:
    add_client(engine, now)
    grant_id = add_grant(engine, now, valid_until=now + timedelta(hours=1))
    _decide(engine, now, "c1")
    _decide(engine, now, "c2")
    revoke_grant(engine, now + timedelta(minutes=1), grant_id)
    revoked = _admit(engine, now + timedelta(minutes=2), "c1")
    assert _code(revoked) == "consent_revoked"
    with pytest.raises(StateConflict, match="consent_revoked"):
        revoked.require()
    # Committed with the caller's transaction although the answer is a refusal.
    with Session(engine) as session:
        row = calls.get_call(session, client_id="acme", call_id="c1")
        assert (row.record, row.reason, row.purposes) == (False, "consent_revoked", "{}")
        assert row.grant_id == grant_id


def test_an_expired_grant_refuses_with_its_own_code(engine: Engine, now: datetime) -> None:
    add_client(engine, now)
    add_grant(engine, now, valid_until=now + timedelta(hours=1))
    _decide(engine, now, "c1")
    assert _code(_admit(engine, now + timedelta(minutes=59), "c1")) is None
    assert _code(_admit(engine, now + timedelta(hours=1), "c1")) == "consent_expired"


def test_the_refusals_and_their_order(engine: Engine, now: datetime) -> None:
    add_client(engine, now)
    add_grant(engine, now, notice="announcement", notice_sha256="a" * 64)
    assert _decide(engine, now, "ma", jurisdiction="MA") == "awaiting_caller_consent"
    assert _code(_admit(engine, now, "ma")) == "awaiting_caller_consent"
    with session_scope(engine) as session:
        calls.change_state(
            session,
            client_id="acme",
            call_id="ma",
            action="opt-out",
            actor="t",
            audit=AUDIT,
            now=now,
        )
    assert _code(_admit(engine, now, "ma")) == "caller_opted_out"
    with pytest.raises(NotFound):
        _admit(engine, now, "nope")


def test_a_call_never_recordable_is_refused(engine: Engine, now: datetime) -> None:
    add_client(engine, now)
    assert _decide(engine, now, "c1") == "no_consent"
    admission = _admit(engine, now, "c1")
    assert _code(admission) == "recording_not_allowed"
    assert isinstance(admission.call, CallDecision)

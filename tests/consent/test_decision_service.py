"""The consent decision as a service: no HTTP, no API key; any source of calls asks here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from consent.calls import CallRequest
from consent.decision_service import DecisionService
from consent.decisions import CallDecision
from consent.reader import ConsentReader
from storage.audit import AuditEvent
from storage.db import create_db_engine
from storage.group_commit import GroupCommit
from tests.consent.ledger_helpers import AUDIT, CALLEE, CALLER, PHONE_KEY, add_client, add_grant


def _call(call_id: str, channel: str = "siprec") -> CallRequest:
    return CallRequest.model_validate(
        {
            "call_id": call_id,
            "direction": "inbound",
            "from": CALLER,
            "to": CALLEE,
            "channel": channel,
            "jurisdiction": "US-NY",
        }
    )


@pytest.fixture
def service(engine: Engine, now: datetime) -> Iterator[DecisionService]:
    commit = GroupCommit(engine, AUDIT, lambda: now)
    yield DecisionService(group_commit=commit, reader=ConsentReader(), phone_key=PHONE_KEY)
    commit.close()


def test_a_live_source_gets_a_persisted_audited_decision(
    engine: Engine, now: datetime, service: DecisionService
) -> None:
    add_client(engine, now)
    grant_id = add_grant(engine, now)
    answer = asyncio.run(
        service.decide(client_id="acme", call=_call("c1"), actor="siprec:127.0.0.1", now=now)
    )
    assert (answer.record, answer.reason, answer.grant_id) == (True, "recorded", grant_id)
    assert answer.channel == "siprec"
    with Session(engine) as session:
        row = session.exec(select(CallDecision).where(CallDecision.call_id == "c1")).one()
        assert (row.id, row.record, row.decided_at) == (answer.id, True, now)
        event = session.exec(select(AuditEvent).where(AuditEvent.subject == answer.id)).one()
    assert (event.kind, event.actor) == ("call.decided", "siprec:127.0.0.1")
    assert json.loads(event.data)["reason"] == "recorded"


def test_call_setups_at_the_same_moment_each_get_their_own_answer(
    engine: Engine, now: datetime, service: DecisionService
) -> None:
    add_client(engine, now)
    add_grant(engine, now, scope={"channels": ["whip"]})

    async def many() -> list[tuple[str, str]]:
        answers = await asyncio.gather(
            *(
                service.decide(
                    client_id="acme", call=_call(f"c{i}", channel), actor="whip", now=now
                )
                for i, channel in enumerate(["whip", "siprec"] * 10)
            )
        )
        return [(a.call_id, a.reason) for a in answers]

    answers = asyncio.run(many())
    assert answers == [(f"c{i}", "recorded" if i % 2 == 0 else "out_of_scope") for i in range(20)]


def test_decide_alone_answers_the_same(
    engine: Engine, now: datetime, service: DecisionService
) -> None:
    add_client(engine, now)
    add_grant(engine, now)
    answer = service.decide_alone(client_id="acme", call=_call("c1"), actor="t", now=now)
    assert (answer.record, answer.reason) == (True, "recorded")
    again = service.decide_alone(client_id="acme", call=_call("c1"), actor="t", now=now)
    assert again == answer


def test_fails_closed_when_consent_cannot_be_read(tmp_path: Path, now: datetime) -> None:
    (tmp_path / "db").mkdir()  # a directory where the database should be: every open fails
    engine = create_db_engine(f"sqlite:///{tmp_path / 'db'}")
    commit = GroupCommit(engine, AUDIT, lambda: now)
    service = DecisionService(group_commit=commit, reader=ConsentReader(), phone_key=PHONE_KEY)
    try:
        answer = asyncio.run(service.decide(client_id="acme", call=_call("c1"), actor="t", now=now))
        alone = service.decide_alone(client_id="acme", call=_call("c2"), actor="t", now=now)
    finally:
        commit.close()
        engine.dispose()
    for result, call_id in ((answer, "c1"), (alone, "c2")):
        assert (result.record, result.reason, result.call_id) == (
            False,
            "consent_unavailable",
            call_id,
        )
        assert result.purpose_expiries() == {}

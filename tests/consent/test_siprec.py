"""A client's SIPREC settings, who they admit, and each party's jurisdiction in the decision."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from consent.calls import CallRequest, siprec_request
from consent.clients import offboard_client
from consent.decision_service import DecisionService
from consent.decisions import CallDecision
from consent.errors import InvalidRequest, NotFound, StateConflict
from consent.phones import country_of, hash_party, hash_phone, party_name
from consent.reader import ConsentReader
from consent.siprec import (
    SiprecSetting,
    SiprecSettings,
    admits,
    call_jurisdiction,
    call_jurisdictions,
    put_siprec_settings,
    siprec_settings,
)
from storage.audit import AuditEvent
from storage.db import session_scope
from storage.group_commit import GroupCommit
from storage.keyring import Keyring
from tests.consent.ledger_helpers import AUDIT, PHONE_KEY, add_client, add_grant

MOROCCO, BRITAIN, NEW_YORK = "+212612345678", "+442071234567", "+12125550100"


def _put(engine: Engine, now: datetime, **changes: object) -> SiprecSettings:
    fields: dict[str, object] = {
        "client_id": "acme",
        "networks": ["192.0.2.0/24"],
        "jurisdiction": None,
    }
    with session_scope(engine) as session:
        return put_siprec_settings(
            session,
            **(fields | changes),
            actor="admin:k1",
            audit=AUDIT,
            now=now,  # type: ignore[arg-type]
        )


def _settings(networks: tuple[str, ...] = (), jurisdiction: str | None = None) -> SiprecSettings:
    return SiprecSettings(client_id="acme", networks=networks, jurisdiction=jurisdiction)


# -- settings ---------------------------------------------------------------------------------


def test_a_client_without_settings_takes_loopback_only(engine: Engine, now: datetime) -> None:
    add_client(engine, now)
    with engine.connect() as connection:
        settings = siprec_settings(connection, "acme")
    assert settings == _settings()
    assert admits(settings, "127.0.0.1") and admits(settings, "127.9.8.7")
    assert admits(settings, "::1") and admits(settings, "::ffff:127.0.0.1")
    assert not admits(settings, "192.0.2.1") and not admits(settings, "::2")


def test_settings_are_stored_normalised_and_audited(engine: Engine, now: datetime) -> None:
    add_client(engine, now)
    put = _put(
        engine,
        now,
        networks=[" 192.0.2.77/24", "2001:DB8::1/32", "192.0.2.0/24", "10.1.2.3"],
        jurisdiction=" ma ",
    )
    expected = ("192.0.2.0/24", "2001:db8::/32", "10.1.2.3/32")
    assert put == _settings(expected, "MA")
    with Session(engine) as session:
        assert siprec_settings(session, "acme") == put  # a session reads them too
        row = session.get_one(SiprecSetting, "acme")
        event = session.exec(select(AuditEvent).where(AuditEvent.kind == "client.siprec_set")).one()
    assert (row.updated_at, row.updated_by) == (now, "admin:k1")
    assert (event.client_id, event.actor) == ("acme", "admin:k1")
    assert json.loads(event.data) == {"networks": list(expected), "jurisdiction": "MA"}


def test_settings_are_replaced_whole(engine: Engine, now: datetime) -> None:
    add_client(engine, now)
    _put(engine, now, networks=["192.0.2.0/24"], jurisdiction="MA")
    later = now + timedelta(minutes=1)
    assert _put(engine, later, networks=[]) == _settings()
    with Session(engine) as session:
        assert session.get_one(SiprecSetting, "acme").updated_at == later
        assert siprec_settings(session, "acme") == _settings()


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"networks": ["192.0.2.0/33"]}, "invalid_network"),
        ({"networks": ["192.0.2.1", "not a network"]}, "invalid_network"),
        ({"networks": ["example.com/24"]}, "invalid_network"),
        ({"networks": [""]}, "invalid_network"),
        ({"networks": ["fe80::1%eth0/64"]}, "invalid_network"),
        ({"networks": [f"10.0.{i}.0/24" for i in range(101)]}, "invalid_network"),
        ({"jurisdiction": "Morocco"}, "invalid_jurisdiction"),
        ({"jurisdiction": ""}, "invalid_jurisdiction"),
    ],
)
def test_bad_settings_change_nothing(
    engine: Engine, now: datetime, changes: dict[str, object], code: str
) -> None:
    add_client(engine, now)
    before = _put(engine, now, networks=["198.51.100.0/24"], jurisdiction="GB")
    with pytest.raises(InvalidRequest) as caught:
        _put(engine, now, **changes)
    assert caught.value.code == code
    with engine.connect() as connection:
        assert siprec_settings(connection, "acme") == before
        kinds = connection.execute(sa.select(AuditEvent.kind)).scalars().all()  # type: ignore[call-overload]
    assert kinds.count("client.siprec_set") == 1


def test_unknown_or_offboarded_clients_get_no_settings(engine: Engine, now: datetime) -> None:
    with pytest.raises(NotFound):
        _put(engine, now, client_id="ghost")
    add_client(engine, now)
    with session_scope(engine) as session:
        offboard_client(
            session, client_id="acme", actor="t", keyring=Keyring(b"m" * 32), audit=AUDIT, now=now
        )
    with pytest.raises(StateConflict):
        _put(engine, now)
    with Session(engine) as session:
        assert session.get(SiprecSetting, "acme") is None


# -- admits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "admitted"),
    [
        ("192.0.2.1", True),
        ("192.0.2.255", True),
        ("192.0.3.1", False),
        ("::ffff:192.0.2.9", True),  # what a dual-stack socket reports for IPv4
        ("::ffff:192.0.3.9", False),
        ("2001:db8:1::5", True),
        ("2001:db9::5", False),
        ("127.0.0.1", False),  # loopback is the default, not an addition to settings
        ("::1", False),
        ("not an address", False),
        ("", False),
        ("192.0.2.1:5060", False),
    ],
)
def test_admits_only_the_networks_set(source: str, admitted: bool) -> None:
    settings = _settings(("192.0.2.0/24", "2001:db8::/32"))
    assert admits(settings, source) is admitted


def test_a_mapped_network_admits_its_ipv4_sources() -> None:
    settings = _settings(("::ffff:198.51.100.0/120",))
    assert admits(settings, "::ffff:198.51.100.7")
    assert not admits(settings, "::ffff:198.51.101.7")


# -- jurisdictions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "country"),
    [
        (MOROCCO, "MA"),
        ("+33 1 23 45 67 89", "FR"),
        ("+4930123456", "DE"),
        (BRITAIN, "GB"),
        ("+441534123456", "JE"),  # Jersey shares +44 but is not under GB's rule
        ("+34912345678", "ES"),
        ("+390612345678", "IT"),
        ("+3225123456", "BE"),
        ("+31201234567", "NL"),
        ("+35312345678", "IE"),
        ("+77012345678", "KZ"),
        ("+74951234567", "RU"),
        (NEW_YORK, None),  # NANP: the state is not in the number
        ("+2991234567", None),  # a code the table does not know
        ("1001", None),
        ("sip:alice@example.com", None),
        ("sip:+212612345678@sbc.example.com", "MA"),
    ],
)
def test_country_of_a_number(number: str, country: str | None) -> None:
    assert country_of(number) == country


def test_the_header_comes_first() -> None:
    settings = _settings(jurisdiction="MA")
    parties = (BRITAIN, BRITAIN)
    assert call_jurisdictions(header="us-ny", settings=settings, parties=parties) == (
        "US-NY",
        "US-NY",
    )
    assert call_jurisdiction(header="us-ny", settings=settings) == "US-NY"


@pytest.mark.parametrize("header", ["nowhere", "", "  ", "M"])
def test_an_invalid_header_makes_both_parties_unknown(header: str) -> None:
    """Fail closed: the recording client named something, so neither the client's default
    nor the numbers (one-party GB here) may stand in for it."""
    settings = _settings(jurisdiction="GB")
    assert call_jurisdictions(header=header, settings=settings, parties=(BRITAIN, BRITAIN)) == (
        None,
        None,
    )
    assert call_jurisdiction(header=header, settings=settings) is None


def test_the_clients_default_comes_before_the_numbers() -> None:
    settings = _settings(jurisdiction="GB")
    assert call_jurisdictions(header=None, settings=settings, parties=(MOROCCO, None)) == (
        "GB",
        "GB",
    )
    assert call_jurisdiction(header=None, settings=settings) == "GB"


def test_else_each_partys_number_else_unknown() -> None:
    settings = _settings()
    assert call_jurisdictions(header=None, settings=settings, parties=(MOROCCO, BRITAIN)) == (
        "MA",
        "GB",
    )
    assert call_jurisdictions(
        header=None, settings=settings, parties=(NEW_YORK, "sip:bob@example.com")
    ) == (None, None)
    assert call_jurisdictions(header=None, settings=settings, parties=(None, BRITAIN)) == (
        None,
        "GB",
    )
    assert call_jurisdiction(header=None, settings=settings) is None


# -- parties that are not numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("sip:alice@example.com", "alice"),
        ('"Alice" <sips:Alice@example.com;transport=tls>', "Alice"),
        ("sip:1001@pbx.example.com:5060", "1001"),
        ("tel:1001;phone-context=example.com", "1001"),
        ("sip:example.com", "example.com"),
        ("1001", "1001"),
    ],
)
def test_a_partys_name_is_its_user_part_as_written(address: str, name: str) -> None:
    assert party_name(address) == name


def test_a_number_hashes_as_the_call_hook_hashes_it() -> None:
    assert hash_party(PHONE_KEY, "sip:+212612345678@sbc") == hash_phone(PHONE_KEY, MOROCCO)
    assert hash_party(PHONE_KEY, "sip:alice@a.example") == hash_party(PHONE_KEY, "alice")
    assert hash_party(PHONE_KEY, "sip:alice@a.example") != hash_party(PHONE_KEY, "sip:Alice@a")


def test_a_siprec_request_takes_addresses_and_the_hook_does_not() -> None:
    request = siprec_request(
        call_id="s-1", direction="inbound", from_="sip:+212 612 345 678@sbc", to="sip:1001@pbx"
    )
    assert (request.from_, request.to, request.channel) == (MOROCCO, "sip:1001@pbx", "siprec")
    with pytest.raises(ValidationError):
        CallRequest.model_validate(
            {
                "call_id": "c",
                "direction": "inbound",
                "from": "sip:1001@pbx",
                "to": MOROCCO,
                "channel": "siprec",
            }
        )
    for bad in ({"from_": "sip:@"}, {"call_id": "has space"}, {"jurisdiction": "nowhere"}):
        fields = {"call_id": "s-1", "direction": "inbound", "from_": "a", "to": "b"} | bad
        with pytest.raises(ValidationError):
            siprec_request(**fields)  # type: ignore[arg-type]


# -- the decision -------------------------------------------------------------------------------


@pytest.fixture
def service(engine: Engine, now: datetime) -> Iterator[DecisionService]:
    commit = GroupCommit(engine, AUDIT, lambda: now)
    yield DecisionService(group_commit=commit, reader=ConsentReader(), phone_key=PHONE_KEY)
    commit.close()


def test_each_party_brings_its_own_rule(
    engine: Engine, now: datetime, service: DecisionService
) -> None:
    """Caller in Morocco (all-party), callee in Britain (one-party): the caller must agree."""
    add_client(engine, now)
    add_grant(engine, now, notice="announcement", notice_version="v1", notice_sha256="0" * 64)
    request = siprec_request(call_id="s-1", direction="inbound", from_=MOROCCO, to=BRITAIN)
    parties = call_jurisdictions(header=None, settings=_settings(), parties=(MOROCCO, BRITAIN))
    answer = service.decide_alone(
        client_id="acme", call=request, actor="siprec", now=now, jurisdictions=parties
    )
    assert (answer.record, answer.reason, answer.rule, answer.rule_jurisdiction) == (
        True,
        "awaiting_caller_consent",
        "all_party",
        "MA",
    )
    with Session(engine) as session:
        row = session.exec(select(CallDecision).where(CallDecision.call_id == "s-1")).one()
    assert row.jurisdiction is None  # no jurisdiction was named for the whole call
    assert json.loads(row.participants) == [
        hash_phone(PHONE_KEY, MOROCCO),
        hash_phone(PHONE_KEY, BRITAIN),
    ]


def test_the_header_overrides_the_numbers_in_the_decision(
    engine: Engine, now: datetime, service: DecisionService
) -> None:
    add_client(engine, now)
    add_grant(engine, now)  # a contract notice: enough only under a one-party rule
    settings = _settings(jurisdiction="MA")
    header = "GB"
    request = siprec_request(
        call_id="s-2",
        direction="inbound",
        from_=MOROCCO,
        to="sip:1001@pbx.example.com",
        jurisdiction=call_jurisdiction(header=header, settings=settings),
    )
    parties = call_jurisdictions(header=header, settings=settings, parties=(MOROCCO, request.to))
    answer = service.decide_alone(
        client_id="acme", call=request, actor="siprec", now=now, jurisdictions=parties
    )
    assert (answer.record, answer.reason, answer.rule, answer.rule_jurisdiction) == (
        True,
        "recorded",
        "one_party",
        "GB",
    )
    with Session(engine) as session:
        row = session.exec(select(CallDecision).where(CallDecision.call_id == "s-2")).one()
    assert row.jurisdiction == "GB"
    assert json.loads(row.participants)[1] == hash_party(PHONE_KEY, "1001")


def test_without_per_party_jurisdictions_the_requests_one_applies(
    engine: Engine, now: datetime, service: DecisionService
) -> None:
    add_client(engine, now)
    add_grant(engine, now)
    request = siprec_request(
        call_id="s-3", direction="inbound", from_=MOROCCO, to=BRITAIN, jurisdiction="GB"
    )
    answer = service.decide_alone(client_id="acme", call=request, actor="siprec", now=now)
    assert (answer.record, answer.rule_jurisdiction) == (True, "GB")
    unknown = service.decide_alone(
        client_id="acme",
        call=request.model_copy(update={"call_id": "s-4"}),
        actor="siprec",
        now=now,
        jurisdictions=(None, "GB"),
    )
    assert (unknown.record, unknown.reason, unknown.rule_jurisdiction) == (
        False,
        "announcement_required",
        None,
    )

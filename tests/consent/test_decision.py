from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta, timezone
from itertools import permutations
from typing import Any

import pytest

from consent.decision import apply_caller_answer, decide, recheck, unavailable
from consent.domain import (
    CallFacts,
    Channel,
    ClientConsent,
    Decision,
    Direction,
    Grant,
    JurisdictionRule,
    Notice,
    Reason,
    Rule,
)
from consent.jurisdiction import DEFAULT_RULES, RuleBook

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
RULES = RuleBook(
    [
        *DEFAULT_RULES,
        # A second version of New York, to see the reported version follow the book.
        JurisdictionRule("US-NY", Rule.ONE_PARTY, 2, "N.Y. Penal Law § 250.00"),
    ]
)
RETENTION = {"research": 90, "improvement": 30, "optimization": 7}
ONE_PARTY = ("US-NY", "US-NY")
ALL_PARTY = ("US-NY", "US-CA")


def grant(id: str = "g1", **changes: Any) -> Grant:
    fields: dict[str, Any] = {
        "id": id,
        "version": 1,
        "purposes": frozenset({"research", "improvement"}),
        "directions": frozenset(Direction),
        "channels": frozenset(Channel),
        "notice": Notice.CONTRACT,
        "notice_version": None,
        "valid_from": NOW - timedelta(days=30),
        "valid_until": None,
        "revoked_at": None,
    }
    fields.update(changes)
    return Grant(**fields)


def client(
    *grants: Grant,
    active: bool = True,
    retention: Mapping[str, int] = RETENTION,
    objections: frozenset[str] = frozenset(),
) -> ClientConsent:
    return ClientConsent("acme", active, grants, retention, objections)


def call(
    jurisdictions: tuple[str | None, ...] = ONE_PARTY,
    *,
    purposes: frozenset[str] | None = None,
    direction: Direction = Direction.INBOUND,
    channel: Channel = Channel.SIPREC,
    participants: tuple[str, ...] = ("h-caller", "h-agent"),
) -> CallFacts:
    return CallFacts("call-1", direction, channel, participants, jurisdictions, purposes)


def run(who: ClientConsent | None, facts: CallFacts | None = None, now: datetime = NOW) -> Decision:
    return decide(who, facts or call(), RULES, now)


def expiries(**days: int) -> dict[str, datetime]:
    return {purpose: NOW + timedelta(days=count) for purpose, count in days.items()}


# --- the outcomes that record -------------------------------------------------------


def test_one_party_contract_records_every_granted_purpose() -> None:
    decision = run(client(grant(version=4)))
    assert decision == Decision(
        record=True,
        reason=Reason.RECORDED,
        purposes=expiries(improvement=30, research=90),
        grant_id="g1",
        grant_version=4,
        rule=Rule.ONE_PARTY,
        rule_jurisdiction="US-NY",
        rule_version=2,
        announcement_required=False,
        awaiting_caller_consent=False,
    )
    assert list(decision.purposes) == ["improvement", "research"]  # stable order


def test_one_party_announcement_records_and_asks_for_the_announcement() -> None:
    decision = run(client(grant(notice=Notice.ANNOUNCEMENT)))
    assert (decision.record, decision.reason) == (True, Reason.RECORDED)
    assert decision.announcement_required and not decision.awaiting_caller_consent


def test_all_party_announcement_awaits_the_caller() -> None:
    decision = run(client(grant(notice=Notice.ANNOUNCEMENT)), call(ALL_PARTY))
    assert (decision.record, decision.reason) == (True, Reason.AWAITING_CALLER_CONSENT)
    assert decision.announcement_required and decision.awaiting_caller_consent
    assert (decision.rule, decision.rule_jurisdiction, decision.rule_version) == (
        Rule.ALL_PARTY,
        "US-CA",
        1,
    )
    assert decision.purposes == expiries(improvement=30, research=90)
    assert decision.grant_id == "g1"


def test_all_party_contract_cannot_be_recorded() -> None:
    decision = run(client(grant(version=2)), call(ALL_PARTY))
    assert (decision.record, decision.reason) == (False, Reason.ANNOUNCEMENT_REQUIRED)
    assert decision.announcement_required and not decision.awaiting_caller_consent
    assert decision.purposes == {}
    assert (decision.grant_id, decision.grant_version) == ("g1", 2)


@pytest.mark.parametrize("jurisdictions", [(None, None), ("US-NY", None), ("US-NY", "ZZ"), ()])
def test_unknown_jurisdictions_are_all_party(jurisdictions: tuple[str | None, ...]) -> None:
    facts = call(jurisdictions, participants=("h-caller", "h-agent")[: len(jurisdictions)])
    assert run(client(grant()), facts).reason is Reason.ANNOUNCEMENT_REQUIRED
    awaiting = run(client(grant(notice=Notice.ANNOUNCEMENT)), facts)
    assert awaiting.reason is Reason.AWAITING_CALLER_CONSENT
    assert (awaiting.rule, awaiting.rule_jurisdiction, awaiting.rule_version) == (
        Rule.ALL_PARTY,
        None,
        None,
    )


# --- refusals before looking at grants --------------------------------------------


def test_unknown_client_carries_the_rule_of_the_call() -> None:
    decision = run(None, call(ALL_PARTY))
    assert decision == Decision.refused(
        Reason.UNKNOWN_CLIENT, rule=Rule.ALL_PARTY, rule_jurisdiction="US-CA", rule_version=1
    )
    assert not decision.record and decision.purposes == {} and decision.grant_id is None


def test_inactive_client_beats_objection_and_consent() -> None:
    who = client(grant(), active=False, objections=frozenset({"h-caller"}))
    assert run(who).reason is Reason.CLIENT_INACTIVE


@pytest.mark.parametrize("objected", ["h-caller", "h-agent"])
def test_objection_of_any_party_refuses(objected: str) -> None:
    decision = run(client(grant(), objections=frozenset({objected, "h-someone-else"})))
    assert (decision.record, decision.reason) == (False, Reason.SUBJECT_OBJECTION)
    assert decision.rule_jurisdiction == "US-NY"


def test_objection_beats_missing_consent() -> None:
    assert run(client(objections=frozenset({"h-caller"}))).reason is Reason.SUBJECT_OBJECTION
    revoked = grant(revoked_at=NOW - timedelta(days=1))
    who = client(revoked, objections=frozenset({"h-agent"}))
    assert run(who).reason is Reason.SUBJECT_OBJECTION


def test_objections_of_other_numbers_do_not_matter() -> None:
    assert run(client(grant(), objections=frozenset({"h-other"}))).record


# --- validity: revoked, expired, not yet valid -------------------------------------


def test_no_grant_at_all_is_no_consent() -> None:
    assert run(client()).reason is Reason.NO_CONSENT


def test_only_future_grants_is_no_consent() -> None:
    later = grant(valid_from=NOW + TICK)
    assert run(client(later)).reason is Reason.NO_CONSENT


def test_expired_grant() -> None:
    old = grant(valid_from=NOW - timedelta(days=60), valid_until=NOW - timedelta(days=1))
    assert run(client(old)).reason is Reason.CONSENT_EXPIRED


def test_revoked_grant() -> None:
    assert run(client(grant(revoked_at=NOW - timedelta(hours=1)))).reason is Reason.CONSENT_REVOKED


def test_revoked_beats_expired_beats_future_only() -> None:
    revoked = grant("g-rev", revoked_at=NOW - timedelta(days=2))
    expired = grant("g-exp", valid_until=NOW - timedelta(days=1))
    future = grant("g-fut", valid_from=NOW + timedelta(days=1))
    assert run(client(future, expired, revoked)).reason is Reason.CONSENT_REVOKED
    assert run(client(future, expired)).reason is Reason.CONSENT_EXPIRED


def test_a_grant_both_revoked_and_expired_counts_as_revoked() -> None:
    both = grant(valid_until=NOW - timedelta(days=1), revoked_at=NOW - timedelta(days=2))
    assert run(client(both)).reason is Reason.CONSENT_REVOKED


def test_expired_with_a_later_revocation_counts_as_expired() -> None:
    expired = grant(valid_until=NOW - timedelta(days=1), revoked_at=NOW + timedelta(days=1))
    assert run(client(expired)).reason is Reason.CONSENT_EXPIRED


def test_one_live_grant_is_enough_whatever_the_others() -> None:
    others = (
        grant("g-rev", revoked_at=NOW - timedelta(days=2)),
        grant("g-exp", valid_until=NOW - timedelta(days=1)),
        grant("g-fut", valid_from=NOW + timedelta(days=1)),
    )
    decision = run(client(*others, grant("g-live")))
    assert (decision.reason, decision.grant_id) == (Reason.RECORDED, "g-live")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"valid_from": NOW}, Reason.RECORDED),  # valid from this very instant
        ({"valid_from": NOW + TICK}, Reason.NO_CONSENT),
        ({"valid_until": NOW}, Reason.CONSENT_EXPIRED),  # the end is exclusive
        ({"valid_until": NOW + TICK}, Reason.RECORDED),
        ({"revoked_at": NOW}, Reason.CONSENT_REVOKED),  # a revocation applies at once
        ({"revoked_at": NOW + TICK}, Reason.RECORDED),
        ({"revoked_at": NOW - TICK}, Reason.CONSENT_REVOKED),
    ],
)
def test_validity_window_boundaries(changes: dict[str, Any], reason: Reason) -> None:
    assert run(client(grant(**changes))).reason is reason


def test_now_in_another_offset_is_the_same_instant() -> None:
    paris = timezone(timedelta(hours=1))
    at_end = grant(valid_until=NOW)
    assert run(client(at_end), now=NOW.astimezone(paris)).reason is Reason.CONSENT_EXPIRED


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        decide(client(grant()), call(), RULES, NOW.replace(tzinfo=None))


# --- scope ----------------------------------------------------------------------------


def test_direction_out_of_scope() -> None:
    inbound_only = grant(directions=frozenset({Direction.INBOUND}))
    assert run(client(inbound_only), call(direction=Direction.INBOUND)).record
    decision = run(client(inbound_only), call(direction=Direction.OUTBOUND))
    assert (decision.record, decision.reason) == (False, Reason.OUT_OF_SCOPE)


def test_channel_out_of_scope() -> None:
    whip_only = grant(channels=frozenset({Channel.WHIP}))
    assert run(client(whip_only), call(channel=Channel.WHIP)).record
    assert run(client(whip_only), call(channel=Channel.SIPREC)).reason is Reason.OUT_OF_SCOPE
    assert run(client(whip_only), call(channel=Channel.UPLOAD)).reason is Reason.OUT_OF_SCOPE


def test_scope_needs_direction_and_channel_in_the_same_grant() -> None:
    outbound = grant("g-out", directions=frozenset({Direction.OUTBOUND}))
    upload = grant("g-up", channels=frozenset({Channel.UPLOAD}))
    facts = call(direction=Direction.INBOUND, channel=Channel.SIPREC)
    assert run(client(outbound, upload), facts).reason is Reason.OUT_OF_SCOPE


def test_an_expired_grant_in_scope_does_not_help() -> None:
    live_elsewhere = grant("g-live", channels=frozenset({Channel.UPLOAD}))
    expired_here = grant("g-exp", valid_until=NOW - timedelta(days=1))
    assert run(client(live_elsewhere, expired_here)).reason is Reason.OUT_OF_SCOPE


def test_grant_is_picked_among_those_in_scope() -> None:
    newer_elsewhere = grant("g-new", version=9, channels=frozenset({Channel.WHIP}))
    decision = run(client(newer_elsewhere, grant("g-here")))
    assert decision.grant_id == "g-here"


def test_out_of_scope_beats_purpose_not_granted() -> None:
    whip_only = grant(channels=frozenset({Channel.WHIP}))
    facts = call(purposes=frozenset({"marketing"}))
    assert run(client(whip_only), facts).reason is Reason.OUT_OF_SCOPE


# --- purposes ------------------------------------------------------------------------


def test_requested_purposes_are_the_ones_recorded() -> None:
    facts = call(purposes=frozenset({"research"}))
    assert run(client(grant()), facts).purposes == expiries(research=90)


def test_each_purpose_expires_after_its_own_retention() -> None:
    all_three = grant(purposes=frozenset(RETENTION))
    decision = run(
        client(all_three, retention={"research": 365, "improvement": 1, "optimization": 45})
    )
    assert decision.purposes == {
        "research": datetime(2027, 11, 28, 12, tzinfo=UTC),
        "improvement": datetime(2026, 11, 29, 12, tzinfo=UTC),
        "optimization": datetime(2027, 1, 12, 12, tzinfo=UTC),
    }


def test_purpose_outside_every_grant_is_not_granted() -> None:
    decision = run(client(grant()), call(purposes=frozenset({"research", "optimization"})))
    assert (decision.record, decision.reason) == (False, Reason.PURPOSE_NOT_GRANTED)
    assert decision.purposes == {} and decision.grant_id is None


def test_purposes_must_come_from_one_grant() -> None:
    research = grant("g-r", purposes=frozenset({"research"}))
    optimization = grant("g-o", purposes=frozenset({"optimization"}))
    facts = call(purposes=frozenset({"research", "optimization"}))
    assert run(client(research, optimization), facts).reason is Reason.PURPOSE_NOT_GRANTED
    decision = run(client(research, optimization), call(purposes=frozenset({"optimization"})))
    assert decision.grant_id == "g-o"


def test_empty_request_is_not_granted() -> None:
    assert run(client(grant()), call(purposes=frozenset())).reason is Reason.PURPOSE_NOT_GRANTED


def test_requested_purpose_without_retention_is_not_granted() -> None:
    with_marketing = grant(purposes=frozenset({"research", "marketing"}))
    facts = call(purposes=frozenset({"research", "marketing"}))
    assert run(client(with_marketing), facts).reason is Reason.PURPOSE_NOT_GRANTED


def test_unrequested_purposes_without_retention_are_left_out() -> None:
    with_marketing = grant(purposes=frozenset({"research", "marketing"}))
    assert run(client(with_marketing)).purposes == expiries(research=90)


def test_grant_with_no_recordable_purpose_is_not_granted() -> None:
    only_marketing = grant(purposes=frozenset({"marketing"}))
    assert run(client(only_marketing)).reason is Reason.PURPOSE_NOT_GRANTED


def test_purpose_not_granted_beats_announcement_required() -> None:
    facts = call(ALL_PARTY, purposes=frozenset({"optimization"}))
    assert run(client(grant()), facts).reason is Reason.PURPOSE_NOT_GRANTED


# --- choosing the grant ----------------------------------------------------------------


def test_without_a_request_the_grant_with_most_purposes_wins() -> None:
    narrow = grant("g-narrow", version=5, purposes=frozenset({"research"}))
    wide = grant("g-wide", version=1, purposes=frozenset(RETENTION))
    decision = run(client(narrow, wide))
    assert decision.grant_id == "g-wide"
    assert set(decision.purposes) == set(RETENTION)


def test_purposes_without_retention_do_not_count_towards_most() -> None:
    padded = grant("g-padded", purposes=frozenset({"research", "marketing", "sales"}))
    real = grant("g-real", purposes=frozenset({"research", "improvement"}))
    assert run(client(padded, real)).grant_id == "g-real"


def test_with_a_request_the_number_of_purposes_does_not_matter() -> None:
    wide = grant("g-wide", version=1, purposes=frozenset(RETENTION))
    narrow = grant("g-narrow", version=2, purposes=frozenset({"research"}))
    decision = run(client(wide, narrow), call(purposes=frozenset({"research"})))
    assert decision.grant_id == "g-narrow"
    assert decision.purposes == expiries(research=90)


def test_ties_go_to_the_highest_version() -> None:
    decision = run(client(grant("g-a", version=2), grant("g-b", version=3), grant("g-c")))
    assert (decision.grant_id, decision.grant_version) == ("g-b", 3)


def test_then_to_the_latest_valid_from() -> None:
    older = grant("g-a", valid_from=NOW - timedelta(days=9))
    newer = grant("g-b", valid_from=NOW - timedelta(days=2))
    assert run(client(newer, older)).grant_id == "g-b"
    assert run(client(older, newer)).grant_id == "g-b"


def test_then_to_the_smallest_id() -> None:
    assert run(client(grant("g-b"), grant("g-a"), grant("g-c"))).grant_id == "g-a"


def test_all_party_prefers_a_grant_that_can_ask_the_caller() -> None:
    contract = grant("g-contract", version=7, purposes=frozenset(RETENTION))
    announced = grant("g-announced", notice=Notice.ANNOUNCEMENT)
    decision = run(client(contract, announced), call(ALL_PARTY))
    assert (decision.reason, decision.grant_id) == (
        Reason.AWAITING_CALLER_CONSENT,
        "g-announced",
    )
    asked = run(client(contract, announced), call(ALL_PARTY, purposes=frozenset({"research"})))
    assert asked.grant_id == "g-announced"
    # One-party calls have no such preference: the usual order applies.
    assert run(client(contract, announced)).grant_id == "g-contract"


# --- the caller's answer -------------------------------------------------------------


def _awaiting() -> Decision:
    return run(client(grant(notice=Notice.ANNOUNCEMENT)), call(ALL_PARTY))


def test_caller_accepts() -> None:
    awaiting = _awaiting()
    decision = apply_caller_answer(awaiting, accepted=True)
    assert decision == replace(
        awaiting, reason=Reason.RECORDED, record=True, awaiting_caller_consent=False
    )
    assert decision.purposes == awaiting.purposes != {}
    assert decision.announcement_required


def test_caller_declines() -> None:
    awaiting = _awaiting()
    decision = apply_caller_answer(awaiting, accepted=False)
    assert (decision.record, decision.reason) == (False, Reason.CALLER_DECLINED)
    assert decision.purposes == {} and not decision.awaiting_caller_consent
    # What the answer was given to stays on the record.
    assert (decision.grant_id, decision.rule_jurisdiction) == ("g1", "US-CA")


@pytest.mark.parametrize(
    "make",
    [
        lambda: run(client(grant())),  # recorded, one-party
        lambda: run(None),  # refused
        lambda: apply_caller_answer(_awaiting(), accepted=True),  # already answered
        lambda: apply_caller_answer(_awaiting(), accepted=False),
    ],
)
def test_an_answer_nobody_waits_for_is_refused(make: Callable[[], Decision]) -> None:
    decision = make()
    with pytest.raises(ValueError, match="no caller answer expected"):
        apply_caller_answer(decision, accepted=True)


# --- consent unavailable ------------------------------------------------------------


def test_unavailable_fails_closed() -> None:
    assert unavailable() == Decision(
        record=False,
        reason=Reason.CONSENT_UNAVAILABLE,
        purposes={},
        grant_id=None,
        grant_version=None,
        rule=Rule.ALL_PARTY,
        rule_jurisdiction=None,
        rule_version=None,
        announcement_required=False,
        awaiting_caller_consent=False,
    )
    assert unavailable(Rule.ONE_PARTY).rule is Rule.ONE_PARTY


# --- every reason, and the value types ---------------------------------------------


def test_reason_codes_are_stable() -> None:
    assert [reason.value for reason in Reason] == [
        "recorded",
        "awaiting_caller_consent",
        "caller_declined",
        "unknown_client",
        "client_inactive",
        "no_consent",
        "consent_expired",
        "consent_revoked",
        "purpose_not_granted",
        "out_of_scope",
        "subject_objection",
        "announcement_required",
        "consent_unavailable",
    ]


def test_every_reason_is_reachable() -> None:
    announced = client(grant(notice=Notice.ANNOUNCEMENT))
    reached = {
        run(client(grant())).reason,
        _awaiting().reason,
        apply_caller_answer(_awaiting(), accepted=False).reason,
        run(None).reason,
        run(client(grant(), active=False)).reason,
        run(client()).reason,
        run(client(grant(valid_until=NOW))).reason,
        run(client(grant(revoked_at=NOW))).reason,
        run(client(grant()), call(purposes=frozenset({"optimization"}))).reason,
        run(client(grant(channels=frozenset({Channel.WHIP})))).reason,
        run(client(grant(), objections=frozenset({"h-agent"}))).reason,
        run(client(grant()), call(ALL_PARTY)).reason,
        unavailable().reason,
        run(announced, call(ALL_PARTY)).reason,
    }
    assert reached == set(Reason)


def test_decisions_are_immutable() -> None:
    decision = run(client(grant()))
    with pytest.raises(FrozenInstanceError):
        decision.record = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        decision.purposes["research"] = NOW  # type: ignore[index]


def test_call_facts_need_one_jurisdiction_per_party() -> None:
    with pytest.raises(ValueError, match="call-1: 1 jurisdictions for 2 participants"):
        call(("US-NY",))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": ""}, "grant id must not be empty"),
        ({"version": 0}, "g1: version must be >= 1"),
        ({"purposes": frozenset()}, "g1: purposes must not be empty"),
        ({"directions": frozenset()}, "g1: directions must not be empty"),
        ({"channels": frozenset()}, "g1: channels must not be empty"),
        ({"valid_from": datetime(2026, 1, 1)}, "valid_from must be timezone-aware"),
        ({"revoked_at": datetime(2026, 1, 1)}, "revoked_at must be timezone-aware"),
        ({"valid_until": NOW - timedelta(days=30)}, "g1: valid_until must be after valid_from"),
    ],
)
def test_malformed_grants_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grant(**changes)


def test_retention_must_be_at_least_a_day() -> None:
    with pytest.raises(ValueError, match="acme: retention of 'research' must be >= 1 day, got 0"):
        client(retention={"research": 0})


def test_client_snapshot_does_not_follow_later_changes() -> None:
    retention = dict(RETENTION)
    who = client(grant(), retention=retention)
    retention["research"] = 1
    assert run(who).purposes == expiries(improvement=30, research=90)


def test_the_order_of_the_grants_does_not_change_the_choice() -> None:
    grants = [
        grant("g-b", version=2),
        grant("g-a", version=2),
        grant("g-old", version=2, valid_from=NOW - timedelta(days=90)),
        grant("g-v1", version=1, purposes=frozenset(RETENTION)),
    ]
    for requested in (None, frozenset({"research"})):
        chosen = {
            run(client(*order), call(purposes=requested)).grant_id for order in permutations(grants)
        }
        assert chosen == ({"g-v1"} if requested is None else {"g-a"})


# --- a decision checked again when the call is used ----------------------------------


def test_recheck_leaves_a_decision_under_a_live_grant_alone() -> None:
    live = grant(valid_until=NOW + timedelta(days=1), revoked_at=NOW + TICK)
    decided = run(client(live))
    assert recheck(decided, live, NOW) is decided


@pytest.mark.parametrize(
    ("ended", "reason"),
    [
        ({"revoked_at": NOW}, Reason.CONSENT_REVOKED),
        ({"valid_until": NOW}, Reason.CONSENT_EXPIRED),
        ({"revoked_at": NOW - TICK, "valid_until": NOW - TICK}, Reason.CONSENT_REVOKED),
    ],
)
def test_recheck_stops_a_call_whose_grant_ended(ended: dict[str, Any], reason: Reason) -> None:
    announced = {"notice": Notice.ANNOUNCEMENT}
    decided = run(client(grant(**announced)), call(ALL_PARTY), now=NOW - timedelta(hours=1))
    assert decided.awaiting_caller_consent
    later = recheck(decided, grant(**announced, **ended), NOW)
    assert (later.record, later.reason, later.purposes) == (False, reason, {})
    assert not later.awaiting_caller_consent and not later.announcement_required
    # The call still names the grant and the rule it was decided under.
    assert (later.grant_id, later.grant_version) == (decided.grant_id, decided.grant_version)
    assert (later.rule, later.rule_jurisdiction) == (decided.rule, decided.rule_jurisdiction)


def test_recheck_fails_closed_without_the_grant() -> None:
    decided = run(client(grant()))
    assert recheck(decided, None, NOW).reason is Reason.NO_CONSENT
    assert recheck(decided, grant("other"), NOW).reason is Reason.NO_CONSENT


def test_recheck_leaves_refusals_alone() -> None:
    refused = run(client(grant(revoked_at=NOW)))
    assert recheck(refused, None, NOW) is refused

from __future__ import annotations

import pytest

from consent.domain import JurisdictionRule, Rule
from consent.jurisdiction import DEFAULT_RULES, RuleBook, normalize_jurisdiction

ALL_PARTY_STATES = ["US-CA", "US-FL", "US-IL", "US-MD", "US-MA", "US-MT", "US-NV", "US-NH"]
ALL_PARTY_STATES += ["US-PA", "US-WA"]


def _book(*rules: tuple[str, Rule, int]) -> RuleBook:
    return RuleBook(
        JurisdictionRule(code, rule, version, f"ref {code} v{version}")
        for code, rule, version in rules
    )


BOOK = _book(
    ("US-NY", Rule.ONE_PARTY, 1),
    ("GB", Rule.ONE_PARTY, 2),
    ("US-CA", Rule.ALL_PARTY, 3),
    ("MA", Rule.ALL_PARTY, 1),
)


# --- normalize_jurisdiction -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [("MA", "MA"), (" us-ca ", "US-CA"), ("gb", "GB"), ("GB-SCT", "GB-SCT"), ("FR-75", "FR-75")],
)
def test_normalize_accepts_iso_codes(text: str, code: str) -> None:
    assert normalize_jurisdiction(text) == code


@pytest.mark.parametrize("text", ["", "  ", "U", "USA", "US-", "US-CALI", "us_ca", "1A", "US CA"])
def test_normalize_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid jurisdiction .*expected an ISO 3166 code"):
        normalize_jurisdiction(text)


# --- JurisdictionRule ---------------------------------------------------------------


def test_rule_entries_are_validated() -> None:
    with pytest.raises(ValueError, match="'us-ca' is not an upper-case ISO 3166 code"):
        JurisdictionRule("us-ca", Rule.ALL_PARTY, 1, "Cal. Penal Code § 632")
    with pytest.raises(ValueError, match="US-CA: version must be >= 1"):
        JurisdictionRule("US-CA", Rule.ALL_PARTY, 0, "Cal. Penal Code § 632")
    with pytest.raises(ValueError, match="US-CA: reference must not be empty"):
        JurisdictionRule("US-CA", Rule.ALL_PARTY, 1, " ")


# --- RuleBook: versions -------------------------------------------------------------


@pytest.mark.parametrize("order", [(1, 3, 2), (3, 2, 1), (2, 1, 3)])
def test_highest_version_wins_whatever_the_order(order: tuple[int, int, int]) -> None:
    rules = {1: Rule.ONE_PARTY, 2: Rule.ONE_PARTY, 3: Rule.ALL_PARTY}
    book = _book(*(("FR", rules[v], v) for v in order))
    assert len(book) == 1
    entry = book.get("FR")
    assert entry is not None and entry.version == 3 and entry.reference == "ref FR v3"
    assert book.rule_for(["FR"]) == (Rule.ALL_PARTY, "FR", 3)


def test_a_newer_version_can_relax_the_rule() -> None:
    book = _book(("GB", Rule.ALL_PARTY, 1), ("GB", Rule.ONE_PARTY, 2))
    assert book.rule_for(["GB"]) == (Rule.ONE_PARTY, "GB", 2)


def test_identical_duplicates_are_accepted() -> None:
    book = _book(("MA", Rule.ALL_PARTY, 1), ("MA", Rule.ALL_PARTY, 1))
    assert len(book) == 1


def test_conflicting_rules_with_the_same_version_are_rejected() -> None:
    with pytest.raises(ValueError, match="jurisdiction MA: two different rules share version 1"):
        _book(("MA", Rule.ALL_PARTY, 1), ("MA", Rule.ONE_PARTY, 1))


def test_book_lookup_and_iteration() -> None:
    assert BOOK.get("US-NY") == JurisdictionRule("US-NY", Rule.ONE_PARTY, 1, "ref US-NY v1")
    assert BOOK.get("DE") is None
    assert {rule.jurisdiction for rule in BOOK} == {"US-NY", "GB", "US-CA", "MA"}
    assert len(RuleBook([])) == 0


# --- RuleBook.rule_for ------------------------------------------------------------


def test_one_party_only_reports_the_first_party() -> None:
    assert BOOK.rule_for(["US-NY", "GB"]) == (Rule.ONE_PARTY, "US-NY", 1)
    assert BOOK.rule_for(["GB", "US-NY"]) == (Rule.ONE_PARTY, "GB", 2)
    assert BOOK.rule_for(["GB"]) == (Rule.ONE_PARTY, "GB", 2)


def test_all_party_only_reports_the_first_party() -> None:
    assert BOOK.rule_for(["MA", "US-CA"]) == (Rule.ALL_PARTY, "MA", 1)
    assert BOOK.rule_for(["US-CA", "MA"]) == (Rule.ALL_PARTY, "US-CA", 3)


@pytest.mark.parametrize(
    "parties", [("US-NY", "US-CA"), ("US-CA", "US-NY"), ("GB", "US-NY", "US-CA", "GB")]
)
def test_mixed_the_strictest_wins_wherever_it_sits(parties: tuple[str, ...]) -> None:
    assert BOOK.rule_for(parties) == (Rule.ALL_PARTY, "US-CA", 3)


def test_mixed_reports_the_first_all_party_jurisdiction() -> None:
    assert BOOK.rule_for(["US-NY", "MA", "US-CA"]) == (Rule.ALL_PARTY, "MA", 1)


@pytest.mark.parametrize(
    "parties",
    [
        (None,),
        ("US-NY", None),
        (None, "US-NY"),
        ("DE",),  # a valid code the book does not know
        ("US-NY", "DE"),
        ("us-ny",),  # codes are looked up as given: normalize where they enter
        (),
    ],
)
def test_unknown_or_missing_fails_closed(parties: tuple[str | None, ...]) -> None:
    assert BOOK.rule_for(parties) == (Rule.ALL_PARTY, None, None)


def test_unknown_party_before_an_all_party_one_is_reported_as_unknown() -> None:
    assert BOOK.rule_for([None, "US-CA"]) == (Rule.ALL_PARTY, None, None)
    assert BOOK.rule_for(["US-CA", None]) == (Rule.ALL_PARTY, "US-CA", 3)


def test_empty_book_is_all_party_for_everyone() -> None:
    assert RuleBook([]).rule_for(["US-NY"]) == (Rule.ALL_PARTY, None, None)


# --- DEFAULT_RULES ------------------------------------------------------------------


def test_default_rules_are_unique_and_valid() -> None:
    codes = [rule.jurisdiction for rule in DEFAULT_RULES]
    assert len(codes) == len(set(codes))
    assert all(normalize_jurisdiction(code) == code for code in codes)
    assert all(rule.reference.strip() for rule in DEFAULT_RULES)


def test_default_rules_cover_morocco_and_the_us_all_party_states() -> None:
    book = RuleBook(DEFAULT_RULES)
    morocco = book.get("MA")
    assert morocco is not None and morocco.rule is Rule.ALL_PARTY
    assert "447-1" in morocco.reference
    for state in ALL_PARTY_STATES:
        entry = book.get(state)
        assert entry is not None and entry.rule is Rule.ALL_PARTY, state


def test_default_rules_have_one_party_examples_and_no_bare_us() -> None:
    book = RuleBook(DEFAULT_RULES)
    assert book.rule_for(["US-NY", "US-TX"]) == (Rule.ONE_PARTY, "US-NY", 1)
    assert book.rule_for(["GB"])[0] is Rule.ONE_PARTY
    # A caller known only to be in the US may be in an all-party state.
    assert book.get("US") is None
    assert book.rule_for(["US"]) == (Rule.ALL_PARTY, None, None)

"""Jurisdiction rules: whose consent a call needs, decided by where its parties are.

The rules are data (``DEFAULT_RULES``, or rows the caller loads), versioned per
jurisdiction; ``RuleBook`` keeps the newest version of each and answers, for the
parties of one call, which rule applies. It fails closed: a party whose jurisdiction
is unknown, or missing from the book, counts as all-party.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeAlias

from consent.domain import JURISDICTION_CODE, JurisdictionRule, Rule

__all__ = ["DEFAULT_RULES", "RuleBook", "RuleOutcome", "normalize_jurisdiction"]

# (rule, jurisdiction that fired it or None, that rule's version or None)
RuleOutcome: TypeAlias = tuple[Rule, str | None, int | None]

_FAIL_CLOSED: RuleOutcome = (Rule.ALL_PARTY, None, None)

_STATE_STATUTE = "state all-party consent statute"


def _all(code: str, reference: str) -> JurisdictionRule:
    return JurisdictionRule(code, Rule.ALL_PARTY, 1, reference)


def _one(code: str, reference: str) -> JurisdictionRule:
    return JurisdictionRule(code, Rule.ONE_PARTY, 1, reference)


# Only jurisdictions whose rule is well established are listed; any other counts as
# all-party anyway. "US" alone is deliberately absent: federal law is one-party
# (18 U.S.C. § 2511(2)(d)) but a caller known only to be in the US may be in an
# all-party state.
DEFAULT_RULES: tuple[JurisdictionRule, ...] = (
    _all("MA", "Penal Code art. 447-1; Law 09-08 on personal data protection"),
    _all("US-CA", "Cal. Penal Code §§ 632, 632.7"),
    _all("US-FL", "Fla. Stat. § 934.03"),
    _all("US-IL", "720 ILCS 5/14-2"),
    _all("US-MD", "Md. Code, Cts. & Jud. Proc. § 10-402"),
    _all("US-MA", "Mass. Gen. Laws ch. 272, § 99"),
    _all("US-MT", "Mont. Code Ann. § 45-8-213"),
    _all("US-NV", "Nev. Rev. Stat. § 200.620"),
    _all("US-NH", "N.H. Rev. Stat. § 570-A:2"),
    _all("US-PA", "18 Pa. Cons. Stat. § 5703"),
    _all("US-WA", "Rev. Code Wash. § 9.73.030"),
    # Recording words spoken in private without their author's consent is an offence.
    _all("FR", "Code pénal art. 226-1"),
    _all("DE", "StGB § 201 (confidentiality of the spoken word)"),
    _one("US-NY", "N.Y. Penal Law §§ 250.00, 250.05"),
    _one("US-TX", "Tex. Penal Code § 16.02(c)(4)"),
    _one("US-NJ", "N.J. Stat. § 2A:156A-4(d)"),
    _one("US-GA", "Ga. Code § 16-11-66(a)"),
    _one("GB", "Investigatory Powers Act 2016 s. 3; SI 2018/356 (business recording)"),
)


def normalize_jurisdiction(text: str) -> str:
    """``" us-ca "`` → ``"US-CA"``; ``ValueError`` unless it is an ISO 3166 code."""
    code = text.strip().upper()
    if JURISDICTION_CODE.fullmatch(code) is None:
        raise ValueError(
            f"invalid jurisdiction {text!r}: expected an ISO 3166 code such as 'MA' or 'US-CA'"
        )
    return code


class RuleBook:
    """The newest rule of each jurisdiction, and the rule that applies to a call.

    Codes are looked up as given: normalize them with ``normalize_jurisdiction`` where
    they enter; a code that is not in the book (lower-case included) is all-party.
    """

    __slots__ = ("_outcomes", "_rules")

    def __init__(self, rules: Iterable[JurisdictionRule]) -> None:
        newest: dict[str, JurisdictionRule] = {}
        for rule in rules:
            current = newest.get(rule.jurisdiction)
            if current is None or rule.version > current.version:
                newest[rule.jurisdiction] = rule
            elif rule.version == current.version and rule != current:
                raise ValueError(
                    f"jurisdiction {rule.jurisdiction}: two different rules share"
                    f" version {rule.version}"
                )
        self._rules = newest
        # Answers prepared once so that rule_for() only does dictionary look-ups.
        self._outcomes: dict[str, RuleOutcome] = {
            code: (rule.rule, code, rule.version) for code, rule in newest.items()
        }

    def get(self, jurisdiction: str) -> JurisdictionRule | None:
        """The newest rule for ``jurisdiction``, or None if the book has none."""
        return self._rules.get(jurisdiction)

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[JurisdictionRule]:
        return iter(self._rules.values())

    def rule_for(self, jurisdictions: Sequence[str | None]) -> RuleOutcome:
        """The strictest rule among the parties' jurisdictions, and which one fired it.

        all-party beats one-party; an unknown party (None), a code missing from the
        book, or no party at all means all-party with jurisdiction None (fail closed).
        Among parties with the winning rule, the first in order is reported.
        """
        outcomes = self._outcomes
        first: RuleOutcome | None = None
        for code in jurisdictions:
            outcome = _FAIL_CLOSED if code is None else outcomes.get(code, _FAIL_CLOSED)
            # all-party is the strictest rule there is: the first party under it decides.
            if outcome[0] is Rule.ALL_PARTY:
                return outcome
            if first is None:
                first = outcome
        return _FAIL_CLOSED if first is None else first

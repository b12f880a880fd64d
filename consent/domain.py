"""Value types of the consent decision: what decide() reads and what it answers.

Plain frozen dataclasses and string enums, no I/O and no ORM: the persistence layer
maps its rows into these, and the decision engine stays a pure function of them and
of the time it is given. Datetimes must be timezone-aware; constructors reject
malformed values with a precise ``ValueError`` so that bad data fails where it enters,
not in the middle of a decision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType


class Direction(StrEnum):
    """Which way the call goes, from the client's point of view."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Channel(StrEnum):
    """How the audio reaches callrec."""

    SIPREC = "siprec"
    WHIP = "whip"
    UPLOAD = "upload"


class Notice(StrEnum):
    """How the caller is told about the recording under a grant."""

    ANNOUNCEMENT = "announcement"  # the platform plays a notice and can collect an answer
    CONTRACT = "contract"  # the callers were informed beforehand, e.g. by contract terms


class Rule(StrEnum):
    """Whose consent a jurisdiction requires before a call may be recorded."""

    ONE_PARTY = "one_party"  # the client's grant suffices
    ALL_PARTY = "all_party"  # the caller must consent too


class Reason(StrEnum):
    """Stable reason codes of a decision; stored, reported and sent to integrators."""

    RECORDED = "recorded"
    AWAITING_CALLER_CONSENT = "awaiting_caller_consent"
    CALLER_DECLINED = "caller_declined"
    UNKNOWN_CLIENT = "unknown_client"
    CLIENT_INACTIVE = "client_inactive"
    NO_CONSENT = "no_consent"
    CONSENT_EXPIRED = "consent_expired"
    CONSENT_REVOKED = "consent_revoked"
    PURPOSE_NOT_GRANTED = "purpose_not_granted"
    OUT_OF_SCOPE = "out_of_scope"
    SUBJECT_OBJECTION = "subject_objection"
    ANNOUNCEMENT_REQUIRED = "announcement_required"
    CONSENT_UNAVAILABLE = "consent_unavailable"


# ISO 3166-1 alpha-2 country, optionally an ISO 3166-2 subdivision: "MA", "US-CA", "GB-SCT".
JURISDICTION_CODE = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")


@dataclass(frozen=True, slots=True)
class Grant:
    """The current state of one consent grant, as derived from the ledger.

    Live at ``now`` when ``valid_from <= now``, ``valid_until`` is unset or after
    ``now`` and ``revoked_at`` is unset or after ``now``: a revocation takes effect at
    the instant it is recorded.
    """

    id: str
    version: int
    purposes: frozenset[str]
    directions: frozenset[Direction]
    channels: frozenset[Channel]
    notice: Notice
    notice_version: str | None
    valid_from: datetime
    valid_until: datetime | None
    revoked_at: datetime | None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("grant id must not be empty")
        if self.version < 1:
            raise ValueError(f"grant {self.id}: version must be >= 1, got {self.version}")
        for name in ("purposes", "directions", "channels"):
            if not getattr(self, name):
                raise ValueError(f"grant {self.id}: {name} must not be empty")
        _require_aware("valid_from", self.valid_from)
        _require_aware("valid_until", self.valid_until)
        _require_aware("revoked_at", self.revoked_at)
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError(f"grant {self.id}: valid_until must be after valid_from")


@dataclass(frozen=True, slots=True)
class ClientConsent:
    """A snapshot of everything decide() needs about one client.

    ``retention_days`` holds the effective days per purpose for this client (defaults
    merged with its overrides); a purpose missing from it cannot be recorded.
    ``objections`` holds the keyed hashes of the numbers on its do-not-record list; a
    snapshot read for one call may hold only those of that call's parties.
    """

    client_id: str
    active: bool
    grants: tuple[Grant, ...]
    retention_days: Mapping[str, int]
    objections: frozenset[str]
    # Derived once per snapshot rather than on every call: decide() runs per call setup.
    retention: Mapping[str, timedelta] = field(init=False, repr=False, compare=False)
    recordable: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        days = dict(self.retention_days)
        for purpose, count in days.items():
            if count < 1:
                raise ValueError(
                    f"client {self.client_id}: retention of {purpose!r} must be >= 1 day,"
                    f" got {count}"
                )
        object.__setattr__(self, "retention_days", MappingProxyType(days))
        deltas = {purpose: timedelta(days=count) for purpose, count in days.items()}
        object.__setattr__(self, "retention", MappingProxyType(deltas))
        object.__setattr__(self, "recordable", frozenset(days))


@dataclass(frozen=True, slots=True)
class JurisdictionRule:
    """One versioned entry of the rule book: the consent rule of a jurisdiction.

    ``jurisdiction`` is an upper-case ISO 3166 code (``MA``, ``US-CA``, ``FR``);
    ``reference`` cites the law so that a stored decision can say why.
    """

    jurisdiction: str
    rule: Rule
    version: int
    reference: str

    def __post_init__(self) -> None:
        if JURISDICTION_CODE.fullmatch(self.jurisdiction) is None:
            raise ValueError(
                f"jurisdiction rule: {self.jurisdiction!r} is not an upper-case ISO 3166 code"
                " such as 'MA' or 'US-CA'"
            )
        if self.version < 1:
            raise ValueError(f"jurisdiction rule {self.jurisdiction}: version must be >= 1")
        if not self.reference.strip():
            raise ValueError(f"jurisdiction rule {self.jurisdiction}: reference must not be empty")


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the platform tells about a call when it asks whether to record it.

    ``participants`` are keyed hashes of the parties' numbers and ``jurisdictions``
    holds one entry per party, in the same order (None when unknown). ``purposes`` is
    what the platform asks for; None means every purpose the consent allows.
    """

    call_id: str
    direction: Direction
    channel: Channel
    participants: tuple[str, ...]
    jurisdictions: tuple[str | None, ...]
    purposes: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if len(self.jurisdictions) != len(self.participants):
            raise ValueError(
                f"call {self.call_id}: {len(self.jurisdictions)} jurisdictions for"
                f" {len(self.participants)} participants; give one per party (None if unknown)"
            )


_NO_PURPOSES: Mapping[str, datetime] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one call, with what a compliance officer needs to explain it.

    ``purposes`` maps each recorded purpose to its expiry and is empty when nothing is
    recorded. ``rule``, ``rule_jurisdiction`` and ``rule_version`` name the
    jurisdiction rule that applies to the call (jurisdiction None: unknown or not in
    the rule book, so all-party by default). ``awaiting_caller_consent`` means the
    platform must play the notice and report the caller's answer before any audio is
    kept.
    """

    record: bool
    reason: Reason
    purposes: Mapping[str, datetime]
    grant_id: str | None
    grant_version: int | None
    rule: Rule
    rule_jurisdiction: str | None
    rule_version: int | None
    announcement_required: bool
    awaiting_caller_consent: bool

    @classmethod
    def refused(
        cls,
        reason: Reason,
        *,
        rule: Rule = Rule.ALL_PARTY,
        rule_jurisdiction: str | None = None,
        rule_version: int | None = None,
        grant: Grant | None = None,
        announcement_required: bool = False,
    ) -> Decision:
        """A decision not to record, for ``reason``; the rule defaults to all-party."""
        return cls(
            record=False,
            reason=reason,
            purposes=_NO_PURPOSES,
            grant_id=None if grant is None else grant.id,
            grant_version=None if grant is None else grant.version,
            rule=rule,
            rule_jurisdiction=rule_jurisdiction,
            rule_version=rule_version,
            announcement_required=announcement_required,
            awaiting_caller_consent=False,
        )

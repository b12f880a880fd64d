"""Reference data kept as data, not code: purposes, jurisdiction rules, retention overrides."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, select

from consent.domain import JurisdictionRule, Rule
from consent.errors import InvalidRequest
from consent.jurisdiction import RuleBook
from storage.audit import AuditLog
from storage.types import UTCDateTime


class Purpose(SQLModel, table=True):
    """A purpose recordings may serve, with its legal basis and retention bounds."""

    __tablename__ = "purposes"

    name: str = Field(primary_key=True, max_length=40)
    description: str = Field(sa_type=sa.Text)
    legal_basis: str = Field(max_length=200)
    regulator_reference: str | None = Field(default=None, max_length=200)
    default_retention_days: int
    max_retention_days: int
    storage_countries: str = Field(default="[]", sa_type=sa.Text)  # JSON list of ISO codes


_PURPOSES: sa.Table = Purpose.__table__  # type: ignore[attr-defined]


class PurposePublic(SQLModel):
    name: str = Field(description="The purpose's name, used in grants and calls")
    description: str = Field(description="What recordings kept for it are used for")
    legal_basis: str = Field(description="The legal basis of the processing")
    regulator_reference: str | None = Field(description="The regulator's reference, if any")
    default_retention_days: int = Field(description="Days a recording keeps it by default")
    max_retention_days: int = Field(description="The most days a client may set")
    storage_countries: list[str] = Field(description="Countries its recordings may be stored in")


class JurisdictionRuleRow(SQLModel, table=True):
    """One version of a jurisdiction's recording-consent rule."""

    __tablename__ = "jurisdiction_rules"

    jurisdiction: str = Field(primary_key=True, max_length=10)
    version: int = Field(primary_key=True)
    rule: Rule = Field(sa_type=sa.String(20))
    reference: str = Field(sa_type=sa.Text)


class RetentionOverride(SQLModel, table=True):
    """A client's own retention for one purpose, within the purpose's maximum."""

    __tablename__ = "retention_overrides"

    client_id: str = Field(primary_key=True, foreign_key="clients.id", max_length=63)
    purpose: str = Field(primary_key=True, foreign_key="purposes.name", max_length=40)
    days: int
    updated_at: datetime = Field(sa_type=UTCDateTime)


@dataclass(frozen=True)
class Reference:
    """The reference data a decision needs: default retention per purpose, the rule book.

    Both change only through migrations (they are seeded there), so a process may load
    them once and keep them: a migration that changes them is deployed with a restart.
    """

    default_days: Mapping[str, int]
    rules: RuleBook


def load_reference(session: Session) -> Reference:
    """Read the purposes' default retention and the jurisdiction rule book."""
    days = session.execute(sa.select(_PURPOSES.c.name, _PURPOSES.c.default_retention_days))
    return Reference(
        default_days=MappingProxyType({name: count for name, count in days}),
        rules=rule_book(session),
    )


def purposes(session: Session) -> dict[str, Purpose]:
    return {p.name: p for p in session.exec(select(Purpose))}


def to_public(purpose: Purpose) -> PurposePublic:
    return PurposePublic(
        **purpose.model_dump(exclude={"storage_countries"}),
        storage_countries=json.loads(purpose.storage_countries),
    )


def rule_book(session: Session) -> RuleBook:
    rows = session.exec(select(JurisdictionRuleRow))
    return RuleBook(
        JurisdictionRule(
            jurisdiction=r.jurisdiction, rule=Rule(r.rule), version=r.version, reference=r.reference
        )
        for r in rows
    )


def retention_days(session: Session, client_id: str) -> dict[str, int]:
    """Effective days per purpose for a client: its overrides over the defaults."""
    days = {p.name: p.default_retention_days for p in session.exec(select(Purpose))}
    overrides = session.exec(
        select(RetentionOverride).where(RetentionOverride.client_id == client_id)
    )
    days.update({o.purpose: o.days for o in overrides})
    return days


def set_retention(
    session: Session,
    *,
    client_id: str,
    days: Mapping[str, int],
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> dict[str, int]:
    """Set a client's retention per purpose; each must stay within 1..the purpose's maximum."""
    known = purposes(session)
    for name, count in days.items():
        if name not in known:
            raise InvalidRequest(f"unknown purpose {name}", code="unknown_purpose")
        if not 1 <= count <= known[name].max_retention_days:
            raise InvalidRequest(
                f"{name}: {count} days is outside 1..{known[name].max_retention_days}",
                code="retention_out_of_bounds",
            )
    for name, count in days.items():
        row = session.get(RetentionOverride, (client_id, name))
        row = row or RetentionOverride(
            client_id=client_id, purpose=name, days=count, updated_at=now
        )
        row.days, row.updated_at = count, now
        session.add(row)
    audit.append(
        session, kind="retention.set", actor=actor, now=now, client_id=client_id, data=dict(days)
    )
    session.flush()
    return retention_days(session, client_id)

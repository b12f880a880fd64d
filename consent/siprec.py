"""A client's SIPREC settings: who may send its calls, and under which rule by default.

A recording client (an SBC, a PBX) names the client in its Request-URI; the settings
say from which networks such an ``INVITE`` is taken (with none set, only loopback:
nothing from the network until an admin says so) and the jurisdiction its calls fall
under when the client knows it. ``call_jurisdictions`` then resolves each party's
jurisdiction for the decision.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlmodel import Field, Session, SQLModel

from consent.clients import require_active
from consent.errors import InvalidRequest
from consent.jurisdiction import normalize_jurisdiction
from consent.phones import country_of
from storage.audit import AuditLog
from storage.types import UTCDateTime

__all__ = [
    "JURISDICTION_HEADER",
    "MAX_NETWORKS",
    "SiprecSetting",
    "SiprecSettings",
    "SiprecSettingsPublic",
    "SiprecSettingsRequest",
    "admits",
    "call_jurisdiction",
    "call_jurisdictions",
    "put_siprec_settings",
    "siprec_settings",
]

JURISDICTION_HEADER = "X-Callrec-Jurisdiction"
MAX_NETWORKS = 100

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LOOPBACK: tuple[_Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


class SiprecSetting(SQLModel, table=True):
    """A client's SIPREC settings as stored: one row per client that has any."""

    __tablename__ = "siprec_settings"

    client_id: str = Field(primary_key=True, foreign_key="clients.id", max_length=63)
    networks: str = Field(default="[]", sa_type=sa.Text)  # JSON list of normalised CIDRs
    jurisdiction: str | None = Field(default=None, max_length=10)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    updated_by: str = Field(max_length=100)


_TABLE: sa.Table = SiprecSetting.__table__  # type: ignore[attr-defined]
_BY_CLIENT = sa.select(_TABLE.c.networks, _TABLE.c.jurisdiction).where(
    _TABLE.c.client_id == sa.bindparam("client_id")
)


@dataclass(frozen=True)
class SiprecSettings:
    """What the recording server needs of a client's settings (none set: loopback only)."""

    client_id: str
    networks: tuple[str, ...]
    jurisdiction: str | None


class SiprecSettingsRequest(BaseModel):
    """The body of ``PUT /v1/clients/{client}/siprec``."""

    model_config = ConfigDict(extra="forbid")

    networks: list[str] = PydanticField(
        max_length=MAX_NETWORKS,
        description="The networks (CIDR, IPv4 or IPv6) INVITEs are taken from; empty: only "
        "loopback",
        examples=[["192.0.2.0/24", "2001:db8::/32"]],
    )
    jurisdiction: str | None = PydanticField(
        default=None,
        description="ISO 3166 code of the client's calls when the INVITE does not say "
        "(MA, US-CA); absent: from the parties' numbers",
        examples=["MA"],
    )


class SiprecSettingsPublic(BaseModel):
    """A client's SIPREC settings as the API and the CLI show them."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    client_id: str
    """The client."""
    networks: list[str]
    """The networks INVITEs are taken from (normalised CIDR); empty: only loopback."""
    jurisdiction: str | None
    """The jurisdiction of the client's calls, unless the INVITE names one."""

    @classmethod
    def of(cls, settings: SiprecSettings) -> SiprecSettingsPublic:
        return cls(
            client_id=settings.client_id,
            networks=list(settings.networks),
            jurisdiction=settings.jurisdiction,
        )


def siprec_settings(connection: Session | sa.Connection, client_id: str) -> SiprecSettings:
    """The client's settings; a client without any (or unknown) gets loopback only."""
    row = connection.execute(_BY_CLIENT, {"client_id": client_id}).first()
    if row is None:
        return SiprecSettings(client_id=client_id, networks=(), jurisdiction=None)
    return SiprecSettings(
        client_id=client_id, networks=tuple(json.loads(row.networks)), jurisdiction=row.jurisdiction
    )


def put_siprec_settings(
    session: Session,
    *,
    client_id: str,
    networks: Sequence[str],
    jurisdiction: str | None,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> SiprecSettings:
    """Replace an active client's settings; bad input raises and changes nothing.

    Networks are normalised (``10.1.2.3/8`` → ``10.0.0.0/8``) and kept once each, in
    the order given; an empty list leaves only loopback.
    """
    require_active(session, client_id)
    normalised = _normalise_networks(networks)
    code = None if jurisdiction is None else _normalise_jurisdiction(jurisdiction)
    row = session.get(SiprecSetting, client_id)
    if row is None:
        row = SiprecSetting(client_id=client_id, updated_at=now, updated_by=actor)
    row.networks, row.jurisdiction = json.dumps(normalised), code
    row.updated_at, row.updated_by = now, actor
    session.add(row)
    audit.append(
        session,
        kind="client.siprec_set",
        actor=actor,
        now=now,
        client_id=client_id,
        data={"networks": normalised, "jurisdiction": code},
    )
    session.flush()
    return SiprecSettings(client_id=client_id, networks=tuple(normalised), jurisdiction=code)


def _normalise_networks(networks: Sequence[str]) -> list[str]:
    if len(networks) > MAX_NETWORKS:
        raise InvalidRequest(
            f"at most {MAX_NETWORKS} networks, got {len(networks)}", code="invalid_network"
        )
    normalised: list[str] = []
    for text in networks:
        try:
            if "%" in text:  # a zone names an interface of one host, not a network
                raise ValueError(text)
            network = str(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise InvalidRequest(
                f"invalid network {text!r}: expected a CIDR such as 192.0.2.0/24 or 2001:db8::/32",
                code="invalid_network",
            ) from None
        if network not in normalised:
            normalised.append(network)
    return normalised


def _normalise_jurisdiction(text: str) -> str:
    try:
        return normalize_jurisdiction(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_jurisdiction") from None


def admits(settings: SiprecSettings, source: str) -> bool:
    """Whether an INVITE from ``source`` (an IP address) is taken for this client.

    IPv4-mapped IPv6 sources (``::ffff:192.0.2.1``, what a dual-stack socket reports)
    count as their IPv4 address. Anything that is not an address is refused.
    """
    try:
        address: _Address = ipaddress.ip_address(source.strip())
    except ValueError:
        return False
    candidates: list[_Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    allowed = _networks(settings.networks) if settings.networks else _LOOPBACK
    # An address is never in a network of the other family: `in` answers False.
    return any(candidate in network for network in allowed for candidate in candidates)


@lru_cache(maxsize=1024)
def _networks(networks: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in networks)


def call_jurisdiction(*, header: str | None, settings: SiprecSettings) -> str | None:
    """The one jurisdiction named for the whole call: the header's, else the client's.

    This is what the decision row keeps as the call's ``jurisdiction``; None when
    neither names one, or when the header is not a valid code.
    """
    if header is not None:
        try:
            return normalize_jurisdiction(header)
        except ValueError:
            return None
    return settings.jurisdiction


def call_jurisdictions(
    *, header: str | None, settings: SiprecSettings, parties: tuple[str | None, str | None]
) -> tuple[str | None, str | None]:
    """Each party's jurisdiction: the ``X-Callrec-Jurisdiction`` header's, else the client's
    default, else the country of each party's E.164 number, else None (all-party).

    A header that is present but not a valid ISO 3166 code (empty included) makes both
    parties unknown: the recording client meant to name the call's jurisdiction and we
    cannot tell which, so the strictest rule applies rather than a guess from the numbers.
    """
    if header is not None:
        code = call_jurisdiction(header=header, settings=settings)
        return (code, code)
    if settings.jurisdiction is not None:
        return (settings.jurisdiction, settings.jurisdiction)
    caller, callee = parties
    return (
        None if caller is None else country_of(caller),
        None if callee is None else country_of(callee),
    )

"""The consent layer's operations as the edges run them: the HTTP routes and ``callrec``.

Each operation lives here once, with every check it needs, so that a command run from
the shell and the same request over HTTP change the same rows and write the same audit
events. The edges only parse their input, say who acts, and present the result.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlmodel import Session

from consent import apikeys, clients, ledger, registry, siprec
from consent.apikeys import ApiKeyPublic, IssuedKey, Role
from consent.clients import ClientCreate, ClientPublic
from consent.siprec import SiprecSettingsPublic, SiprecSettingsRequest
from storage.audit import AuditLog
from storage.keyring import Keyring


class LedgerPublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    client_id: str
    """The client."""
    grants: list[ledger.GrantPublic]
    """Every grant, with its status now."""
    events: list[dict[str, Any]]
    """Every grant and revocation event, oldest first."""


def _client(row: clients.Client) -> ClientPublic:
    return ClientPublic.model_validate(row, from_attributes=True)


def create_client(
    session: Session, *, data: ClientCreate, actor: str, audit: AuditLog, now: datetime
) -> ClientPublic:
    """Create a client (tenant); AlreadyExists if the id is taken."""
    return _client(clients.create_client(session, data=data, actor=actor, audit=audit, now=now))


def list_clients(session: Session) -> list[ClientPublic]:
    return [_client(row) for row in clients.list_clients(session)]


def offboard_client(
    session: Session,
    *,
    client_id: str,
    actor: str,
    keyring: Keyring,
    audit: AuditLog,
    now: datetime,
) -> ClientPublic:
    """Offboard a client: its key is destroyed, its recordings become unreadable."""
    row = clients.offboard_client(
        session, client_id=client_id, actor=actor, keyring=keyring, audit=audit, now=now
    )
    return _client(row)


def issue_key(
    session: Session,
    *,
    role: Role,
    client_id: str | None,
    pepper: bytes,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> IssuedKey:
    """Issue a key; a client's key only while the client is active (shown once)."""
    if client_id is not None:
        clients.require_active(session, client_id)
    return apikeys.issue_key(
        session, role=role, client_id=client_id, pepper=pepper, actor=actor, audit=audit, now=now
    )


def list_keys(session: Session, *, client_id: str | None = None) -> list[ApiKeyPublic]:
    """Keys, never their secrets; one client's if ``client_id``."""
    if client_id is not None:
        clients.get_client(session, client_id)
    return [
        ApiKeyPublic.model_validate(row, from_attributes=True)
        for row in apikeys.list_keys(session, client_id=client_id)
    ]


def revoke_key(
    session: Session, *, key_id: str, actor: str, audit: AuditLog, now: datetime
) -> ApiKeyPublic:
    """Revoke a key: it stops working at once."""
    row = apikeys.revoke_key(session, key_id=key_id, actor=actor, audit=audit, now=now)
    return ApiKeyPublic.model_validate(row, from_attributes=True)


def grant_consent(
    session: Session,
    *,
    client_id: str,
    request: ledger.GrantRequest,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> ledger.GrantPublic:
    """Record an active client's permission to record, for known purposes."""
    clients.require_active(session, client_id)
    event = ledger.grant(
        session,
        client_id=client_id,
        request=request,
        known_purposes=registry.purposes(session),
        actor=actor,
        audit=audit,
        now=now,
    )
    return ledger.to_public(event, None, now=now)


def grant_state(
    session: Session, *, client_id: str, grant_id: str, now: datetime
) -> ledger.GrantPublic:
    """One grant as the ledger now derives it."""
    granted, revoked = ledger.current_grants(ledger.ledger(session, client_id))[grant_id]
    return ledger.to_public(granted, revoked, now=now)


def consent_ledger(session: Session, *, client_id: str, now: datetime) -> LedgerPublic:
    """A client's ledger: every event, and the grants derived from them."""
    clients.get_client(session, client_id)
    events = ledger.ledger(session, client_id)
    return LedgerPublic(
        client_id=client_id,
        grants=[ledger.to_public(g, r, now=now) for g, r in ledger.current_grants(events).values()],
        events=[ledger.event_public(e) for e in events],
    )


def siprec_settings(session: Session, *, client_id: str) -> SiprecSettingsPublic:
    """A client's SIPREC settings (none set: loopback only, no default jurisdiction)."""
    clients.get_client(session, client_id)
    return SiprecSettingsPublic.of(siprec.siprec_settings(session, client_id))


def put_siprec_settings(
    session: Session,
    *,
    client_id: str,
    request: SiprecSettingsRequest,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> SiprecSettingsPublic:
    """Replace an active client's SIPREC settings: the networks it sends from, its
    default jurisdiction."""
    settings = siprec.put_siprec_settings(
        session,
        client_id=client_id,
        networks=request.networks,
        jurisdiction=request.jurisdiction,
        actor=actor,
        audit=audit,
        now=now,
    )
    return SiprecSettingsPublic.of(settings)

"""A client, its grants and revocations written through the consent layer, for its tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from consent import ledger
from consent.clients import ClientCreate, create_client
from consent.phones import hash_phone
from storage.audit import AuditLog
from storage.db import session_scope

AUDIT_KEY = b"a" * 32  # one chain, one anchor key: every replica in a test shares it
AUDIT = AuditLog(AUDIT_KEY)
PHONE_KEY = b"p" * 32
CALLER, CALLEE = "+212612345678", "+212522000000"
PARTIES = (hash_phone(PHONE_KEY, CALLER), hash_phone(PHONE_KEY, CALLEE))


def add_client(engine: Engine, now: datetime, client_id: str = "acme") -> None:
    with session_scope(engine) as session:
        data = ClientCreate(id=client_id, name=client_id.title(), country="MA")
        create_client(session, data=data, actor="t", audit=AUDIT, now=now)


def add_grant(engine: Engine, now: datetime, client_id: str = "acme", **changes: Any) -> str:
    fields: dict[str, Any] = {"purposes": ["research"], "notice": "contract"}
    request = ledger.GrantRequest(granted_by="DPO", evidence="contract", **(fields | changes))
    with session_scope(engine) as session:
        event = ledger.grant(
            session,
            client_id=client_id,
            request=request,
            known_purposes=["research", "improvement", "optimization"],
            actor="t",
            audit=AUDIT,
            now=now,
        )
        return event.grant_id


def revoke_grant(engine: Engine, now: datetime, grant_id: str) -> None:
    with session_scope(engine) as session:
        ledger.revoke(
            session,
            client_id="acme",
            grant_id=grant_id,
            request=ledger.RevokeRequest(reason="ended"),
            actor="t",
            audit=AUDIT,
            now=now,
        )

"""API keys: a role, maybe a client, and a secret stored only as a keyed hash.

A key reads ``crk_<key id>_<secret>``: the id finds the row, the secret is compared
in constant time against HMAC-SHA256(pepper, secret). The pepper is derived from the
master key, so a copy of the database alone cannot be used to test guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, select

from consent.errors import InvalidRequest, NotFound, Unauthenticated
from storage.audit import AuditLog
from storage.db import connection_of
from storage.ids import new_id
from storage.types import UTCDateTime

_PREFIX = "crk_"
BOOTSTRAP_KEY_ID = "bootstrap-admin"


class Role(StrEnum):
    ADMIN = "admin"  # everything
    COMPLIANCE = "compliance"  # read all, reports, audit, legal holds, subject requests
    CLIENT_ADMIN = "client_admin"  # one client: consent, recordings, subject requests
    INTEGRATOR = "integrator"  # one client: call hook, WHIP, uploads


CLIENT_ROLES = frozenset({Role.CLIENT_ADMIN, Role.INTEGRATOR})


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    role: Role = Field(sa_type=sa.String(20))
    client_id: str | None = Field(default=None, foreign_key="clients.id", index=True, max_length=63)
    secret_hash: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


_KEYS: sa.Table = ApiKey.__table__  # type: ignore[attr-defined]
# Core, not session.get(): every request checks a key, and the ORM costs several times
# what the look-up does.
_KEY_BY_ID = sa.select(
    _KEYS.c.role, _KEYS.c.client_id, _KEYS.c.secret_hash, _KEYS.c.revoked_at.label("revoked")
).where(_KEYS.c.id == sa.bindparam("id"))


class ApiKeyPublic(SQLModel):
    id: str = Field(description="The key's id (not a secret)")
    role: Role = Field(description="What the key may do")
    client_id: str | None = Field(description="The client it is bound to (none: staff)")
    created_at: datetime = Field(description="When it was issued")
    revoked_at: datetime | None = Field(description="When it was revoked")


class IssuedKey(ApiKeyPublic):
    key: str = Field(description="The secret key, shown this once")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, role and, for client roles, its client."""

    key_id: str
    role: Role
    client_id: str | None

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


def _hash(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


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
    """Create a key; the secret is returned here and never again."""
    if (role in CLIENT_ROLES) != (client_id is not None):
        raise InvalidRequest(f"a {role} key {'needs' if role in CLIENT_ROLES else 'has no'} client")
    key_id = new_id("key", now).removeprefix("key_")
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        id=key_id, role=role, client_id=client_id, secret_hash=_hash(pepper, secret), created_at=now
    )
    session.add(row)
    audit.append(
        session,
        kind="api_key.issued",
        actor=actor,
        now=now,
        client_id=client_id,
        subject=key_id,
        data={"role": role},
    )
    session.flush()
    return IssuedKey(**row.model_dump(exclude={"secret_hash"}), key=f"{_PREFIX}{key_id}_{secret}")


def revoke_key(
    session: Session, *, key_id: str, actor: str, audit: AuditLog, now: datetime
) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no api key {key_id}")
    if row.revoked_at is None:
        row.revoked_at = now
        session.add(row)
        audit.append(
            session,
            kind="api_key.revoked",
            actor=actor,
            now=now,
            client_id=row.client_id,
            subject=key_id,
        )
        session.flush()
    return row


def list_keys(session: Session, *, client_id: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id)
    if client_id is not None:
        query = query.where(ApiKey.client_id == client_id)
    return list(session.exec(query))


def authenticate(
    session: Session | sa.Connection,
    token: str,
    *,
    pepper: bytes,
    bootstrap_admin_key: str | None,
) -> Principal:
    """The principal behind ``token``; Unauthenticated for anything else."""
    if bootstrap_admin_key and hmac.compare_digest(token.encode(), bootstrap_admin_key.encode()):
        return Principal(BOOTSTRAP_KEY_ID, Role.ADMIN, None)
    key_id, _, secret = token.removeprefix(_PREFIX).partition("_")
    if not token.startswith(_PREFIX) or not key_id or not secret:
        raise Unauthenticated("invalid api key")
    # Read on every request, never cached: a revoked key stops working at once.
    row = connection_of(session).execute(_KEY_BY_ID, {"id": key_id}).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(pepper, secret)):
        raise Unauthenticated("invalid api key")
    if row.revoked is not None:
        raise Unauthenticated("api key revoked")
    return Principal(key_id, Role(row.role), row.client_id)

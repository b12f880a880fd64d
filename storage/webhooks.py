"""Webhook endpoints: where a client wants its events, and the secret that signs them.

The secret (``whsec_`` and 32 random bytes in base64, the Standard Webhooks form) is
shown once, when the endpoint is created. It must be recoverable to sign each delivery,
so it is kept wrapped under the client's key rather than hashed: offboarding the client
destroys it with everything else of theirs.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from storage.ids import new_id
from storage.keyring import Keyring
from storage.types import UTCDateTime
from storage.webhook_events import EVENT_TYPES

if TYPE_CHECKING:
    from storage.audit import AuditLog

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
MAX_URL_LENGTH = 2000
MAX_ENDPOINTS_PER_CLIENT = 20
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookEndpoint(SQLModel, table=True):
    """One receiver of a client's webhook events."""

    __tablename__ = "webhook_endpoints"

    id: str = Field(primary_key=True, max_length=40)
    client_id: str = Field(index=True, max_length=63)
    url: str = Field(max_length=MAX_URL_LENGTH)
    events: str = Field(max_length=400)  # comma-separated event types
    # None once the endpoint is deleted: the secret goes with it.
    secret: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The audit sequence number of its own ``webhook.created`` event: it hears of the
    # events after that one only (storage.webhook_fanout).
    since_seq: int = Field(default=0, sa_type=sa.BigInteger)


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as its client sees it (never with its secret)."""

    id: str
    client_id: str
    url: str
    events: list[str]
    created_at: datetime


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: Endpoint
    secret: str  # shown this once


@dataclass(frozen=True)
class Gateway:
    """Where the gateway itself listens: no webhook may point back at it."""

    host: str
    port: int


def check_url(url: str, *, gateway: Gateway) -> str:
    """``url`` if webhooks may be sent there; ValueError says why not."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"the url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"the url is malformed: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError("the url must be http:// or https://")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise ValueError("the url names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the url must not carry credentials; the signature authenticates")
    if _is_gateway(host, port or _DEFAULT_PORTS[parts.scheme], gateway):
        raise ValueError(f"the url points at this gateway ({gateway.host}:{gateway.port})")
    return url


def _is_gateway(host: str, port: int, gateway: Gateway) -> bool:
    if port != gateway.port:
        return False
    own = gateway.host.lower()
    if host == own:
        return True
    # A gateway on a wildcard or loopback address answers on every loopback name.
    return _loopback(host) and (own in ("0.0.0.0", "::") or _loopback(own))  # noqa: S104


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def check_events(events: Collection[str]) -> list[str]:
    """The event types, deduplicated in their canonical order; ValueError on unknown ones."""
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(
            f"unknown event types: {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})"
        )
    if not events:
        raise ValueError("subscribe to at least one event type")
    return [e for e in EVENT_TYPES if e in events]


def create_endpoint(
    session: Session,
    *,
    client_id: str,
    url: str,
    events: Collection[str],
    gateway: Gateway,
    keyring: Keyring,
    audit: AuditLog,
    actor: str,
    now: datetime,
) -> CreatedEndpoint:
    """Register an endpoint (the caller commits); its secret is in the answer only."""
    url, types = check_url(url, gateway=gateway), check_events(events)
    live = session.exec(select(sa.func.count()).where(*_live(client_id))).one()
    if live >= MAX_ENDPOINTS_PER_CLIENT:
        raise ValueError(f"a client has at most {MAX_ENDPOINTS_PER_CLIENT} webhook endpoints")
    endpoint_id, secret = new_id("whk", now), os.urandom(SECRET_BYTES)
    wrapped = keyring.wrap_client_secret(
        session, client_id=client_id, secret=secret, context=endpoint_id, now=now
    )
    created = audit.append(
        session,
        kind="webhook.created",
        actor=actor,
        now=now,
        client_id=client_id,
        subject=endpoint_id,
        data={"url": url, "events": types},
    )
    row = WebhookEndpoint(
        id=endpoint_id,
        client_id=client_id,
        url=url,
        events=",".join(types),
        secret=wrapped,
        created_by=actor,
        created_at=now,
        since_seq=created.seq,
    )
    session.add(row)
    text = SECRET_PREFIX + base64.b64encode(secret).decode("ascii")
    return CreatedEndpoint(_public(row), text)


def list_endpoints(session: Session, *, client_id: str) -> list[Endpoint]:
    query = select(WebhookEndpoint).where(*_live(client_id)).order_by(col(WebhookEndpoint.id))
    return [_public(row) for row in session.exec(query)]


def delete_endpoint(
    session: Session,
    *,
    client_id: str,
    endpoint_id: str,
    audit: AuditLog,
    actor: str,
    now: datetime,
) -> Endpoint | None:
    """Delete an endpoint and drop what still waited for it; None if there is none.

    The rows already fanned out are cancelled (and counted in the audit event); events
    not yet fanned out are never written for a deleted endpoint.
    """
    from storage import outbox  # the outbox reads endpoints: imported here, not at the top

    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None or row.client_id != client_id or row.deleted_at is not None:
        return None
    row.deleted_at, row.secret = now, None
    session.add(row)
    # Written before the rows are cancelled: on PostgreSQL this waits for a fan-out
    # that has just read the endpoint as live, so the cancel sees that fan-out's rows.
    session.flush()
    cancelled = outbox.cancel_pending(session, endpoint_id=endpoint_id, now=now)
    audit.append(
        session,
        kind="webhook.deleted",
        actor=actor,
        now=now,
        client_id=client_id,
        subject=endpoint_id,
        data={"cancelled": cancelled},
    )
    return _public(row)


def secret_of(session: Session, keyring: Keyring, *, endpoint_id: str) -> bytes | None:
    """An endpoint's signing secret in the clear, None once it is deleted."""
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None or row.secret is None:
        return None
    return keyring.unwrap_client_secret(
        session, client_id=row.client_id, wrapped=row.secret, context=endpoint_id
    )


def _live(client_id: str) -> Sequence[sa.ColumnElement[bool]]:
    return (
        col(WebhookEndpoint.client_id) == client_id,
        col(WebhookEndpoint.deleted_at).is_(None),
    )


def _public(row: WebhookEndpoint) -> Endpoint:
    return Endpoint(row.id, row.client_id, row.url, row.events.split(","), row.created_at)

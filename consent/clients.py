"""Clients (tenants): the business customers whose calls callrec records."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import field_validator
from sqlmodel import Field, Session, SQLModel, select

from consent.errors import AlreadyExists, NotFound, StateConflict
from storage.audit import AuditLog
from storage.catalog import CLIENT_ID
from storage.keyring import Keyring
from storage.types import UTCDateTime


class ClientStatus(StrEnum):
    ACTIVE = "active"
    OFFBOARDED = "offboarded"


class ClientBase(SQLModel):
    name: str = Field(min_length=1, max_length=200, description="The client's name, for people")
    country: str = Field(
        min_length=2, max_length=2, description="ISO 3166-1 alpha-2 country the client is based in"
    )


class ClientCreate(ClientBase):
    id: str = Field(description="Slug: a-z, 0-9 and '-', at most 63 characters")

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not CLIENT_ID.match(value):
            raise ValueError("must be a slug: a-z, 0-9 and '-', at most 63 characters")
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        if not (value.isascii() and value.isalpha()):
            raise ValueError("must be an ISO 3166-1 alpha-2 code")
        return value.upper()


class Client(ClientBase, table=True):
    __tablename__ = "clients"

    id: str = Field(primary_key=True, max_length=63)
    status: ClientStatus = Field(default=ClientStatus.ACTIVE, sa_type=sa.String(20))
    created_at: datetime = Field(sa_type=UTCDateTime)
    offboarded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ClientPublic(ClientBase):
    id: str = Field(description="The client's slug")
    status: ClientStatus = Field(description="`active` or `offboarded`")
    created_at: datetime = Field(description="When it was created")
    offboarded_at: datetime | None = Field(description="When it was offboarded")


def create_client(
    session: Session, *, data: ClientCreate, actor: str, audit: AuditLog, now: datetime
) -> Client:
    """Create a client; AlreadyExists if the id is taken."""
    if session.get(Client, data.id) is not None:
        raise AlreadyExists(f"client {data.id} already exists")
    client = Client(id=data.id, name=data.name, country=data.country, created_at=now)
    session.add(client)
    audit.append(
        session,
        kind="client.created",
        actor=actor,
        now=now,
        client_id=client.id,
        data={"name": client.name, "country": client.country},
    )
    session.flush()
    return client


def get_client(session: Session, client_id: str) -> Client:
    """The client, or NotFound."""
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    return client


def require_active(session: Session, client_id: str) -> Client:
    """The client, if it exists and is active; NotFound or StateConflict otherwise."""
    client = get_client(session, client_id)
    if client.status != ClientStatus.ACTIVE:
        raise StateConflict(f"client {client_id} is offboarded", code="client_inactive")
    return client


def list_clients(session: Session) -> list[Client]:
    return list(session.exec(select(Client).order_by(Client.id)))


def offboard_client(
    session: Session,
    *,
    client_id: str,
    actor: str,
    keyring: Keyring,
    audit: AuditLog,
    now: datetime,
) -> Client:
    """Offboard a client: its key is destroyed, so every recording of it is unreadable."""
    client = get_client(session, client_id)
    if client.status == ClientStatus.OFFBOARDED:
        raise StateConflict(f"client {client_id} is already offboarded")
    client.status, client.offboarded_at = ClientStatus.OFFBOARDED, now
    session.add(client)
    keyring.destroy_client_key(session, client_id=client_id, now=now)
    audit.append(
        session,
        kind="client.offboarded",
        actor=actor,
        now=now,
        client_id=client_id,
        data={"client_key_destroyed": True},
    )
    session.flush()
    return client

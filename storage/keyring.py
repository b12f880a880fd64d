"""Key hierarchy: master key → client key → per-recording data key.

Only wrapped keys reach the database. Destroying a recording key (purge) or a client
key (offboarding) overwrites the wrapped bytes, which makes every object they protect
unreadable for good: crypto-shredding. SQLite runs with ``secure_delete`` so the old
bytes do not linger in free pages; on PostgreSQL the old row version lives until
VACUUM reclaims it, and the key is still useless without the master key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from storage import crypto
from storage.errors import ConfigError, KeyDestroyed
from storage.types import UTCDateTime


class ClientKey(SQLModel, table=True):
    __tablename__ = "client_keys"

    client_id: str = Field(primary_key=True, max_length=63)
    wrapped: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: datetime = Field(sa_type=UTCDateTime)
    destroyed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RecordingKey(SQLModel, table=True):
    __tablename__ = "recording_keys"

    recording_id: str = Field(primary_key=True, max_length=40)
    client_id: str = Field(index=True, max_length=63)
    wrapped: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: datetime = Field(sa_type=UTCDateTime)
    destroyed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class MasterKeyCheck(SQLModel, table=True):
    """A MAC that tells, at start, whether this is the master key the data was made with."""

    __tablename__ = "master_key_check"

    id: int = Field(default=1, primary_key=True)
    mac: str = Field(max_length=64)


class Keyring:
    """Creates, unwraps and destroys keys; every method works in the caller's session."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != crypto.KEY_BYTES:
            raise ConfigError("the master key must be 32 bytes")
        self._master = master_key

    def derive(self, label: str) -> bytes:
        """A key for one job (audit anchor, phone hashing), derived from the master key."""
        return hmac.new(self._master, f"callrec/{label}".encode(), hashlib.sha256).digest()

    def check_master_key(self, session: Session) -> None:
        """Record the master key's check value, or refuse a different master key."""
        mac = self.derive("master-key-check").hex()
        row = session.get(MasterKeyCheck, 1)
        if row is None:
            session.add(MasterKeyCheck(id=1, mac=mac))
            session.flush()
        elif not hmac.compare_digest(row.mac, mac):
            raise ConfigError(
                "CALLREC_MASTER_KEY is not the key this database was created with; "
                "nothing stored could be decrypted"
            )

    def new_recording_key(
        self, session: Session, *, client_id: str, recording_id: str, now: datetime
    ) -> bytes:
        """Create the data key of a new recording and return it in the clear."""
        client_key = self._client_key(session, client_id=client_id, now=now)
        key = crypto.generate_key()
        wrapped = crypto.wrap_key(client_key, key, context=_recording_context(recording_id))
        session.add(
            RecordingKey(
                recording_id=recording_id, client_id=client_id, wrapped=wrapped, created_at=now
            )
        )
        session.flush()
        return key

    def recording_key(self, session: Session, *, recording_id: str) -> bytes:
        """The data key of a recording; KeyDestroyed once it (or its client's) is gone."""
        row = session.get(RecordingKey, recording_id)
        if row is None or row.wrapped is None:
            raise KeyDestroyed(f"the key of recording {recording_id} is destroyed")
        client = session.get(ClientKey, row.client_id)
        if client is None or client.wrapped is None:
            raise KeyDestroyed(f"the key of client {row.client_id} is destroyed")
        client_key = self._unwrap_client_key(client)
        return crypto.unwrap_key(client_key, row.wrapped, context=_recording_context(recording_id))

    def destroy_recording_key(self, session: Session, *, recording_id: str, now: datetime) -> bool:
        """Overwrite a recording's wrapped key; True if it was still there."""
        return bool(self.destroy_recording_keys(session, [recording_id], now=now))

    def destroy_recording_keys(
        self, session: Session, recording_ids: Collection[str], *, now: datetime
    ) -> set[str]:
        """Overwrite these recordings' wrapped keys; return the ids whose key was live."""
        live_keys = (
            col(RecordingKey.recording_id).in_(recording_ids),
            col(RecordingKey.wrapped).is_not(None),
        )
        live = set(session.exec(select(RecordingKey.recording_id).where(*live_keys)))
        if live:
            session.execute(
                sa.update(RecordingKey).where(*live_keys).values(wrapped=None, destroyed_at=now)
            )
        return live

    def destroy_client_key(self, session: Session, *, client_id: str, now: datetime) -> bool:
        """Overwrite a client's wrapped key: every recording of that client is unreadable."""
        row = session.get(ClientKey, client_id)
        if row is None:
            # Remember the destruction, so the key is never quietly created again.
            session.add(
                ClientKey(client_id=client_id, wrapped=None, created_at=now, destroyed_at=now)
            )
            session.flush()
            return False
        was_live = row.wrapped is not None
        row.wrapped, row.destroyed_at = None, row.destroyed_at or now
        session.add(row)
        session.flush()
        return was_live

    def wrap_client_secret(
        self, session: Session, *, client_id: str, secret: bytes, context: str, now: datetime
    ) -> bytes:
        """Encrypt a 32-byte secret the client owns (a webhook's signing key) under its key.

        Destroying the client's key (offboarding) makes the secret unreadable too.
        """
        client_key = self._client_key(session, client_id=client_id, now=now)
        return crypto.wrap_key(client_key, secret, context=f"secret:{context}".encode())

    def unwrap_client_secret(
        self, session: Session, *, client_id: str, wrapped: bytes, context: str
    ) -> bytes:
        """A secret made by ``wrap_client_secret``; KeyDestroyed once the client's key is gone."""
        row = session.get(ClientKey, client_id)
        if row is None or row.wrapped is None:
            raise KeyDestroyed(f"the key of client {client_id} is destroyed")
        client_key = self._unwrap_client_key(row)
        return crypto.unwrap_key(client_key, wrapped, context=f"secret:{context}".encode())

    def _client_key(self, session: Session, *, client_id: str, now: datetime) -> bytes:
        row = session.get(ClientKey, client_id)
        if row is None:
            key = crypto.generate_key()
            row = ClientKey(
                client_id=client_id,
                wrapped=crypto.wrap_key(self._master, key, context=_client_context(client_id)),
                created_at=now,
            )
            try:
                with session.begin_nested():
                    session.add(row)
            except sa.exc.IntegrityError:  # another replica created it first
                row = session.get(ClientKey, client_id, populate_existing=True)
                assert row is not None
            else:
                return key
        if row.wrapped is None:
            raise KeyDestroyed(f"the key of client {client_id} is destroyed")
        return self._unwrap_client_key(row)

    def _unwrap_client_key(self, row: ClientKey) -> bytes:
        assert row.wrapped is not None
        return crypto.unwrap_key(self._master, row.wrapped, context=_client_context(row.client_id))


def _client_context(client_id: str) -> bytes:
    return f"client:{client_id}".encode()


def _recording_context(recording_id: str) -> bytes:
    return f"recording:{recording_id}".encode()

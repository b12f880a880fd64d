from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage import crypto
from storage.db import session_scope
from storage.errors import ConfigError, KeyDestroyed
from storage.keyring import ClientKey, Keyring, RecordingKey

MASTER = b"m" * 32


def _new(engine: Engine, now: datetime, recording_id: str, client_id: str = "acme") -> bytes:
    with session_scope(engine) as session:
        return Keyring(MASTER).new_recording_key(
            session, client_id=client_id, recording_id=recording_id, now=now
        )


def _get(engine: Engine, recording_id: str, master: bytes = MASTER) -> bytes:
    with Session(engine) as session:
        return Keyring(master).recording_key(session, recording_id=recording_id)


def test_recording_key_round_trips(engine: Engine, now: datetime) -> None:
    key = _new(engine, now, "rec_1")
    assert len(key) == crypto.KEY_BYTES
    assert _get(engine, "rec_1") == key
    assert _new(engine, now, "rec_2") != key


def test_only_wrapped_keys_reach_the_database(engine: Engine, now: datetime) -> None:
    key = _new(engine, now, "rec_1")
    with Session(engine) as session:
        row = session.get(RecordingKey, "rec_1")
        assert row is not None and row.wrapped is not None
        assert key not in row.wrapped


def test_destroyed_recording_key_is_gone(engine: Engine, now: datetime) -> None:
    _new(engine, now, "rec_1")
    _new(engine, now, "rec_2")
    with session_scope(engine) as session:
        assert Keyring(MASTER).destroy_recording_key(session, recording_id="rec_1", now=now)
        assert not Keyring(MASTER).destroy_recording_key(session, recording_id="rec_1", now=now)
    with pytest.raises(KeyDestroyed):
        _get(engine, "rec_1")
    _get(engine, "rec_2")
    with Session(engine) as session:
        row = session.get(RecordingKey, "rec_1")
        assert row is not None and row.wrapped is None and row.destroyed_at == now


def test_destroyed_client_key_shreds_every_recording(engine: Engine, now: datetime) -> None:
    _new(engine, now, "rec_1")
    _new(engine, now, "rec_other", client_id="other")
    with session_scope(engine) as session:
        assert Keyring(MASTER).destroy_client_key(session, client_id="acme", now=now)
    with pytest.raises(KeyDestroyed):
        _get(engine, "rec_1")
    with pytest.raises(KeyDestroyed):
        _new(engine, now, "rec_3")  # never quietly re-created
    _get(engine, "rec_other")


def test_client_key_destroyed_before_first_use_stays_destroyed(
    engine: Engine, now: datetime
) -> None:
    with session_scope(engine) as session:
        Keyring(MASTER).destroy_client_key(session, client_id="gone", now=now)
    with pytest.raises(KeyDestroyed):
        _new(engine, now, "rec_1", client_id="gone")
    with Session(engine) as session:
        row = session.get(ClientKey, "gone")
        assert row is not None and row.wrapped is None


def test_wrong_master_key_cannot_unwrap(engine: Engine, now: datetime) -> None:
    from storage.errors import IntegrityError

    _new(engine, now, "rec_1")
    with pytest.raises(IntegrityError):
        _get(engine, "rec_1", master=b"w" * 32)


def test_master_key_check_refuses_another_key(engine: Engine) -> None:
    with session_scope(engine) as session:
        Keyring(MASTER).check_master_key(session)
    with session_scope(engine) as session:
        Keyring(MASTER).check_master_key(session)
    with pytest.raises(ConfigError, match="not the key"), session_scope(engine) as session:
        Keyring(b"w" * 32).check_master_key(session)

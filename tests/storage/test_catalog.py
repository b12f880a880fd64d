from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage import catalog
from storage.catalog import Recording, RecordingState
from storage.db import session_scope
from storage.errors import InvalidTransition


def _recording(recording_id: str, client_id: str, now: datetime) -> Recording:
    return Recording(
        id=recording_id,
        client_id=client_id,
        call_id=f"call-{recording_id}",
        channel="upload",
        codec="opus",
        container="ogg",
        object_key=catalog.object_key(
            client_id=client_id, recording_id=recording_id, created_at=now, ext="ogg"
        ),
        created_at=now,
        updated_at=now,
    )


def test_object_key_layout_has_nothing_personal(now: datetime) -> None:
    key = catalog.object_key(client_id="acme", recording_id="rec_1", created_at=now, ext="ogg")
    assert key == "acme/2026/11/28/rec_1.ogg"


@pytest.mark.parametrize("client_id", ["", "Acme", "a/b", "../x", "-acme", "a" * 64, "+212600"])
def test_object_key_refuses_a_client_id_that_is_not_a_slug(client_id: str, now: datetime) -> None:
    with pytest.raises(ValueError, match="slug"):
        catalog.object_key(client_id=client_id, recording_id="rec_1", created_at=now, ext="ogg")


def test_object_tags(now: datetime) -> None:
    tags = catalog.object_tags("acme", {"research": now, "improvement": now + timedelta(days=3)})
    assert tags == {
        "client": "acme",
        "purpose:research": "2026-11-28",
        "purpose:improvement": "2026-12-01",
    }


def test_recording_and_purposes_round_trip(engine: Engine, now: datetime) -> None:
    expiry = now + timedelta(days=30)
    with session_scope(engine) as session:
        catalog.add_recording(
            session, recording=_recording("rec_1", "acme", now), purposes={"research": expiry}
        )
    with Session(engine) as session:
        recording = catalog.get_recording(session, "rec_1")
        assert recording is not None
        assert recording.state == RecordingState.RECORDING
        assert recording.created_at == now and recording.created_at.tzinfo is not None
        assert catalog.purposes_of(session, "rec_1") == {"research": expiry}


def test_another_clients_recording_is_not_found(engine: Engine, now: datetime) -> None:
    with session_scope(engine) as session:
        catalog.add_recording(session, recording=_recording("rec_1", "acme", now), purposes={})
    with Session(engine) as session:
        assert catalog.get_recording(session, "rec_1", client_id="acme") is not None
        assert catalog.get_recording(session, "rec_1", client_id="other") is None
        assert catalog.get_recording(session, "rec_missing") is None


def test_list_filters_by_client_and_pages_by_cursor(engine: Engine, now: datetime) -> None:
    with session_scope(engine) as session:
        for i in range(5):
            catalog.add_recording(
                session, recording=_recording(f"rec_{i}", "acme", now), purposes={}
            )
        catalog.add_recording(session, recording=_recording("rec_x", "other", now), purposes={})
    with Session(engine) as session:
        first = catalog.list_recordings(session, client_id="acme", limit=3)
        rest = catalog.list_recordings(session, client_id="acme", after=first[-1].id, limit=3)
    assert [r.id for r in first + rest] == [f"rec_{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (RecordingState.RECORDING, RecordingState.STORED),
        (RecordingState.RECORDING, RecordingState.FAILED),
        (RecordingState.STORED, RecordingState.RESTRICTED),
        (RecordingState.RESTRICTED, RecordingState.STORED),
        (RecordingState.STORED, RecordingState.PURGED),
        (RecordingState.FAILED, RecordingState.PURGED),
    ],
)
def test_allowed_transitions(start: RecordingState, end: RecordingState, now: datetime) -> None:
    recording = _recording("rec_1", "acme", now)
    recording.state = start
    catalog.transition(recording, end, now=now + timedelta(seconds=1))
    assert recording.state == end
    assert recording.updated_at == now + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (RecordingState.PURGED, RecordingState.STORED),
        (RecordingState.RECORDING, RecordingState.RESTRICTED),
        (RecordingState.FAILED, RecordingState.STORED),
        (RecordingState.STORED, RecordingState.RECORDING),
    ],
)
def test_refused_transitions(start: RecordingState, end: RecordingState, now: datetime) -> None:
    recording = _recording("rec_1", "acme", now)
    recording.state = start
    with pytest.raises(InvalidTransition):
        catalog.transition(recording, end, now=now)
    assert recording.state == start

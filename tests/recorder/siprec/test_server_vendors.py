"""Every vendor-style body, sent as its SRC would: each party's tone on its own channel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from storage.audit import AuditEvent
from storage.db import create_db_engine, migrate
from storage.embedded_s3 import EmbeddedS3
from tests.recorder.capture.media import rms
from tests.recorder.conftest import Tenant, make_tenant
from tests.recorder.siprec.fixtures import EXPECTED, TWO_STREAM, UPDATE, load
from tests.recorder.siprec.harness import (
    decoded,
    gateway,
    new_call,
    recording_of,
    served,
    signalling,
)
from tests.recorder.siprec.src import RtpSender, answered_formats, decode, play, tone
from tests.recorder.tones import dominant_hz

TONES = (440.0, 1000.0)  # on the offer's first and second m= line
SERVED_AS = {"pcmu": "audio/basic", "pcma": "audio/basic", "g722": "audio/x-matroska"}


@pytest.fixture(scope="module")
def client(s3_server: EmbeddedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One gateway for every body (on SQLite: reading bodies does not depend on the database)."""
    path = tmp_path_factory.mktemp("siprec-vendors")
    url = f"sqlite:///{path / 'callrec.db'}"
    engine = create_db_engine(url)
    migrate(engine)
    engine.dispose()
    with gateway(s3_server, url, path, datetime(2026, 11, 28, 12, tzinfo=UTC)) as client:
        yield client


@pytest.fixture(scope="module")
def tenant(client: TestClient) -> Tenant:
    return make_tenant(client)


def _unreadable_notes(client: TestClient, call_id: str) -> int:
    """The audit events saying this call's metadata could not be read."""
    engine = client.app.state.api_context.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        events = session.exec(
            select(AuditEvent).where(AuditEvent.kind == "siprec.metadata_unreadable")
        )
        return sum(json.loads(e.data)["call_id"] == call_id for e in events)


@pytest.mark.parametrize("name", TWO_STREAM)
def test_a_vendors_recording_session_keeps_each_party_on_its_channel(
    client: TestClient, tenant: Tenant, name: str
) -> None:
    expected = EXPECTED[name]
    transport = "tcp" if TWO_STREAM.index(name) % 2 else "udp"
    with signalling(client, transport) as sip:
        call = new_call(sip)
        content_type, body = load(name, port0=9000, port1=9002)
        answer = call.invite(body, content_type)
        assert answer.status == 200, (name, answer)
        formats = answered_formats(answer.body)
        assert len(formats) == 2, answer.body
        senders = [RtpSender(port, pt=pt) for port, pt, _ in formats]
        fmt = formats[0][2]
        play([(sender, tone(hz, 1.2, fmt)) for sender, hz in zip(senders, TONES, strict=True)])
        assert call.bye().status == 200, name

    call_id = expected.session_id or call.call_id
    recording = recording_of(client, tenant, call_id)
    assert recording is not None and recording["state"] == "stored", (name, recording)
    assert recording["channels"] == 2 and recording["codec"] == fmt
    response = served(client, tenant, recording["id"])
    # G.711 is kept in .au, G.722 in Matroska: each served as its registered type.
    assert response.headers["content-type"] == SERVED_AS[fmt], name
    rate, channels = decode(response.content)
    noted = _unreadable_notes(client, call_id)
    assert noted == (1 if expected.metadata == "unreadable" else 0), name
    middle = slice(int(0.2 * rate), int(0.9 * rate))
    for channel, stream in enumerate(expected.channels):
        samples = channels[channel][middle]
        assert rms(samples) > 0.05, (name, channel)
        assert dominant_hz(samples, rate=rate) == pytest.approx(TONES[stream], abs=3), name


def test_a_forked_legs_plain_sdp_is_one_channel(client: TestClient, tenant: Tenant) -> None:
    with signalling(client) as sip:
        call = new_call(sip, from_user="+33142685300", to_user="+33298765432")
        content_type, body = load("forked_leg", port0=9000)
        answer = call.invite(body, content_type)
        assert answer.status == 200, answer
        ((port, pt, fmt),) = answered_formats(answer.body)
        assert fmt == "pcma"  # the leg's first choice
        play([(RtpSender(port, pt=pt), tone(700, 1.0, fmt))])
        assert call.bye().status == 200
    recording = recording_of(client, tenant, call.call_id)
    assert recording is not None and recording["channels"] == 1
    rate, (only,) = decoded(client, tenant, recording["id"])
    assert dominant_hz(only[int(0.2 * rate) : int(0.8 * rate)], rate=rate) == pytest.approx(
        700, abs=3
    )


def test_a_metadata_only_update_mid_call_changes_no_channel(client: TestClient) -> None:
    tenant = make_tenant(client, "globex")  # its own client: the body's session id is reused
    with signalling(client, "tcp") as sip:
        call = new_call(sip, client="globex")
        content_type, body = load("oracle_acme", port0=9000, port1=9002)
        answer = call.invite(body, content_type)
        assert answer.status == 200, answer
        formats = answered_formats(answer.body)
        senders = [RtpSender(port, pt=pt) for port, pt, _ in formats]
        play([(s, tone(hz, 0.6, formats[0][2])) for s, hz in zip(senders, TONES, strict=True)])
        update_type, update_body = load(UPDATE)
        assert call.request("UPDATE", body=update_body, content_type=update_type).status == 200
        play([(s, tone(hz, 0.6, formats[0][2])) for s, hz in zip(senders, TONES, strict=True)])
        assert call.bye().status == 200
    session_id = EXPECTED["oracle_acme"].session_id
    assert session_id is not None
    recording = recording_of(client, tenant, session_id)
    assert recording is not None and recording["channels"] == 2
    rate, (left, right) = decoded(client, tenant, recording["id"])
    late = slice(int(0.8 * rate), int(1.1 * rate))  # after the update
    assert dominant_hz(left[late], rate=rate) == pytest.approx(TONES[0], abs=3)
    assert dominant_hz(right[late], rate=rate) == pytest.approx(TONES[1], abs=3)

"""Calls callrec ends itself are hung up: the SRC gets a BYE in the dialog and stops.

The SRC of these tests answers callrec's BYE as a recording client would; real sockets
(UDP and TCP), a real SeaweedFS and database. What is checked: the BYE names the
dialog (Call-ID, both tags reversed, the SRC's Contact as Request-URI), says why in a
``Reason``, and the recording is stored (or discarded, for an opt-out) all the same.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recorder.app import create_app
from storage.backend import StorageBackend
from storage.embedded_s3 import EmbeddedS3
from tests.recorder.conftest import Clock, Tenant, backend_settings, make_tenant
from tests.recorder.siprec.harness import (
    audio,
    gateway,
    new_call,
    recording_of,
    signalling,
    sip_port,
    siprec_offer,
)
from tests.recorder.siprec.src import (
    G711_RATE,
    Call,
    Request,
    RtpSender,
    Signalling,
    answer_ports,
    g711_tone,
    play,
)
from tests.recorder.tones import dominant_hz


@pytest.fixture
def client(
    s3_server: EmbeddedS3, database_url: str, tmp_path: Path, now: datetime
) -> Iterator[TestClient]:
    with gateway(s3_server, database_url, tmp_path, now) as client:
        yield client


@pytest.fixture
def tenant(client: TestClient) -> Tenant:
    return make_tenant(client)


def _recording_call(sip: Signalling, session_id: str, seconds: float = 1.0) -> Call:
    """A two-stream call, answered, with ``seconds`` of a tone on each stream."""
    call = new_call(sip)
    answer = call.invite(*siprec_offer(session_id))
    assert answer.status == 200, answer
    senders = [RtpSender(port) for port in answer_ports(answer.body)]
    play([(senders[0], g711_tone(440, seconds)), (senders[1], g711_tone(880, seconds))])
    return call


def _tag(value: str | None) -> str | None:
    found = re.search(r";\s*tag=([^;\s]+)", value or "")
    return found.group(1) if found else None


def _check_bye(bye: Request, call: Call, why: str) -> None:
    """callrec's BYE is a request of the SRC's dialog, from callrec's side (§12.2.1.1)."""
    sip = call.sip
    assert bye.method == "BYE", bye
    assert bye.uri == f"sip:src@127.0.0.1:{sip.local_port};transport={sip.transport}"
    assert bye.header("Call-ID") == call.call_id
    assert _tag(bye.header("From")) == call.to_tag  # callrec's tag, from its 200
    assert _tag(bye.header("To")) == call.from_tag
    number, method = (bye.header("CSeq") or "").split()
    assert method == "BYE" and int(number) >= 1  # callrec's own CSeq space
    assert (bye.header("Via") or "").startswith(f"SIP/2.0/{sip.transport.upper()} ")
    assert bye.header("Reason") == f'SIP;cause=200;text="{why}"'


def _settled(client: TestClient) -> bool:
    siprec = client.app.state.siprec  # type: ignore[attr-defined]
    return bool(siprec.active == 0)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_the_media_timeout_hangs_up_the_dialog_and_stores_the_call(
    client: TestClient, tenant: Tenant, transport: str
) -> None:
    session_id = secrets.token_hex(16)
    with signalling(client, transport) as sip:
        call = _recording_call(sip, session_id)
        # The SRC sends nothing more: the media timeout ends the call, and callrec says so.
        bye = sip.incoming(timeout=20)
        _check_bye(bye, call, "media_timeout")
        sip.answer(bye)
        recording = recording_of(client, tenant, session_id)
    assert recording is not None and recording["state"] == "stored"
    assert _settled(client)
    left, _ = audio(client, tenant, recording["id"])
    assert dominant_hz(left[int(0.2 * G711_RATE) : int(0.8 * G711_RATE)], rate=G711_RATE) == (
        pytest.approx(440, abs=3)
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_bye_of_the_src_that_crosses_callrecs_gets_200_and_no_error(
    client: TestClient, tenant: Tenant, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    session_id = secrets.token_hex(16)
    with signalling(client, transport) as sip:
        call = _recording_call(sip, session_id)
        bye = sip.incoming(timeout=20)
        _check_bye(bye, call, "media_timeout")
        # The SRC hangs up too before it has read callrec's BYE: both BYEs cross.
        sip.send(call.message("BYE"))
        assert sip.response().status == 200
        sip.answer(bye)
        recording = recording_of(client, tenant, session_id)
    assert recording is not None and recording["state"] == "stored"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.mark.parametrize(
    ("action", "why", "kept"),
    [("opt-out", "caller_opted_out", False), ("revoke", "consent_revoked", True)],
)
def test_call_control_that_ends_the_capture_hangs_up_the_dialog(
    client: TestClient, tenant: Tenant, action: str, why: str, kept: bool
) -> None:
    session_id = secrets.token_hex(16)
    with signalling(client) as sip:
        call = _recording_call(sip, session_id, seconds=0.6)
        if action == "opt-out":
            done = client.post(f"/v1/calls/{session_id}/opt-out", headers=tenant.integrator)
        else:
            done = client.post(
                f"/v1/clients/acme/consents/{tenant.grant['id']}/revoke",
                json={"reason": "contract ended", "purge_existing": False},
                headers=tenant.client_admin,
            )
        assert done.status_code == 200, done.text
        bye = sip.incoming(timeout=20)
        _check_bye(bye, call, why)
        sip.answer(bye)
        recording = recording_of(client, tenant, session_id)
    assert (recording is not None and recording["state"] == "stored") == kept, recording
    assert _settled(client)


def test_a_gateway_that_stops_hangs_up_and_stores_its_live_siprec_calls(
    s3_server: EmbeddedS3, database_url: str, tmp_path: Path, now: datetime
) -> None:
    settings = backend_settings(s3_server, database_url, tmp_path, rtp_ports="41000-41999")
    backend = StorageBackend(settings)
    backend.start(now=now)
    session_id = secrets.token_hex(16)
    sip: Signalling | None = None
    try:
        with TestClient(create_app(backend, clock=Clock(now))) as client:
            tenant = make_tenant(client)
            sip = Signalling(sip_port(client), "tcp")
            call = _recording_call(sip, session_id, seconds=0.6)
        # The gateway stopped mid-call: the SRC was told before the connection closed.
        _check_bye(sip.incoming(timeout=5), call, "shutdown")
        with TestClient(create_app(backend, clock=Clock(now))) as client:
            recording = recording_of(client, tenant, session_id)
    finally:
        if sip is not None:
            sip.close()
        backend.stop()
    assert recording is not None and recording["state"] == "stored"
    assert recording["channels"] == 2

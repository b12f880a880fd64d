"""SIPREC end to end: an SRC on loopback records calls through callrec's SIP and RTP.

Real sockets (UDP and TCP), a real SeaweedFS and database; what is checked is the stored
recording, decoded: each party's tone on its own channel.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from storage.embedded_s3 import EmbeddedS3
from tests.recorder.capture.media import rms
from tests.recorder.conftest import Tenant, call_body, make_tenant
from tests.recorder.siprec.harness import (
    audio,
    gateway,
    new_call,
    recording_of,
    signalling,
    siprec_offer,
)
from tests.recorder.siprec.src import (
    G711_RATE,
    Call,
    RtpSender,
    answer_ports,
    g711_tone,
    play,
    sdp,
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


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_two_stream_call_is_stored_with_each_party_on_its_channel(
    client: TestClient, tenant: Tenant, transport: str
) -> None:
    session_id = secrets.token_hex(16)
    with signalling(client, transport) as sip:
        call = new_call(sip)
        body, content_type = siprec_offer(f"{session_id};remote=00000000000000000000000000000000")
        answer = call.invite(body, content_type)
        assert answer.status == 200, answer
        assert answer.header("Content-Type") == "application/sdp"
        assert b"a=recvonly" in answer.body
        ports = answer_ports(answer.body)
        assert len(ports) == 2 and all(ports), answer.body
        senders = [RtpSender(port) for port in ports]
        play([(senders[0], g711_tone(440, 1.6)), (senders[1], g711_tone(1000, 1.6))])
        assert call.bye().status == 200

    recording = recording_of(client, tenant, session_id)
    assert recording is not None
    assert recording["state"] == "stored"
    assert (recording["channel"], recording["codec"], recording["channels"]) == (
        "siprec",
        "pcmu",
        2,
    )
    left, right = audio(client, tenant, recording["id"])
    middle = slice(int(0.3 * G711_RATE), int(1.3 * G711_RATE))
    assert rms(left[middle]) > 0.05 and rms(right[middle]) > 0.05
    assert dominant_hz(left[middle], rate=G711_RATE) == pytest.approx(440, abs=3)
    assert dominant_hz(right[middle], rate=G711_RATE) == pytest.approx(1000, abs=3)
    assert client.app.state.live.active == 0  # type: ignore[attr-defined]


def test_pcma_is_kept_when_the_src_prefers_it(client: TestClient, tenant: Tenant) -> None:
    session_id = secrets.token_hex(16)
    with signalling(client) as sip:
        call = new_call(sip)
        answer = call.invite(*siprec_offer(session_id, formats="8 0 101"))
        assert answer.status == 200, answer
        senders = [RtpSender(port, pt=8) for port in answer_ports(answer.body)]
        tones = [g711_tone(hz, 1.0, codec="pcm_alaw") for hz in (500, 800)]
        play(list(zip(senders, tones, strict=True)))
        assert call.bye().status == 200
    recording = recording_of(client, tenant, session_id)
    assert recording is not None and recording["codec"] == "pcma"
    left, right = audio(client, tenant, recording["id"])
    middle = slice(int(0.2 * G711_RATE), int(0.8 * G711_RATE))
    assert dominant_hz(left[middle], rate=G711_RATE) == pytest.approx(500, abs=3)
    assert dominant_hz(right[middle], rate=G711_RATE) == pytest.approx(800, abs=3)


def test_a_plain_invite_of_a_forked_leg_is_one_channel(client: TestClient, tenant: Tenant) -> None:
    with signalling(client) as sip:
        call = new_call(sip, from_user="+212612345678", to_user="+212522000000")
        answer = call.invite(sdp([9000]).encode(), "application/sdp")
        assert answer.status == 200, answer
        (port,) = answer_ports(answer.body)
        sender = RtpSender(port)
        play([(sender, g711_tone(600, 1.0))])
        assert call.bye().status == 200
    recording = recording_of(client, tenant, call.call_id)  # no metadata: the Call-ID
    assert recording is not None and recording["channels"] == 1
    (only,) = audio(client, tenant, recording["id"])
    assert dominant_hz(only[int(0.2 * G711_RATE) : int(0.8 * G711_RATE)], rate=G711_RATE) == (
        pytest.approx(600, abs=3)
    )


def test_options_is_answered(client: TestClient) -> None:
    with signalling(client) as sip:
        response = new_call(sip).request("OPTIONS")
    assert response.status == 200


def test_only_codecs_callrec_does_not_take_get_488_and_nothing_starts(
    client: TestClient, tenant: Tenant
) -> None:
    session_id = secrets.token_hex(16)
    with signalling(client) as sip:
        answer = new_call(sip).invite(*siprec_offer(session_id, formats="18 101"))
    assert answer.status == 488
    assert recording_of(client, tenant, session_id) is None


def test_malformed_requests_get_400_or_silence_and_the_next_call_is_served(
    client: TestClient, tenant: Tenant
) -> None:
    with signalling(client) as sip:
        sip.send(b"\x00\xff nonsense \r\n\r\n")  # not SIP: no answer
        sip.send(b"INVITE sip:acme@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        broken = new_call(sip).invite(b"--nowhere\r\nnot a part", 'multipart/mixed;boundary="x"')
        assert broken.status == 400, broken
        garbage_sdp = new_call(sip).invite(b"v=0\r\nthis is not sdp\r\n", "application/sdp")
        assert garbage_sdp.status in (400, 488), garbage_sdp

        session_id = secrets.token_hex(16)
        call = new_call(sip)
        answer = call.invite(*siprec_offer(session_id))
        assert answer.status == 200, answer
        senders = [RtpSender(port) for port in answer_ports(answer.body)]
        play([(senders[0], g711_tone(440, 0.6)), (senders[1], g711_tone(880, 0.6))])
        assert call.bye().status == 200
    recording = recording_of(client, tenant, session_id)
    assert recording is not None and recording["state"] == "stored"


def test_cancel_before_the_answer_records_nothing(client: TestClient, tenant: Tenant) -> None:
    session_id = secrets.token_hex(16)
    with signalling(client, "tcp") as sip:
        call = new_call(sip)
        body, content_type = siprec_offer(session_id)
        invite = call.message("INVITE", body=body, content_type=content_type)
        cancel = call.message("CANCEL", cseq=call.cseq, branch=call.last_branch)
        sip.send(invite + cancel)  # in one segment: the CANCEL is there before any answer
        answers = {sip.final().status, sip.final().status}
        assert answers == {200, 487}, answers
        call.sip.send(call.message("ACK", cseq=call.cseq, branch=call.last_branch))
    assert recording_of(client, tenant, session_id) is None
    assert client.app.state.live.active == 0  # type: ignore[attr-defined]


def test_a_call_decided_by_the_hook_first_is_recorded_at_its_siprec_uri(
    client: TestClient, tenant: Tenant
) -> None:
    body = call_body("hook-first-1", channel="siprec")
    decided = client.post("/v1/calls", json=body, headers=tenant.integrator)
    assert decided.status_code == 200, decided.text
    port = client.app.state.siprec.port  # type: ignore[attr-defined]
    assert decided.json()["siprec_uri"] == f"sip:acme@127.0.0.1:{port}"
    with signalling(client) as sip:
        call = Call(sip, call_id="hook-first-1")  # no metadata: the SIP Call-ID names it
        answer = call.invite(sdp([9000]).encode(), "application/sdp")
        assert answer.status == 200, answer
        (port_0,) = answer_ports(answer.body)
        play([(RtpSender(port_0), g711_tone(500, 0.6))])
        assert call.bye().status == 200
    recording = recording_of(client, tenant, "hook-first-1")
    assert recording is not None and recording["state"] == "stored"

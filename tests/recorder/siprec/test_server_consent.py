"""SIPREC and consent: who may send, under which rule, the caller's answer, and pauses."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from storage.embedded_s3 import EmbeddedS3
from tests.recorder.capture.media import rms
from tests.recorder.conftest import ADMIN, Tenant, make_tenant
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
    metadata,
    play,
)
from tests.recorder.tones import dominant_hz, silent_stretches

ACCEPTED = ("X-Callrec-Caller-Consent", "accepted; method=dtmf; notice=v1")


@pytest.fixture
def client(
    s3_server: EmbeddedS3, database_url: str, tmp_path: Path, now: datetime
) -> Iterator[TestClient]:
    with gateway(s3_server, database_url, tmp_path, now) as client:
        yield client


def _two_streams(call: Call, answer_body: bytes) -> list[RtpSender]:
    return [RtpSender(port) for port in answer_ports(answer_body)]


def _tones(senders: list[RtpSender], hz: tuple[float, float], seconds: float) -> None:
    play([(senders[0], g711_tone(hz[0], seconds)), (senders[1], g711_tone(hz[1], seconds))])


def test_no_consent_is_403_with_the_reason(client: TestClient) -> None:
    tenant = make_tenant(client)
    revoked = client.post(
        f"/v1/clients/acme/consents/{tenant.grant['id']}/revoke",
        json={"reason": "contract ended", "purge_existing": False},
        headers=tenant.client_admin,
    )
    assert revoked.status_code == 200, revoked.text
    session_id = secrets.token_hex(16)
    with signalling(client) as sip:
        answer = new_call(sip).invite(*siprec_offer(session_id))
    assert answer.status == 403
    assert answer.header("Reason") == 'SIP;cause=403;text="consent_revoked"'
    assert recording_of(client, tenant, session_id) is None


def test_an_unknown_client_is_403(client: TestClient) -> None:
    make_tenant(client)
    with signalling(client) as sip:
        answer = new_call(sip, client="nobody").invite(*siprec_offer(secrets.token_hex(16)))
    assert answer.status == 403
    assert answer.header("Reason") == 'SIP;cause=403;text="unknown_client"'


def test_a_source_outside_the_clients_networks_is_403(client: TestClient) -> None:
    tenant = make_tenant(client)
    settings = client.put(  # loopback, but not the SRC's address
        "/v1/clients/acme/siprec", json={"networks": ["127.0.0.2/32"]}, headers=ADMIN
    )
    assert settings.status_code == 200, settings.text
    session_id = secrets.token_hex(16)
    with signalling(client) as sip:  # from 127.0.0.1
        answer = new_call(sip).invite(*siprec_offer(session_id))
    assert answer.status == 403
    assert answer.header("Reason") == 'SIP;cause=403;text="source_not_allowed"'
    assert recording_of(client, tenant, session_id) is None


def test_an_all_party_call_is_not_refused_under_a_contract_notice_it_cannot_serve(
    client: TestClient,
) -> None:
    make_tenant(client, notice="contract")
    with signalling(client) as sip:
        call = Call(sip)
        call.extra.append(("X-Callrec-Jurisdiction", "US-CA"))  # all-party
        answer = call.invite(*siprec_offer(secrets.token_hex(16)))
    assert answer.status == 403
    assert answer.header("Reason") == 'SIP;cause=403;text="announcement_required"'


def _all_party_call(sip: object, session_id: str) -> tuple[Call, list[RtpSender]]:
    call = Call(sip)  # type: ignore[arg-type]
    call.extra.append(("X-Callrec-Jurisdiction", "MA"))
    answer = call.invite(*siprec_offer(session_id))
    assert answer.status == 200, answer
    return call, _two_streams(call, answer.body)


def _only_after_consent(client: TestClient, tenant: Tenant, session_id: str) -> None:
    """The recording holds the tones played after the caller's consent, none before."""
    recording = recording_of(client, tenant, session_id)
    assert recording is not None and recording["state"] == "stored"
    left, right = audio(client, tenant, recording["id"])
    heard = slice(int(0.1 * G711_RATE), int(0.7 * G711_RATE))
    assert rms(left[heard]) > 0.05
    assert dominant_hz(left[heard], rate=G711_RATE) == pytest.approx(1000, abs=3)
    assert dominant_hz(right[heard], rate=G711_RATE) == pytest.approx(1500, abs=3)


def test_an_all_party_call_waits_for_the_callers_consent_in_band(client: TestClient) -> None:
    tenant = make_tenant(client, notice="announcement")
    session_id = secrets.token_hex(16)
    with signalling(client) as sip:
        call, senders = _all_party_call(sip, session_id)
        _tones(senders, (440, 660), 0.8)  # the notice plays: nothing is kept
        answer = call.invite(*siprec_offer(session_id, version=2), headers=[ACCEPTED])
        assert answer.status == 200, answer
        assert answer_ports(answer.body) == [s.port for s in senders]  # the ports stay
        _tones(senders, (1000, 1500), 1.0)
        assert call.bye().status == 200
    _only_after_consent(client, tenant, session_id)


def test_an_all_party_call_waits_for_the_callers_consent_over_http(client: TestClient) -> None:
    tenant = make_tenant(client, notice="announcement")
    session_id = secrets.token_hex(16)
    with signalling(client) as sip:
        call, senders = _all_party_call(sip, session_id)
        _tones(senders, (440, 660), 0.8)
        consent = client.post(
            f"/v1/calls/{session_id}/caller-consent",
            json={"accepted": True, "method": "dtmf", "notice_version": "v1"},
            headers=tenant.integrator,
        )
        assert consent.status_code == 200, consent.text
        _tones(senders, (1000, 1500), 1.0)
        assert call.bye().status == 200
    _only_after_consent(client, tenant, session_id)


def test_a_caller_who_declines_in_the_invite_is_not_recorded(client: TestClient) -> None:
    tenant = make_tenant(client, notice="announcement")
    session_id = secrets.token_hex(16)
    declined = ("X-Callrec-Caller-Consent", "declined; method=speech; notice=v1")
    with signalling(client) as sip:
        call = Call(sip)
        call.extra.append(("X-Callrec-Jurisdiction", "MA"))
        answer = call.invite(*siprec_offer(session_id), headers=[declined])
    assert answer.status == 403
    assert answer.header("Reason") == 'SIP;cause=403;text="caller_declined"'
    assert recording_of(client, tenant, session_id) is None


def test_a_pause_by_re_invite_leaves_silence(client: TestClient) -> None:
    tenant = make_tenant(client)
    session_id = secrets.token_hex(16)
    with signalling(client) as sip:
        call = new_call(sip)
        answer = call.invite(*siprec_offer(session_id))
        assert answer.status == 200, answer
        senders = _two_streams(call, answer.body)
        _tones(senders, (440, 660), 1.0)
        paused = call.invite(*siprec_offer(session_id, direction="inactive", version=2))
        assert paused.status == 200, paused
        assert answer_ports(paused.body) == [s.port for s in senders]
        # A sloppy SRC that goes on sending while it says inactive: none of it is kept.
        _tones(senders, (440, 660), 1.0)
        resumed = call.invite(*siprec_offer(session_id, version=3))
        assert resumed.status == 200, resumed
        _tones(senders, (440, 660), 1.0)
        assert call.bye().status == 200
    recording = recording_of(client, tenant, session_id)
    assert recording is not None and recording["state"] == "stored"
    left, _ = audio(client, tenant, recording["id"])
    # The second of paused tone is silence: the longest silent stretch, between the
    # first and the last second of tone (the pause takes a few packets to arrive).
    stretches = silent_stretches(left, rate=G711_RATE)
    start, end = max(stretches, key=lambda s: s[1] - s[0])
    assert end - start > 0.6, stretches
    assert start > 0.8 and end < 2.4, stretches
    assert rms(left[int(0.2 * G711_RATE) : int(0.8 * G711_RATE)]) > 0.05
    assert rms(left[-int(0.8 * G711_RATE) : -int(0.2 * G711_RATE)]) > 0.05


def test_a_hold_by_c_0000_pauses_too_and_a_metadata_only_update_is_taken(
    client: TestClient,
) -> None:
    tenant = make_tenant(client)
    session_id = secrets.token_hex(16)
    with signalling(client, "tcp") as sip:
        call = new_call(sip)
        answer = call.invite(*siprec_offer(session_id))
        assert answer.status == 200, answer
        senders = _two_streams(call, answer.body)
        _tones(senders, (440, 660), 0.8)
        held = call.invite(*siprec_offer(session_id, address="0.0.0.0", version=2))  # noqa: S104
        assert held.status == 200, held
        state = client.post(f"/v1/calls/{session_id}/pause", headers=tenant.integrator)
        assert state.status_code == 409  # the hold paused it already
        # A transfer: a third party in the metadata, no SDP.
        parties = ("sip:+212612345678@pbx.example", "sip:+212522999999@pbx.example")
        update = call.request(
            "UPDATE",
            body=metadata(session_id, parties).encode(),
            content_type="application/rs-metadata+xml",
        )
        assert update.status == 200
        resumed = call.invite(*siprec_offer(session_id, version=3))
        assert resumed.status == 200, resumed
        _tones(senders, (440, 660), 0.8)
        assert call.bye().status == 200
    recording = recording_of(client, tenant, session_id)
    assert recording is not None and recording["state"] == "stored"


def test_streams_offered_inactive_start_paused_and_join_when_activated(
    client: TestClient,
) -> None:
    tenant = make_tenant(client)
    session_id = secrets.token_hex(16)
    with signalling(client) as sip:
        call = new_call(sip)
        answer = call.invite(*siprec_offer(session_id, direction="inactive"))
        assert answer.status == 200, answer
        state = client.post(f"/v1/calls/{session_id}/pause", headers=tenant.integrator)
        assert state.status_code == 409, state.text  # paused already: no media yet
        active = call.invite(*siprec_offer(session_id, version=2))
        assert active.status == 200, active
        assert answer_ports(active.body) == answer_ports(answer.body)
        _tones(_two_streams(call, active.body), (440, 660), 0.8)
        assert call.bye().status == 200
    recording = recording_of(client, tenant, session_id)
    assert recording is not None and recording["state"] == "stored"
    left, right = audio(client, tenant, recording["id"])
    heard = slice(len(left) - int(0.6 * G711_RATE), len(left) - int(0.1 * G711_RATE))
    assert dominant_hz(left[heard], rate=G711_RATE) == pytest.approx(440, abs=3)
    assert dominant_hz(right[heard], rate=G711_RATE) == pytest.approx(660, abs=3)

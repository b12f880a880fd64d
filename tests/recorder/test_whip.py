"""WHIP end to end: real aiortc publishers on loopback, the gateway recording their Opus."""

from __future__ import annotations

import asyncio
import fractions
import io
import math
import time
from array import array
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from fastapi.testclient import TestClient

from recorder.app import create_app
from storage.backend import StorageBackend
from storage.embedded_s3 import EmbeddedS3
from tests.recorder.capture.media import rms
from tests.recorder.conftest import Clock, Tenant, backend_settings, call_body, make_tenant
from tests.recorder.tones import dominant_hz, silent_stretches

RATE = 48_000
FRAME = 960
SDP = {"Content-Type": "application/sdp"}


class Tone(MediaStreamTrack):
    """A microphone that plays a tone, paced in real time as a browser's would be."""

    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        self._hz, self._sent, self._start = hz, 0, 0.0

    async def recv(self) -> av.AudioFrame:
        if self._sent == 0:
            self._start = time.monotonic()
        wait = self._start + self._sent / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        pcm = array(
            "h",
            (
                int(8000 * math.sin(2 * math.pi * self._hz * (self._sent + n) / RATE))
                for n in range(FRAME)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate, frame.pts = RATE, self._sent
        frame.time_base = fractions.Fraction(1, RATE)
        self._sent += FRAME
        return frame


@pytest.fixture
def whip_backend(
    s3_server: EmbeddedS3, database_url: str, tmp_path: Path, now: datetime
) -> Iterator[StorageBackend]:
    settings = backend_settings(
        s3_server,
        database_url,
        tmp_path,
        ice_addresses=["127.0.0.1"],
        live_media_timeout_s=2,
        live_max_sessions=2,
    )
    backend = StorageBackend(settings)
    backend.start(now=now)
    yield backend
    backend.stop()


@pytest.fixture
def client(whip_backend: StorageBackend, clock: Clock) -> Iterator[TestClient]:
    app = create_app(whip_backend, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def tenant(client: TestClient) -> Tenant:
    return make_tenant(client)


def _decide(client: TestClient, tenant: Tenant, call_id: str, **extra: Any) -> dict[str, Any]:
    body = call_body(call_id, channel="whip", **extra)
    response = client.post("/v1/calls", json=body, headers=tenant.integrator)
    assert response.status_code == 200, response.text
    return dict(response.json())


class Publisher:
    """A WebRTC app publishing one track per party to callrec over WHIP."""

    def __init__(self, client: TestClient, headers: dict[str, str], tones: list[float]) -> None:
        self.client, self.headers = client, headers
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for hz in tones:
            self.pc.addTransceiver(Tone(hz), direction="sendonly")
        self.location = ""
        # The session's clock starts while the POST is answered and stops while the DELETE
        # is: it runs at least from the one's answer to the other's sending, and at most
        # from the one's sending to the other's answer, however loaded the machine.
        self.posted_at = self.answered_at = self.deleting_at = self.deleted_at = 0.0

    async def offer(self, url: str) -> Any:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.posted_at = time.monotonic()
        answer = await asyncio.to_thread(
            self.client.post,
            url,
            content=self.pc.localDescription.sdp,
            headers={**self.headers, **SDP},
        )
        self.answered_at = time.monotonic()
        return answer

    async def publish(self, url: str) -> None:
        response = await self.offer(url)
        assert response.status_code == 201, response.text
        assert response.headers["content-type"].startswith("application/sdp")
        self.location = response.headers["location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
        await _until(lambda: self.pc.connectionState == "connected", "the peer connection")

    def lasted(self, duration_s: float) -> bool:
        """Whether a recording of ``duration_s`` spans this session (20 ms of rounding)."""
        shortest = self.deleting_at - self.answered_at
        longest = self.deleted_at - self.posted_at
        return shortest - 0.02 <= duration_s <= longest + 0.02

    async def stop(self) -> Any:
        self.deleting_at = time.monotonic()
        response = await asyncio.to_thread(self.client.delete, self.location, headers=self.headers)
        self.deleted_at = time.monotonic()
        await self.pc.close()
        return response


async def _until(done: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come within {within} s")
        await asyncio.sleep(0.02)


def _run(coroutine: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coroutine())


def _audio(client: TestClient, tenant: Tenant, recording_id: str) -> tuple[int, list[array[float]]]:
    response = client.get(f"/v1/recordings/{recording_id}/audio", headers=tenant.client_admin)
    assert response.status_code == 200, response.text
    with av.open(io.BytesIO(response.content)) as container:
        stream = container.streams.audio[0]
        channels: list[array[float]] = [array("f") for _ in range(stream.codec_context.channels)]
        for frame in container.decode(stream):
            for channel, plane in zip(channels, frame.planes, strict=True):
                channel.frombytes(bytes(plane)[: 4 * frame.samples])
    return len(channels), channels


def test_a_two_party_webrtc_call_is_recorded_as_it_came(client: TestClient, tenant: Tenant) -> None:
    decision = _decide(client, tenant, "webrtc-1")
    assert decision["whip_url"] == f"/v1/whip/{decision['decision_id']}"

    async def call() -> tuple[Any, Publisher]:
        publisher = Publisher(client, tenant.integrator, [440, 1750])
        await publisher.publish(decision["whip_url"])
        await asyncio.sleep(2.0)  # the call's length: two seconds of real-time audio
        response = await publisher.stop()
        return response, publisher

    ended, publisher = _run(call)

    assert ended.status_code == 200, ended.text
    assert ended.json()["state"] == "ended"
    recording = client.get(
        f"/v1/recordings/{ended.json()['recording_id']}", headers=tenant.client_admin
    ).json()
    assert recording["state"] == "stored"
    assert (recording["channel"], recording["codec"], recording["container"]) == (
        "whip",
        "opus",
        "ogg",
    )
    assert recording["channels"] == 2
    assert publisher.lasted(recording["duration_s"]), recording["duration_s"]
    channels, decoded = _audio(client, tenant, recording["id"])
    assert channels == 2
    assert abs(len(decoded[0]) / RATE - recording["duration_s"]) <= 0.020
    # The tap took real Opus from aiortc's receiver: each party is heard, at its own pitch.
    middle = slice(int(0.5 * RATE), int(1.5 * RATE))
    assert rms(decoded[0][middle]) > 0.05
    assert rms(decoded[1][middle]) > 0.05
    assert dominant_hz(decoded[0][middle]) == pytest.approx(440, abs=3)
    assert dominant_hz(decoded[1][middle]) == pytest.approx(1750, abs=3)


def test_a_pause_is_silence_of_its_length_in_its_place(client: TestClient, tenant: Tenant) -> None:
    decision = _decide(client, tenant, "webrtc-paused")

    async def call() -> tuple[Any, list[float], Publisher]:
        publisher = Publisher(client, tenant.integrator, [440])
        await publisher.publish(decision["whip_url"])
        moments = []  # when each request was sent and answered, on the test's clock
        for action, wait in (("pause", 1.0), ("resume", 1.5)):
            await asyncio.sleep(wait)  # while paused the publisher goes on: none is kept
            moments.append(time.monotonic())
            answer = await asyncio.to_thread(
                client.post, f"/v1/calls/webrtc-paused/{action}", headers=tenant.integrator
            )
            assert answer.status_code == 200, answer.text
            moments.append(time.monotonic())
        await asyncio.sleep(1.0)
        response = await publisher.stop()
        return response, moments, publisher

    ended, (pause_sent, pause_done, resume_sent, resume_done), publisher = _run(call)

    recording = client.get(
        f"/v1/recordings/{ended.json()['recording_id']}", headers=tenant.client_admin
    ).json()
    assert publisher.lasted(recording["duration_s"]), recording["duration_s"]
    _, decoded = _audio(client, tenant, recording["id"])
    # Silent stretches past the first (the wait for ICE before the first packet).
    stretches = [s for s in silent_stretches(decoded[0]) if s[0] > 0.5]
    assert len(stretches) == 1, stretches
    start, end = stretches[0]
    # On the recording's clock, which started while the POST was answered. Call control
    # reaches the session on the loop's next read of the row (every 0.5 s) after the
    # request committed: never before the request, within a read and a margin after it.
    earliest, latest = publisher.answered_at, publisher.posted_at
    assert pause_sent - earliest - 0.1 <= start <= pause_done - latest + 0.7, start
    assert resume_sent - earliest - 0.1 <= end <= resume_done - latest + 0.7, end
    assert dominant_hz(decoded[0][int((end + 0.2) * RATE) :]) == pytest.approx(440, abs=3)


def test_no_audio_before_the_caller_accepts_and_opt_out_leaves_nothing(
    client: TestClient, whip_backend: StorageBackend
) -> None:
    tenant = make_tenant(client, "mabank", notice="announcement")
    decision = _decide(client, tenant, "webrtc-ma", jurisdiction="MA")
    assert decision["reason"] == "awaiting_caller_consent"

    async def call() -> Any:
        publisher = Publisher(client, tenant.integrator, [440])
        await publisher.publish(decision["whip_url"])
        await asyncio.sleep(1.0)  # the notice plays; nothing is kept
        accepted = await asyncio.to_thread(
            client.post,
            "/v1/calls/webrtc-ma/caller-consent",
            json={"accepted": True, "method": "dtmf", "notice_version": "v1"},
            headers=tenant.integrator,
        )
        assert accepted.status_code == 200, accepted.text
        await asyncio.sleep(1.5)
        opted_out = await asyncio.to_thread(
            client.post, "/v1/calls/webrtc-ma/opt-out", headers=tenant.integrator
        )
        assert opted_out.status_code == 200, opted_out.text
        await _until(
            lambda: client.app.state.live.active == 0,  # type: ignore[attr-defined]
            "the opt-out reaching the live session",
        )
        return await publisher.stop()

    ended = _run(call)

    assert ended.status_code == 404  # the session is gone with what it captured
    listed = client.get("/v1/recordings", headers=tenant.client_admin).json()["items"]
    assert [r["state"] for r in listed] == ["failed"]
    assert whip_backend.store.list_keys() == [] or all(
        not key.startswith(f"{tenant.id}/") for key in whip_backend.store.list_keys()
    )
    events = client.get(
        "/v1/audit", params={"kind": "recording.discarded"}, headers=_compliance(client)
    ).json()["items"]
    assert any(event["subject"] == listed[0]["id"] for event in events)


def test_a_publisher_that_vanishes_is_stored_after_the_media_timeout(
    client: TestClient, tenant: Tenant
) -> None:
    decision = _decide(client, tenant, "webrtc-gone")

    async def call() -> tuple[Publisher, float, float]:
        publisher = Publisher(client, tenant.integrator, [440])
        await publisher.publish(decision["whip_url"])
        await asyncio.sleep(1.5)
        closing = time.monotonic()
        await publisher.pc.close()  # no DELETE: the tab was closed
        closed = time.monotonic()
        await _until(
            lambda: client.app.state.live.active == 0,  # type: ignore[attr-defined]
            "the media timeout",
        )
        return publisher, closing, closed

    publisher, closing, closed = _run(call)

    listed = client.get("/v1/recordings", headers=tenant.client_admin).json()["items"]
    assert [r["state"] for r in listed] == ["stored"]
    # It ends with the last packet, not with the silence of the wait for the timeout.
    duration = listed[0]["duration_s"]
    assert closing - publisher.answered_at - 0.1 <= duration <= closed - publisher.posted_at + 0.1


def _compliance(client: TestClient) -> dict[str, str]:
    from tests.recorder.conftest import ADMIN

    response = client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


def test_refusals_say_why_and_change_nothing(client: TestClient, tenant: Tenant) -> None:
    other = make_tenant(client, "globex")
    refused = _decide(client, tenant, "no-purpose", purposes=["optimization"])
    assert refused["record"] is False
    upload = client.post("/v1/calls", json=call_body("an-upload"), headers=tenant.integrator).json()
    allowed = _decide(client, tenant, "allowed")

    async def offers() -> dict[str, Any]:
        publisher = Publisher(client, tenant.integrator, [440])
        foreign = Publisher(client, other.integrator, [440])
        answers = {
            "no consent": await publisher.offer(f"/v1/whip/{refused['decision_id']}"),
            "upload decision": await publisher.offer(f"/v1/whip/{upload['decision_id']}"),
            "another tenant": await foreign.offer(f"/v1/whip/{allowed['decision_id']}"),
            "unknown": await publisher.offer("/v1/whip/dec_nope"),
        }
        await publisher.pc.close()
        await foreign.pc.close()
        return answers

    answers = _run(offers)

    assert answers["no consent"].status_code == 403
    assert answers["no consent"].json()["error"] == "purpose_not_granted"
    assert answers["upload decision"].status_code == 409
    assert answers["upload decision"].json()["error"] == "wrong_channel"
    assert answers["another tenant"].status_code == 404
    assert answers["unknown"].status_code == 404
    assert client.get("/v1/recordings", headers=tenant.client_admin).json()["items"] == []


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (b"v=0\r\n", SDP, 422, "invalid_sdp"),
        (b"not sdp at all \xff", SDP, 422, "invalid_sdp"),
        (b"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nbroken", SDP, 422, "invalid_sdp"),
        (b"{}", {"Content-Type": "application/json"}, 415, "unsupported_media_type"),
        (b"v=0\r\n" + b"a=x\r\n" * 20_000, SDP, 413, "payload_too_large"),
    ],
    ids=["no-audio", "not-utf8", "malformed", "json", "oversized"],
)
def test_bad_offers_are_refused(
    client: TestClient,
    tenant: Tenant,
    body: bytes,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    decision = _decide(client, tenant, "bad-offer")

    response = client.post(
        decision["whip_url"], content=body, headers={**tenant.integrator, **headers}
    )

    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert client.app.state.live.active == 0  # type: ignore[attr-defined]


def test_cors_on_every_whip_answer_and_no_trickle(client: TestClient, tenant: Tenant) -> None:
    decision = _decide(client, tenant, "cors")

    preflight = client.options(
        decision["whip_url"],
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    patch = client.patch("/v1/whip/sessions/whip_x", headers=tenant.integrator)
    refused = client.post(decision["whip_url"], content=b"x", headers=tenant.integrator)

    assert preflight.status_code == 204
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    assert preflight.headers["access-control-expose-headers"] == "Location"
    assert patch.status_code == 405
    assert patch.json()["error"] == "method_not_allowed"
    assert "DELETE" in patch.headers["allow"]
    # A browser reads an error only if the error carries CORS headers too.
    assert refused.status_code == 415
    assert refused.headers["access-control-allow-origin"] == "*"
    # The rest of the API stays same-origin.
    assert "access-control-allow-origin" not in client.get("/healthz").headers


def test_sessions_beyond_the_limit_get_503(client: TestClient, tenant: Tenant) -> None:
    decisions = [_decide(client, tenant, f"busy-{i}") for i in range(3)]

    async def calls() -> list[int]:
        publishers = [Publisher(client, tenant.integrator, [440]) for _ in decisions]
        answers = [await p.offer(d["whip_url"]) for p, d in zip(publishers, decisions, strict=True)]
        for p in publishers:
            await p.pc.close()
        return [a.status_code for a in answers]

    assert _run(calls) == [201, 201, 503]


@pytest.mark.parametrize("purge_existing", [False, True], ids=["keep", "purge"])
def test_a_revocation_stops_a_live_capture(
    client: TestClient, tenant: Tenant, purge_existing: bool
) -> None:
    decision = _decide(client, tenant, f"webrtc-revoked-{purge_existing}")
    revoke = f"/v1/clients/{tenant.id}/consents/{tenant.grant['id']}/revoke"

    moments: list[float] = []  # the revocation sent and answered, on the test's clock

    async def call() -> tuple[Any, Publisher]:
        publisher = Publisher(client, tenant.integrator, [440])
        await publisher.publish(decision["whip_url"])
        await asyncio.sleep(1.5)
        moments.append(time.monotonic())
        revoked = await asyncio.to_thread(
            client.post,
            revoke,
            json={"reason": "contract ended", "purge_existing": purge_existing},
            headers=tenant.client_admin,
        )
        assert revoked.status_code == 200, revoked.text
        moments.append(time.monotonic())
        await _until(
            lambda: client.app.state.live.active == 0,  # type: ignore[attr-defined]
            "the revocation reaching the live session",
        )
        await asyncio.sleep(0.5)  # the publisher goes on sending: none of it is kept
        return await publisher.stop(), publisher

    ended, publisher = _run(call)

    assert ended.status_code == 404
    listed = client.get("/v1/recordings", headers=tenant.client_admin).json()["items"]
    if purge_existing:
        assert [r["state"] for r in listed] == ["failed"]
    else:
        assert [r["state"] for r in listed] == ["stored"]
        # What came before the revocation: it reaches the session on the next read of the
        # call's row and grant (every 0.5 s) after it committed.
        sent, answered = moments
        duration = listed[0]["duration_s"]
        assert (
            sent - publisher.answered_at - 0.1 <= duration <= answered - publisher.posted_at + 0.7
        )
    again = _decide(client, tenant, "after-revocation")
    assert again["record"] is False


def test_a_decision_made_before_a_revocation_cannot_start_a_capture(
    client: TestClient, tenant: Tenant
) -> None:
    decision = _decide(client, tenant, "decided-then-revoked")
    revoke = f"/v1/clients/{tenant.id}/consents/{tenant.grant['id']}/revoke"
    body = {"reason": "contract ended", "purge_existing": False}
    assert client.post(revoke, json=body, headers=tenant.client_admin).status_code == 200

    async def offer() -> Any:
        publisher = Publisher(client, tenant.integrator, [440])
        answer = await publisher.offer(decision["whip_url"])
        await publisher.pc.close()
        return answer

    answer = _run(offer)

    assert answer.status_code == 403
    assert answer.json()["error"] == "consent_revoked"
    assert client.app.state.live.active == 0  # type: ignore[attr-defined]


def test_live_sessions_on_metrics(client: TestClient, tenant: Tenant) -> None:
    from tests.recorder.test_metrics import metric

    decision = _decide(client, tenant, "webrtc-metrics")
    before = client.get("/metrics").text
    assert metric(before, "callrec_live_sessions") == 0
    assert metric(before, "callrec_live_packets_received_total") == 0

    async def call() -> tuple[str, Any]:
        publisher = Publisher(client, tenant.integrator, [440, 1750])
        await publisher.publish(decision["whip_url"])
        await _until(
            lambda: metric(client.get("/metrics").text, "callrec_live_spooled_bytes_total") > 0,
            "audio in the spool",
        )
        during = client.get("/metrics").text
        return during, await publisher.stop()

    during, ended = _run(call)

    assert metric(during, "callrec_live_sessions") == 1
    assert metric(during, "callrec_live_packets_received_total") > 0
    assert ended.status_code == 200, ended.text
    recording = client.get(
        f"/v1/recordings/{ended.json()['recording_id']}", headers=tenant.client_admin
    ).json()
    after = client.get("/metrics").text
    assert metric(after, "callrec_live_sessions") == 0
    assert metric(after, 'callrec_live_sessions_ended_total{cause="ended"}') == 1
    # Every byte of the stored audio went through the spool, and was counted once.
    assert metric(after, "callrec_live_spooled_bytes_total") == recording["audio_size"]
    # Two parties, 20 ms packets: 50 a second each, none lost on loopback.
    received = metric(after, "callrec_live_packets_received_total")
    assert received >= 2 * 50 * (recording["duration_s"] - 0.2)
    assert metric(after, "callrec_live_packets_lost_total") == 0
    assert metric(after, "callrec_live_packets_late_total") >= 0


@pytest.fixture
def replica(
    whip_backend: StorageBackend, tmp_path: Path, now: datetime, clock: Clock
) -> Iterator[TestClient]:
    """A second gateway on the same database and bucket, with a spool of its own."""
    settings = whip_backend.settings.model_copy(update={"data_dir": tmp_path / "replica"})
    backend = StorageBackend(settings)
    backend.start(now=now)
    with TestClient(create_app(backend, clock=clock), raise_server_exceptions=False) as client:
        yield client
    backend.stop()


def test_an_opt_out_taken_by_another_gateway_discards_the_live_capture(
    client: TestClient, replica: TestClient, whip_backend: StorageBackend
) -> None:
    tenant = make_tenant(client)
    decision = _decide(client, tenant, "two-gateways")
    live = client.app.state.live  # type: ignore[attr-defined]
    latency: list[float] = []

    async def call() -> None:
        publisher = Publisher(client, tenant.integrator, [440])
        await publisher.publish(decision["whip_url"])
        await asyncio.sleep(1.0)
        opted_out = await asyncio.to_thread(
            replica.post, "/v1/calls/two-gateways/opt-out", headers=tenant.integrator
        )
        assert opted_out.status_code == 200, opted_out.text
        answered = time.monotonic()
        await _until(lambda: live.active == 0, "the opt-out reaching the other gateway")
        latency.append(time.monotonic() - answered)
        await publisher.pc.close()

    _run(call)

    listed = replica.get("/v1/recordings", headers=tenant.client_admin).json()["items"]
    assert [r["state"] for r in listed] == ["failed"]
    assert not [key for key in whip_backend.store.list_keys() if key.startswith(tenant.id)]
    assert live.ended.get("caller_opted_out") == 1
    assert latency

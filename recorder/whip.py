"""WHIP (RFC 9725): a WebRTC publisher's audio recorded through aiortc.

``POST /v1/whip/{decision_id}`` takes an SDP offer with the integrator's key and
answers ``201`` with the SDP answer and the session's ``Location``; ``DELETE`` on that
location ends the call and stores it. Each ``m=audio`` of the offer is one party, one
channel of the recording, in the offer's order; other media are declined.

Opus is kept as it arrived: RTP packets are taken from aiortc's receiver before its
jitter buffer and decoder (``_handle_rtp_packet``, a private method: aiortc's version is
pinned and a test fails if the tap stops seeing packets), and handed to the capture
session, whose timelines do the jitter handling. aiortc's decoder thread then idles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription, sdp
from aiortc.rtp import RtpPacket
from fastapi import APIRouter, Depends, FastAPI, Request, Response, status
from pydantic import BaseModel, Field

from consent.api_auth import Integrator, tenant_of
from consent.errors import InvalidRequest, PayloadTooLarge, UnsupportedMedia
from recorder._exceptions import NoTrickle
from recorder.capture import PacketSink
from recorder.capture.codecs import OPUS
from recorder.live import LiveCall, LiveCaptures

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024  # an offer with eight audio sections is under 10 KiB
MAX_CHANNELS = 8
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location",
}

router = APIRouter(prefix="/v1", tags=["whip"])
_PREFIX = "/v1/whip/"


def get_live(request: Request) -> LiveCaptures:
    live: LiveCaptures = request.app.state.live
    return live


Live = Annotated[LiveCaptures, Depends(get_live)]


class WhipEnded(BaseModel):
    """A WHIP session as it ended."""

    session_id: str = Field(description="The session's id, the last part of its Location.")
    call_id: str = Field(description="The platform's call id the session recorded.")
    state: str = Field(description="`ended` (the recording was stored) or `discarded`.")
    recording_id: str | None = Field(
        description="The stored recording; null when nothing was kept (no media, opt-out)."
    )


async def _offer(request: Request) -> str:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/sdp":
        raise UnsupportedMedia(f"a WHIP offer is application/sdp, not {media_type or '(none)'}")
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_OFFER_BYTES:
            raise PayloadTooLarge(f"an SDP offer over {MAX_OFFER_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the SDP offer is not UTF-8", code="invalid_sdp") from exc


async def _answer(pc: RTCPeerConnection, offer: str) -> int:
    """Take the offer, receive each audio section with Opus only; the channel count."""
    if "m=audio" not in offer:
        raise InvalidRequest("the offer has no audio section", code="invalid_sdp")
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    # aiortc's parser meets a cut-off line with whatever error its code trips on.
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        raise InvalidRequest(f"the SDP offer cannot be used: {exc}", code="invalid_sdp") from exc
    sections = [m for m in sdp.SessionDescription.parse(offer).media if m.kind == "audio"]
    if any(not any(c.mimeType.lower() == "audio/opus" for c in m.rtp.codecs) for m in sections):
        # aiortc would answer with the offer's other codec: a live call is kept as Opus only.
        raise InvalidRequest("every audio section must offer Opus", code="invalid_sdp")
    opus = [
        codec
        for codec in (RTCRtpReceiver.getCapabilities("audio") or _no_codecs()).codecs
        if codec.mimeType.lower() == "audio/opus"
    ]
    channels = 0
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "audio":
            transceiver.setCodecPreferences(opus)
            transceiver.direction = "recvonly"
            channels += 1
        else:
            transceiver.direction = "inactive"
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidRequest(f"{channels} audio sections; 1 to {MAX_CHANNELS}", code="invalid_sdp")
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except (ValueError, KeyError) as exc:  # e.g. no codec in common
        raise InvalidRequest(f"no answer to this offer: {exc}", code="invalid_sdp") from exc
    return channels


def _no_codecs() -> Any:
    raise InvalidRequest("this build of aiortc receives no audio", code="invalid_sdp")


def _tap(live: LiveCaptures, call: LiveCall, pc: RTCPeerConnection) -> None:
    """Hand every audio RTP packet to the capture session, in place of aiortc's decoding."""
    audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
    for channel, transceiver in enumerate(audio):
        inlet = live.inlet(call, channel)

        def handle(
            packet: RtpPacket, arrival_time_ms: int, inlet: PacketSink = inlet
        ) -> Coroutine[Any, Any, None]:
            inlet(packet.ssrc, packet.sequence_number, packet.timestamp, packet.payload)
            return _done()

        transceiver.receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


async def _done() -> None:
    return None


@router.post(
    "/whip/{decision_id}",
    status_code=status.HTTP_201_CREATED,
    response_class=Response,
    responses={201: {"content": {"application/sdp": {}}, "description": "the SDP answer"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/sdp": {"schema": {"type": "string"}}},
        }
    },
)
async def publish(
    decision_id: str, request: Request, live: Live, principal: Integrator
) -> Response:
    """Start recording a WebRTC call: an SDP offer in, the answer and the session out."""
    offer = await _offer(request)
    decision = await asyncio.to_thread(
        live.decision_for,
        decision_id,
        client_id=tenant_of(principal),
        channel="whip",
        actor=principal.actor,
    )
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        channels = await _answer(pc, offer)
        call = await live.open(
            decision, codec=OPUS, channels=channels, close_transport=pc.close, prefix="whip"
        )
    except BaseException:
        await pc.close()
        raise
    _tap(live, call, pc)
    _end_on_failure(live, call, pc)
    return Response(
        pc.localDescription.sdp,
        status_code=status.HTTP_201_CREATED,
        media_type="application/sdp",
        headers={"Location": f"/v1/whip/sessions/{call.id}"},
    )


def _end_on_failure(live: LiveCaptures, call: LiveCall, pc: RTCPeerConnection) -> None:
    @pc.on("connectionstatechange")
    async def changed() -> None:
        if pc.connectionState in ("failed", "closed") and call.session.live:
            log.info("live session %s: the peer connection is %s", call.id, pc.connectionState)
            await live.end(call)


@router.delete("/whip/sessions/{session_id}")
async def stop(session_id: str, live: Live, principal: Integrator) -> WhipEnded:
    """End the WHIP session: the call's recording is stored."""
    call = live.get(session_id, client_id=tenant_of(principal))
    recording = await live.end(call)
    return WhipEnded(
        session_id=call.id,
        call_id=call.call_id,
        state=call.session.state,
        recording_id=None if recording is None else recording.id,
    )


@router.patch(
    "/whip/sessions/{session_id}",
    status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
    response_model=None,
    responses={
        405: {
            "description": "Trickle ICE and ICE restarts are not offered.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    },
)
async def no_trickle(session_id: str, principal: Integrator) -> None:
    """Not offered: every ICE candidate is in the answer, and a new session replaces a restart."""
    raise NoTrickle(
        "trickle ICE and ICE restarts are not offered; every candidate is in the answer"
    )


def install_cors(app: FastAPI) -> None:
    """CORS on every WHIP answer, errors included, so a page on another origin can publish.

    Bearer keys, not cookies, authenticate, so allowing any origin lends a page nothing
    it does not already hold; the rest of the API stays same-origin.
    """

    @app.middleware("http")
    async def _cors(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not request.url.path.startswith(_PREFIX):
            return await call_next(request)
        if request.method == "OPTIONS":
            return Response(status_code=status.HTTP_204_NO_CONTENT, headers=CORS)
        response = await call_next(request)
        response.headers.update(CORS)
        return response


__all__ = ["CORS", "install_cors", "router"]

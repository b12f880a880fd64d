"""WebRTC publishers for ``bench.whip_sessions``, in a process of their own.

Each session is a real aiortc peer connection (ICE, DTLS, SRTP) offering one audio
track over WHIP. The track hands aiortc *encoded* Opus packets (``av.Packet``), which
its sender only packetizes (``Encoder.pack``): nothing is encoded per session. Opus is
encoded once per tone at start (one second, 50 packets of 20 ms, a whole number of
periods so the loop is seamless) and replayed, paced on the wall clock as a
microphone's would be, with a timestamp that keeps counting.

Run by the benchmark as ``python -m bench.whip_publishers CONFIG_JSON``. It prints
``ramped`` once every session is connected, ``held`` after the hold, then one JSON
line with its figures; progress goes to stderr.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import statistics
import sys
import time
from array import array
from dataclasses import dataclass
from typing import Any

import av
import httpx2 as httpx
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from recorder.ice import use_ice_addresses

RATE = 48_000
FRAME = 960  # 20 ms
TIME_BASE = fractions.Fraction(1, RATE)
# The gateway keeps a packet that comes up to 80 ms after its time (its reorder
# allowance): a publisher this far behind shows that lateness starts on this side.
BEHIND_S = 0.08
TONES = (330.0, 440.0, 550.0, 660.0, 770.0, 880.0, 990.0, 1100.0)


def encode_tone(hz: float) -> list[bytes]:
    """One second of a tone as 50 Opus packets (mono, 20 ms), encoded once."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = RATE, "mono", "s16"
    codec.bit_rate = 32_000
    codec.time_base = TIME_BASE
    packets: list[bytes] = []
    sent = 0
    while len(packets) < RATE // FRAME:
        pcm = array(
            "h",
            (int(8000 * math.sin(2 * math.pi * hz * (sent + n) / RATE)) for n in range(FRAME)),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate, frame.pts, frame.time_base = RATE, sent, TIME_BASE
        packets += [bytes(p) for p in codec.encode(frame)]
        sent += FRAME
    return packets[: RATE // FRAME]


class PreEncoded(MediaStreamTrack):
    """A microphone whose Opus was encoded beforehand: aiortc only packetizes it."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        self._packets, self.sent, self._start = packets, 0, 0.0
        self.behind = 0  # packets handed to aiortc more than BEHIND_S after their time

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        if self.sent == 0:
            self._start = time.monotonic()
        wait = self._start + self.sent * FRAME / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -BEHIND_S:
            self.behind += 1
        packet = av.Packet(self._packets[self.sent % len(self._packets)])
        packet.pts, packet.time_base = self.sent * FRAME, TIME_BASE
        self.sent += 1
        return packet


@dataclass
class Session:
    pc: RTCPeerConnection
    track: PreEncoded
    location: str = ""
    post_s: float = 0.0
    live_at_post: int = 0  # sessions already streaming when this one was offered


async def start(
    http: httpx.AsyncClient, config: dict[str, Any], index: int, tone: list[bytes], live: int
) -> Session:
    headers = {"Authorization": f"Bearer {config['key']}"} if config["key"] else {}
    if config["mode"] == "callrec":
        body = {
            "call_id": f"{config['tag']}-{index}",
            "direction": "inbound",
            "from": "+212612345678",
            "to": "+212522000000",
            "channel": "whip",
            "jurisdiction": "US-NY",
        }
        decision = (await http.post("/v1/calls", json=body, headers=headers)).json()
        if not decision.get("record"):
            raise RuntimeError(f"the call hook did not allow recording: {decision}")
        url = decision["whip_url"]
    else:
        url = "/offer"
    track = PreEncoded(tone)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    session = Session(pc, track, live_at_post=live)
    started = time.perf_counter()
    answer = await http.post(
        url,
        content=pc.localDescription.sdp,
        headers={**headers, "Content-Type": "application/sdp"},
    )
    session.post_s = time.perf_counter() - started
    if answer.status_code != 201:
        raise RuntimeError(f"offer {index}: {answer.status_code} {answer.text}")
    session.location = answer.headers["location"]
    await pc.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))
    deadline = time.monotonic() + 30
    while pc.connectionState != "connected":
        if time.monotonic() > deadline:
            raise RuntimeError(f"session {index} did not connect ({pc.connectionState})")
        await asyncio.sleep(0.05)
    return session


async def run(config: dict[str, Any]) -> dict[str, Any]:
    use_ice_addresses(["127.0.0.1"])  # media to loopback only
    tones = [encode_tone(hz) for hz in TONES]
    sessions: list[Session] = []
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=config["url"], timeout=60, limits=limits) as http:
        tasks: list[asyncio.Task[Session]] = []
        for index in range(config["sessions"]):
            tone = tones[index % len(tones)]
            live = sum(1 for t in tasks if t.done())
            tasks.append(asyncio.create_task(start(http, config, index, tone, live)))
            await asyncio.sleep(1 / config["ramp_per_s"])
        sessions = list(await asyncio.gather(*tasks))
        print("ramped", flush=True)
        cpu_before = time.process_time()
        await asyncio.sleep(config["hold_s"])
        cpu_held = time.process_time() - cpu_before
        print("held", flush=True)
        headers = {"Authorization": f"Bearer {config['key']}"} if config["key"] else {}
        ended = []
        for session in sessions:
            answer = await http.delete(session.location, headers=headers)
            # Counted once the gateway has ended the session: a packet in flight as it
            # closed counts as lost.
            ended.append((answer.status_code, answer.json(), session.track.sent))
            await session.pc.close()
    posts = sorted(s.post_s for s in sessions)
    loaded = sorted(s.post_s for s in sessions if s.live_at_post >= 0.75 * len(sessions))
    return {
        "sent": sum(e[2] for e in ended),
        "behind": sum(s.track.behind for s in sessions),
        "ended": [[status, body] for status, body, _ in ended],
        "post_p50_ms": 1000 * statistics.median(posts),
        "post_p95_ms": 1000 * _p95(posts),
        "post_max_ms": 1000 * posts[-1],
        "post_loaded_p95_ms": 1000 * _p95(loaded) if loaded else None,
        "post_loaded_n": len(loaded),
        "publisher_cpu_share": cpu_held / config["hold_s"],
    }


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)]


if __name__ == "__main__":
    result = asyncio.run(run(json.loads(sys.argv[1])))
    print(json.dumps(result), flush=True)

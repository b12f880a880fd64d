"""The baseline for ``bench.whip_sessions``: stock aiortc recording WHIP-like offers.

A bare FastAPI app under uvicorn, in a process of its own, run as
``python -m bench.whip_stock PORT DIR``: ``POST /offer`` (an SDP offer) answers ``201``
with the SDP answer and a ``Location``; each incoming track goes to aiortc's
``MediaRecorder`` writing an Ogg/Opus file, which is what stock aiortc does to keep a
call: its receiver decodes every packet and the recorder encodes the audio again.
``DELETE`` on the location stops the recorder and closes the peer connection. No
consent, no catalog, no encryption, no S3: only the media work.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import uvicorn
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRecorder
from fastapi import FastAPI, Request, Response

from recorder.ice import use_ice_addresses


def create(directory: Path) -> FastAPI:
    app = FastAPI()
    sessions: dict[int, tuple[RTCPeerConnection, MediaRecorder]] = {}
    numbers = itertools.count(1)

    @app.post("/offer")
    async def offer(request: Request) -> Response:
        index = next(numbers)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        recorder = MediaRecorder(str(directory / f"{index}.ogg"))
        sessions[index] = (pc, recorder)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            recorder.addTrack(track)

        sdp = (await request.body()).decode()
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await recorder.start()
        return Response(
            pc.localDescription.sdp,
            status_code=201,
            media_type="application/sdp",
            headers={"Location": f"/sessions/{index}"},
        )

    @app.delete("/sessions/{index}")
    async def stop(index: int) -> dict[str, Any]:
        pc, recorder = sessions.pop(index)
        await recorder.stop()
        await pc.close()
        return {"state": "ended", "size": (directory / f"{index}.ogg").stat().st_size}

    return app


if __name__ == "__main__":
    use_ice_addresses(["127.0.0.1"])  # media to loopback only
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    uvicorn.run(create(directory), host="127.0.0.1", port=port, log_level="warning")

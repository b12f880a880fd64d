"""Real Opus packets and a decoder's view of what capture wrote."""

from __future__ import annotations

import io
import math
from array import array
from collections.abc import Sequence

import av

RATE = 48_000
FRAME = 960  # 20 ms


def encode(seconds: float, hz: float, *, bitrate: int = 32_000) -> list[bytes]:
    """Real Opus packets from libopus, 20 ms each, as an RTP sender would carry them."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = RATE, "mono", "s16"
    encoder.bit_rate = bitrate
    packets: list[bytes] = []
    for step in range(int(seconds * RATE) // FRAME):
        start = step * FRAME
        pcm = array(
            "h", (int(8000 * math.sin(2 * math.pi * hz * (start + n) / RATE)) for n in range(FRAME))
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate, frame.pts = RATE, start
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return packets


def decode(data: bytes) -> tuple[int, list[array[float]]]:
    """Channel count and each channel's samples, as PyAV's FFmpeg decodes the file."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        channels: list[array[float]] = [array("f") for _ in range(stream.codec_context.channels)]
        for frame in container.decode(stream):
            assert frame.format.name == "fltp"  # one plane of 32-bit floats per channel
            for channel, plane in zip(channels, frame.planes, strict=True):
                channel.frombytes(bytes(plane)[: 4 * frame.samples])
    return len(channels), channels


def rms(samples: Sequence[float]) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(len(samples), 1))

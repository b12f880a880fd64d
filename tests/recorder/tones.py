"""What a recording sounds like, measured in pure Python: pitch, loudness, silent stretches."""

from __future__ import annotations

import io
from array import array
from collections.abc import Sequence

import av

from tests.recorder.capture.media import rms

RATE = 48_000


def decode_channels(data: bytes) -> list[array[float]]:
    """Each channel's samples (floats), as PyAV's FFmpeg decodes the stored file."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        channels: list[array[float]] = [array("f") for _ in range(stream.codec_context.channels)]
        for frame in container.decode(stream):
            for channel, plane in zip(channels, frame.planes, strict=True):
                channel.frombytes(bytes(plane)[: 4 * frame.samples])
    return channels


def dominant_hz(samples: Sequence[float], rate: int = RATE) -> float:
    """A pure tone's frequency from its rising zero crossings, placed between samples.

    Crossings are counted from the first to the last, so the estimate is whole periods
    over their exact span: a few Hz at worst over a fraction of a second of a clean tone.
    """
    crossings: list[float] = []
    for n in range(1, len(samples)):
        before, after = samples[n - 1], samples[n]
        if before < 0.0 <= after:
            crossings.append(n - 1 + before / (before - after))
    if len(crossings) < 2:
        return 0.0
    return (len(crossings) - 1) * rate / (crossings[-1] - crossings[0])


def silent_stretches(
    samples: Sequence[float], *, rate: int = RATE, window_s: float = 0.01, floor: float = 0.01
) -> list[tuple[float, float]]:
    """Where the signal is silent, as (start, end) in seconds, to a window's precision."""
    window = int(rate * window_s)
    stretches: list[tuple[float, float]] = []
    start: float | None = None
    for at in range(0, len(samples) - window + 1, window):
        quiet = rms(samples[at : at + window]) < floor
        if quiet and start is None:
            start = at / rate
        elif not quiet and start is not None:
            stretches.append((start, at / rate))
            start = None
    if start is not None:
        stretches.append((start, len(samples) / rate))
    return stretches


def loud_stretches(
    samples: Sequence[float], *, rate: int = RATE, floor: float = 0.01
) -> list[tuple[float, float]]:
    """Where the signal is not silent, as (start, end) in seconds: what ``silent_stretches``
    leaves, to a 10 ms window's precision."""
    quiet = silent_stretches(samples, rate=rate, floor=floor)
    edges = [0.0, *(t for stretch in quiet for t in stretch), len(samples) / rate]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b > a]

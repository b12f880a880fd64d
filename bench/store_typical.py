"""A typical call through the vault against raw put_object of the same bytes.

A typical recording is three minutes of two-channel Ogg/Opus at 32 kbit/s per channel,
about 1.4 MB. Ours is the whole store path for it: catalog row, data key, encrypted
spool, upload with tags, catalog update and audit event. Raw is one boto3
``put_object`` of the same bytes to the same SeaweedFS. Interleaved, median of many
rounds; ratio = raw time / our time (target >= 0.6).
"""

from __future__ import annotations

import io
import random
import tempfile
import time
from array import array
from pathlib import Path

import av

from bench.harness import MIB, bench_setup, draft, now
from storage.embedded_s3 import VOLUME_SIZE_MB

SECONDS = 180
RATE = 48_000
ROUNDS = 40


def typical_call(seconds: int = SECONDS) -> bytes:
    """Two parties taking turns to speak, one channel each, as Ogg/Opus.

    Noise stands in for speech: it costs the encoder as much and fills the bit rate.
    """
    rng = random.Random(7)
    frame_size = 960
    # One second of interleaved stereo per speaker, loud on their own channel only.
    turns = []
    for speaker in (0, 1):
        pcm = array("h")
        for _ in range(RATE):
            loud, quiet = rng.randint(-3000, 3000), rng.randint(-150, 150)
            pcm.extend((loud, quiet) if speaker == 0 else (quiet, loud))
        turns.append(pcm.tobytes())
    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=RATE, layout="stereo")
        # Opus spends less on the quiet side; this lands at the ~1.4 MB of a typical call.
        stream.bit_rate = 72_000
        step = frame_size * 4  # bytes of one frame of s16 stereo
        for start in range(0, seconds * RATE, frame_size):
            turn = turns[(start // (RATE * 3)) % 2]  # parties take turns every 3 s
            offset = (start % RATE) * 4
            frame = av.AudioFrame(format="s16", layout="stereo", samples=frame_size)
            frame.planes[0].update(turn[offset : offset + step])
            frame.sample_rate, frame.pts = RATE, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def run() -> dict[str, float]:
    data = typical_call()
    with tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp, bench_setup(Path(tmp)) as b:
        client = b.store.client
        b.s3.grow_volumes(b.store.bucket, 2 * ROUNDS * len(data) // (VOLUME_SIZE_MB * MIB) + 2)
        raw_times: list[float] = []
        our_times: list[float] = []
        for i in range(ROUNDS + 1):  # the first round warms both paths up and is dropped
            started = time.perf_counter()
            client.put_object(Bucket=b.store.bucket, Key=f"raw/{i}.ogg", Body=data)
            raw = time.perf_counter() - started
            started = time.perf_counter()
            b.vault.store(draft(f"call-{i}"), [data], now=now())
            ours = time.perf_counter() - started
            if i:
                raw_times.append(raw)
                our_times.append(ours)
    raw_s, our_s = sorted(raw_times)[ROUNDS // 2], sorted(our_times)[ROUNDS // 2]
    ratio = raw_s / our_s
    print(f"typical call: {len(data) / 1e6:.2f} MB of two-channel Ogg/Opus, {SECONDS} s")
    print(f"typical call: raw put_object median {raw_s * 1000:.1f} ms")
    print(f"typical call: callrec vault  median {our_s * 1000:.1f} ms")
    print(f"typical call: ratio raw/ours = {ratio:.2f} (target >= 0.60)")
    return {"raw_s": raw_s, "ours_s": our_s, "ratio": ratio, "bytes": len(data)}


if __name__ == "__main__":
    run()

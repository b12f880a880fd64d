"""Encrypted streaming store of 64 MiB against raw boto3 put_object of the same bytes.

Both go to the same SeaweedFS in the same run, interleaved, median of several runs.
Ours is the whole store path: encrypt into the spool while the multipart upload (tagged
at its start) sends each whole part, then the last part, catalog row and audit event.
Ratio = raw time / our time (≥ 0.9 is the target).

Both write into the same bucket, whose SeaweedFS volumes fill every 128 MiB; the
write that finds them full waits about a second while one more is added. One round
(raw then ours) writes a little over 128 MiB, so that wait would fall on the same side
round after round and decide the median. Volumes for every byte of the run are grown
before it starts.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.harness import MIB, bench_setup, draft, now
from storage.embedded_s3 import VOLUME_SIZE_MB

SIZE = 64 * MIB
RUNS = 5


def _pieces(data: bytes, size: int = MIB) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run() -> dict[str, float]:
    data = os.urandom(SIZE)
    pieces = _pieces(data)
    with tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp, bench_setup(Path(tmp)) as b:
        client = b.store.client
        # Both sides, every round, with room to spare for the ciphertext's overhead.
        written = 2 * (RUNS + 1) * SIZE
        b.s3.grow_volumes(b.store.bucket, written // (VOLUME_SIZE_MB * MIB) + 2)
        raw_times: list[float] = []
        our_times: list[float] = []
        for i in range(RUNS + 1):  # the first round warms both paths up and is dropped
            started = time.perf_counter()
            client.put_object(Bucket=b.store.bucket, Key=f"raw/{i}.bin", Body=data)
            raw = time.perf_counter() - started
            started = time.perf_counter()
            b.vault.store(draft(f"call-{i}"), pieces, now=now())
            ours = time.perf_counter() - started
            if i:
                raw_times.append(raw)
                our_times.append(ours)
    raw_s, our_s = sorted(raw_times)[RUNS // 2], sorted(our_times)[RUNS // 2]
    ratio = raw_s / our_s
    for name, seconds in (("raw put_object", raw_s), ("callrec vault ", our_s)):
        rate = SIZE / MIB / seconds
        print(f"store 64 MiB: {name} median {seconds * 1000:.0f} ms ({rate:.0f} MiB/s)")
    print(f"store 64 MiB: ratio raw/ours = {ratio:.2f} (target >= 0.90)")
    return {"raw_s": raw_s, "ours_s": our_s, "ratio": ratio}


if __name__ == "__main__":
    run()

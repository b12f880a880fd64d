"""Peak RSS while storing a 1 GiB recording, above the process's own baseline.

Runs in a child process so that the figure is this store alone: the baseline is the
RSS once everything is imported and one small recording went through; the peak is
``ru_maxrss`` after the 1 GiB store (SeaweedFS is another process, not counted).
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from bench.harness import MIB, bench_setup, draft, now

SIZE = 1024 * MIB
LIMIT_MIB = 100


def _audio_like(total: int) -> Iterator[bytes]:
    # Incompressible pieces made on the fly: the source itself holds one MiB at a time.
    seed = hashlib.sha256(b"callrec").digest()
    for i in range(total // MIB):
        block = hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        yield block * (MIB // len(block))


def child() -> None:
    with tempfile.TemporaryDirectory(prefix="callrec-rss-") as tmp, bench_setup(Path(tmp)) as b:
        b.vault.store(draft("warm-up"), _audio_like(4 * MIB), now=now())
        baseline = psutil.Process().memory_info().rss
        started = time.perf_counter()
        recording = b.vault.store(draft("big"), _audio_like(SIZE), now=now())
        elapsed = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        assert recording.size is not None and recording.size > SIZE
    print(json.dumps({"baseline": baseline, "peak": peak, "seconds": elapsed}))


def run() -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.store_rss", "--child"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    extra = (figures["peak"] - figures["baseline"]) / MIB
    print(
        f"store 1 GiB: baseline RSS {figures['baseline'] / MIB:.0f} MiB, "
        f"peak {figures['peak'] / MIB:.0f} MiB, +{extra:.0f} MiB above baseline "
        f"(limit +{LIMIT_MIB} MiB), {SIZE / MIB / figures['seconds']:.0f} MiB/s"
    )
    return {"extra_mib": extra, "seconds": figures["seconds"]}


if __name__ == "__main__":
    child() if "--child" in sys.argv else run()

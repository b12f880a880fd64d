"""Purge of 20,000 expired recordings against raw boto3 DeleteObjects of the same keys.

Both run on the same SeaweedFS (versioned bucket, as callrec runs it) in the same run.
The keys are uploaded and deleted raw with DeleteObjects: 1,000 per request, each key
with its version id (which is what removes the data from a versioned bucket), one
request at a time for the baseline and, as a stricter reference, eight at once as
callrec sends them. Then they are uploaded again, catalogued as expired recordings
(SQLite, with their purposes and wrapped data keys) and purged by ``Purger.sweep``:
catalog claims, every version deleted, the bucket read back, keys destroyed, rows
marked purged and one deletion certificate each. Each round does all three; medians
over ``ROUNDS`` rounds are compared. Ratio = raw time / ours (≥ 0.8 is the target).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, func, select

from bench.harness import Bench, bench_setup
from retention.purge import Purger
from storage.audit import AuditEvent
from storage.catalog import Recording, RecordingPurpose, RecordingState, object_key
from storage.ids import new_id
from storage.keyring import RecordingKey
from storage.settings import Settings

COUNT = 20_000
ROUNDS = 2
DAYS = 20  # recordings spread over this many days, so over this many folders
BODY = 1024
TAGS = "client=bench&purpose%3Aresearch=2026-06-01"
CREATED = datetime(2026, 5, 1, tzinfo=UTC)
AS_OF = CREATED + timedelta(days=60)
TARGET = 0.8
_NAMES = {
    "raw": "raw DeleteObjects, one request at a time ",
    "raw8": "raw DeleteObjects, eight requests at once",
    "ours": "callrec purge                            ",
}


def _recordings() -> list[tuple[str, str, datetime]]:
    """(id, object key, created at) of every recording, spread over ``DAYS`` days."""
    step = timedelta(days=DAYS) / COUNT
    made = []
    for i in range(COUNT):
        created = CREATED + i * step
        rid = new_id("rec", created)
        made.append(
            (
                rid,
                object_key(client_id="bench", recording_id=rid, created_at=created, ext="ogg"),
                created,
            )
        )
    return made


def _upload(b: Bench, keys: list[str]) -> dict[str, str]:
    """Put every key (tagged like a recording); key → version id."""
    client, bucket = b.store.client, b.store.bucket

    def put(key: str) -> tuple[str, str]:
        answer = client.put_object(Bucket=bucket, Key=key, Body=os.urandom(BODY), Tagging=TAGS)
        return key, answer["VersionId"]

    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(put, keys))


def _raw_delete(b: Bench, versions: dict[str, str], *, at_once: int) -> float:
    """DeleteObjects of every key with its version id, 1,000 per request."""
    objects = [{"Key": key, "VersionId": version} for key, version in versions.items()]
    batches = [objects[start : start + 1000] for start in range(0, len(objects), 1000)]

    def delete(batch: list[dict[str, str]]) -> None:
        b.store.client.delete_objects(
            Bucket=b.store.bucket,
            Delete={"Objects": batch, "Quiet": True},  # type: ignore[typeddict-item]
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(delete, batches))
    return time.perf_counter() - started


def _catalog(
    b: Bench, recordings: list[tuple[str, str, datetime]], versions: dict[str, str]
) -> None:
    """The expired recordings, their purposes and wrapped keys, in one transaction."""
    rows, purposes, keys = [], [], []
    for rid, key, created in recordings:
        rows.append(
            {
                "id": rid,
                "client_id": "bench",
                "call_id": f"call-{rid}",
                "channel": "upload",
                "codec": "opus",
                "container": "ogg",
                "channels": 1,
                "size": BODY,
                "sha256": "0" * 64,
                "object_key": key,
                "version_id": versions[key],
                "state": RecordingState.STORED,
                "legal_hold": False,
                "created_at": created,
                "updated_at": created,
            }
        )
        purposes.append(
            {"recording_id": rid, "purpose": "research", "expires_at": created + timedelta(days=30)}
        )
        keys.append(
            {
                "recording_id": rid,
                "client_id": "bench",
                "wrapped": os.urandom(60),
                "created_at": created,
            }
        )
    with b.engine.begin() as connection:
        connection.execute(sa.insert(Recording), rows)
        connection.execute(sa.insert(RecordingPurpose), purposes)
        connection.execute(sa.insert(RecordingKey), keys)


def _check(b: Bench, recordings: list[tuple[str, str, datetime]], certificates: int) -> None:
    """Everything went: no version left, every key destroyed, one certificate each."""
    left = b.store.versions_of([key for _, key, _ in recordings])
    assert not any(left.values()), "versions left in the bucket"
    with Session(b.engine) as session:
        live = session.exec(select(func.count()).where(RecordingKey.wrapped.is_not(None)))  # type: ignore[union-attr]
        assert live.one() == 0, "live keys left"
        done = session.exec(select(func.count()).where(AuditEvent.kind == "recording.purged"))
        assert done.one() == certificates, "a certificate missing"


def run() -> dict[str, float]:
    recordings = _recordings()
    keys = [key for _, key, _ in recordings]
    times: dict[str, list[float]] = {name: [] for name in _NAMES}
    with tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp, bench_setup(Path(tmp)) as b:
        purger = Purger(
            engine=b.engine,
            store=b.store,
            keyring=b.keyring,
            audit=b.audit,
            batch_size=Settings.model_fields["purge_batch_size"].default,
        )
        for round_ in range(ROUNDS):
            times["raw"].append(_raw_delete(b, _upload(b, keys), at_once=1))
            times["raw8"].append(_raw_delete(b, _upload(b, keys), at_once=8))
            with b.engine.begin() as connection:  # each round catalogues the same ids anew
                for table in (RecordingKey, RecordingPurpose, Recording):
                    connection.execute(sa.delete(table))
            versions = _upload(b, keys)
            _catalog(b, recordings, versions)
            started = time.perf_counter()
            report = purger.sweep(as_of=AS_OF, now=AS_OF)
            times["ours"].append(time.perf_counter() - started)
            assert (report.purged, report.failed) == (COUNT, []), report
            _check(b, recordings, certificates=COUNT * (round_ + 1))
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, label in _NAMES.items():
        seconds = median[name]
        print(f"purge {COUNT:,}: {label} median {seconds:.2f} s ({COUNT / seconds:,.0f}/s)")
    ratio = median["raw"] / median["ours"]
    verdict = "OK" if ratio >= TARGET else "BELOW TARGET"
    print(f"purge {COUNT:,}: ratio raw/ours = {ratio:.2f} (target >= {TARGET:.2f}: {verdict})")
    strict = median["raw8"] / median["ours"]
    print(f"purge {COUNT:,}: ratio raw 8 at once/ours = {strict:.2f} (no target; for reference)")
    return {**{f"{name}_s": seconds for name, seconds in median.items()}, "ratio": ratio}


if __name__ == "__main__":
    run()

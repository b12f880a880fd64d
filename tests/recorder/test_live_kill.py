"""kill -9 of a gateway in the middle of a WHIP call, then a restart: the call is kept.

A real ``callrec serve`` process records a real aiortc publisher's tone. Once the
spool holds a few whole encrypted chunks the gateway is killed; the restart's
recovery seals the spool at its last whole chunk and stores it, marked recovered,
with nothing else left in the bucket.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import secrets
import struct
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import av
import httpx2 as httpx
import pytest

from recorder.ice import use_ice_addresses
from storage import crypto
from storage.embedded_s3 import EmbeddedS3
from tests.conftest import drop_bucket, unique_bucket
from tests.recorder.capture.media import rms
from tests.recorder.conftest import ADMIN, ADMIN_KEY, call_body, make_tenant
from tests.recorder.test_store_path_kill import BOUND, Gateway, _free_port
from tests.recorder.test_whip import Publisher

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from mypy_boto3_s3 import S3Client

HZ = 440.0
RATE = 48_000
CHUNKS = 2  # whole encrypted chunks in the spool before the kill
FRAME = crypto.DEFAULT_CHUNK_SIZE + 16  # a chunk and its tag


@pytest.fixture
def bucket(s3_admin: S3Client) -> Iterator[str]:
    name = unique_bucket()
    yield name
    drop_bucket(s3_admin, name)


@pytest.fixture
def gateway(s3_server: EmbeddedS3, bucket: str, tmp_path: Path) -> Iterator[Gateway]:
    cfg = s3_server.config(bucket)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env |= {
        "CALLREC_DATA_DIR": str(tmp_path / "var"),
        "CALLREC_S3_ENDPOINT_URL": cfg.endpoint_url,
        "CALLREC_S3_ACCESS_KEY_ID": cfg.access_key_id,
        "CALLREC_S3_SECRET_ACCESS_KEY": cfg.secret_access_key,
        "CALLREC_S3_BUCKET": bucket,
        "CALLREC_MASTER_KEY": secrets.token_urlsafe(32)[:43] + "=",
        "CALLREC_ADMIN_KEY": ADMIN_KEY,
        "CALLREC_HTTP_PORT": str(_free_port()),
        "CALLREC_SIP_PORT": "0",
        "CALLREC_LOG_LEVEL": "WARNING",
        "CALLREC_ICE_ADDRESSES": "127.0.0.1",
        "CALLREC_S3_PART_SIZE": str(5 * 1024 * 1024),
    }
    gateway = Gateway(env, int(env["CALLREC_HTTP_PORT"]), tmp_path / "serve.log")
    gateway.start()
    yield gateway
    gateway.stop()


def test_a_live_call_survives_kill_9_of_its_gateway(
    gateway: Gateway, bucket: str, s3_admin: S3Client, tmp_path: Path
) -> None:
    use_ice_addresses(["127.0.0.1"])
    spool = tmp_path / "var" / "spool"
    with httpx.Client(base_url=gateway.url, timeout=BOUND) as http:
        tenant = make_tenant(cast("TestClient", http))
        decision = http.post(
            "/v1/calls", json=call_body("c-live-kill", channel="whip"), headers=tenant.integrator
        ).json()
        assert decision["record"] is True, decision

        def spooled() -> int:
            return sum(p.stat().st_size for p in spool.glob("*.part"))

        async def call() -> None:
            publisher = Publisher(cast("TestClient", http), tenant.integrator, [HZ])
            try:
                await publisher.publish(decision["whip_url"])
                # Whole chunks reach the file as they are sealed: wait for a few.
                while spooled() < crypto.HEADER_SIZE + CHUNKS * FRAME:
                    assert gateway.process is not None and gateway.process.poll() is None
                    await asyncio.sleep(0.1)
                gateway.kill()  # mid-call: the spool is never sealed
            finally:
                await publisher.pc.close()

        asyncio.run(asyncio.wait_for(call(), BOUND))
    (part,) = spool.glob("*.part")
    torn = part.stat().st_size

    gateway.start()  # recovery runs before the gateway answers ready
    assert list(spool.iterdir()) == []
    with httpx.Client(base_url=gateway.url, timeout=BOUND) as http:
        (recording,) = http.get("/v1/recordings", headers=tenant.client_admin).json()["items"]
        assert (recording["state"], recording["recovered"]) == ("stored", True), recording
        whole = (torn - crypto.HEADER_SIZE) // FRAME
        assert recording["audio_size"] == whole * crypto.DEFAULT_CHUNK_SIZE >= CHUNKS * 65536
        audio = http.get(f"/v1/recordings/{recording['id']}/audio", headers=tenant.client_admin)
        assert audio.status_code == 200
        assert len(audio.content) == recording["audio_size"]
        events = http.get("/v1/audit", headers=ADMIN).json()["items"]
        report = http.get("/v1/audit/verify", headers=ADMIN).json()
    assert report["ok"] is True, report
    recovered = [e for e in events if e["kind"] == "recording.recovered"]
    assert [e["subject"] for e in recovered] == [recording["id"]]
    assert recovered[0]["data"]["audio_kept"] == recording["audio_size"]

    # The audio decodes up to the last whole Ogg page the kept chunks hold.
    samples, hz = _decode(audio.content)
    assert samples >= _last_whole_granule(audio.content) - 960 > 0
    assert abs(hz - HZ) < 5
    assert abs(recording["duration_s"] - samples / RATE) <= 0.02

    keys = s3_admin.list_object_versions(Bucket=bucket).get("Versions", [])
    assert [v["Key"].rpartition("/")[2] for v in keys] == [f"{recording['id']}.ogg"]
    assert not s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads")


def _decode(data: bytes) -> tuple[int, float]:
    """Samples decoded, and the tone's frequency from the zero crossings of its loud stretches.

    Loss on the way in becomes silence in the recording: half-second windows with a
    quiet 20 ms block are left out of the count.
    """
    pcm = array("f")
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            pcm.frombytes(bytes(frame.planes[0])[: 4 * frame.samples])
    window, block = RATE // 2, RATE // 50
    crossings = loud = 0
    for start in range(0, len(pcm) - window + 1, window):
        samples = pcm[start : start + window]
        if min(rms(samples[i : i + block]) for i in range(0, window, block)) > 0.05:
            crossings += sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
            loud += window
    assert loud >= 2 * window, "the tone is not heard"
    return len(pcm), crossings * RATE / loud


def _last_whole_granule(data: bytes) -> int:
    """The granule position of the last Ogg page that ends inside ``data``."""
    granule, offset = 0, 0
    while data.startswith(b"OggS", offset) and offset + 27 <= len(data):
        position, segments = struct.unpack_from("<q", data, offset + 6)[0], data[offset + 26]
        end = offset + 27 + segments + sum(data[offset + 27 : offset + 27 + segments])
        if end > len(data):
            break
        granule, offset = max(granule, position), end
    return granule

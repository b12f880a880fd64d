"""baresip, an ordinary SIP phone, places a plain call to callrec: recorded as one stream.

A plain INVITE with one SDP is what a forked leg looks like to the recording server.
baresip dials ``sip:acme@127.0.0.1:<port>`` (the Request-URI user names the client),
sends a 440 Hz tone from a WAV file through its ``aufile`` module, and hangs up after
a few seconds. The client's SIPREC settings name its calls' jurisdiction (baresip
adds no header), so the one-party rule applies and the call is recorded from the
start. The gateway is a real ``callrec serve``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2 as httpx
import pytest

from storage.embedded_s3 import EmbeddedS3
from tests.conftest import drop_bucket, unique_bucket
from tests.recorder.conftest import ADMIN
from tests.recorder.siprec.clients import (
    baresip_call,
    needs_baresip,
    needs_siprec_server,
    tone_wav,
)
from tests.recorder.siprec.rtp_media import decode_au
from tests.recorder.siprec.serve import SiprecGateway, siprec_gateway
from tests.recorder.tones import dominant_hz, loud_stretches

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

RATE = 8000
HZ = 440.0
CALL_S = 4


@pytest.fixture
def gateway(s3_server: EmbeddedS3, s3_admin: S3Client, tmp_path: Path) -> Iterator[SiprecGateway]:
    bucket = unique_bucket()
    with siprec_gateway(s3_server, bucket, tmp_path) as gateway:
        yield gateway
    drop_bucket(s3_admin, bucket)


@needs_siprec_server
@needs_baresip
def test_a_baresip_call_is_recorded_as_one_stream(gateway: SiprecGateway, tmp_path: Path) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        answer = http.put(
            f"/v1/clients/{gateway.tenant.id}/siprec",
            json={"networks": ["127.0.0.0/8"], "jurisdiction": "US-NY"},
            headers=ADMIN,
        )
        assert answer.status_code == 200, answer.text
    wav = tone_wav(tmp_path / "tone.wav", hz=HZ, seconds=CALL_S + 6)
    started = time.monotonic()
    result = baresip_call(
        tmp_path,
        port=gateway.sip_port,
        client=gateway.tenant.id,
        wav=wav,
        seconds=CALL_S,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Call established" in result.stdout, result.stdout

    (recording,) = gateway.stored()
    assert (recording["state"], recording["channel"]) == ("stored", "siprec"), recording
    assert recording["call_id"], recording  # the SIP Call-ID: no metadata, no sipSessionID
    assert CALL_S - 1.5 <= recording["duration_s"] <= took + 1.0, (recording, took)

    rate, (samples,) = decode_au(gateway.audio(recording["id"]))
    assert rate == RATE
    loud = loud_stretches(samples, rate=RATE)
    assert sum(b - a for a, b in loud) >= CALL_S - 1.5, loud
    longest = max(loud, key=lambda s: s[1] - s[0])
    middle = samples[int((longest[0] + 0.1) * RATE) : int((longest[1] - 0.1) * RATE)]
    assert abs(dominant_hz(middle, rate=RATE) - HZ) < 5

"""SIPp, a real third-party SIP client, records a two-stream SIPREC call through callrec.

The scenario (``sipp/siprec_pause.xml``) is what an SBC sends: a multipart INVITE
(SDP with two PCMU streams labelled 1 and 2, RFC 7865 metadata whose caller sends
stream 1), ACK, two seconds of a different tone on each stream played from a pcap, a
re-INVITE that makes both streams inactive, a second later one that resumes them,
two more seconds of the tones, BYE. The gateway is a real ``callrec serve``.

SIPp's ``play_pcap_audio`` sends to the answer's first ``m=`` port, and the capture's
second stream to that port + 1: a fresh gateway lends its RTP ports in order, so the
call's two streams get two consecutive ports.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from storage.embedded_s3 import EmbeddedS3
from tests.conftest import drop_bucket, unique_bucket
from tests.recorder.siprec.clients import (
    needs_sipp,
    needs_siprec_server,
    run_sipp,
    sipp_logs,
    tones_pcaps,
)
from tests.recorder.siprec.rtp_media import decode_au
from tests.recorder.siprec.serve import SiprecGateway, siprec_gateway
from tests.recorder.tones import dominant_hz, loud_stretches

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

RATE = 8000
TONES = (440.0, 660.0)  # the caller's stream (label 1), the callee's (label 2)
PLAY_S = 2.0  # each play of the capture


@pytest.fixture
def gateway(s3_server: EmbeddedS3, s3_admin: S3Client, tmp_path: Path) -> Iterator[SiprecGateway]:
    bucket = unique_bucket()
    with siprec_gateway(s3_server, bucket, tmp_path) as gateway:
        yield gateway
    drop_bucket(s3_admin, bucket)


@needs_siprec_server
@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_siprec_call_with_a_pause_is_stored_with_each_tone_on_its_channel(
    gateway: SiprecGateway, tmp_path: Path, transport: str
) -> None:
    session = f"sipp-{transport}-call"
    tones_pcaps(tmp_path, tones=TONES, seconds=PLAY_S, gap=1)
    started = time.monotonic()
    result = run_sipp(
        "siprec_pause.xml",
        port=gateway.sip_port,
        workdir=tmp_path,
        client=gateway.tenant.id,
        keys={"jurisdiction": "US-NY", "session": session},
        transport=transport,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr + sipp_logs(tmp_path)

    (recording,) = gateway.stored()
    assert recording["state"] == "stored", recording
    assert (recording["call_id"], recording["channel"]) == (session, "siprec")
    # Two plays of the capture are in it; it cannot be longer than SIPp's call.
    assert 2 * PLAY_S <= recording["duration_s"] <= took + 1.0, (recording, took)

    # PCMU as it came: a two-channel mu-law .au at 8 kHz.
    rate, channels = decode_au(gateway.audio(recording["id"]))
    assert (rate, len(channels)) == (RATE, 2)
    for samples, hz in zip(channels, TONES, strict=True):
        loud = loud_stretches(samples, rate=RATE)
        assert sum(b - a for a, b in loud) >= 2 * PLAY_S - 0.3, loud
        longest = max(loud, key=lambda s: s[1] - s[0])
        middle = samples[int((longest[0] + 0.1) * RATE) : int((longest[1] - 0.1) * RATE)]
        assert abs(dominant_hz(middle, rate=RATE) - hz) < 5
        # The pause: a second of silence between the two plays.
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(loud)]
        assert max(gaps, default=0.0) >= 0.9, loud

    kinds = gateway.audit_kinds(session)
    assert "call.paused" in kinds, kinds
    assert "call.open" in kinds[kinds.index("call.paused") :], kinds

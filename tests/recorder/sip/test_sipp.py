"""A third-party SIP client against the server: SIPp's built-in UAC scenario over UDP and TCP.

Each call: INVITE, our 100 and 200 (with an SDP), SIPp's ACK, then BYE and our 200.
SIPp counts a call as failed when an answer is missing, late or malformed.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from recorder.sip.core import Event, RequestReceived
from recorder.sip.transport import SipServer

SIPP = shutil.which("sipp")
CALLS = 10
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=recvonly\r\n"
)

pytestmark = pytest.mark.skipif(SIPP is None, reason="needs sipp (Debian package sip-tester)")


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_calls_complete_over(transport: str, tmp_path: Path) -> None:
    methods: list[str] = []

    async def scenario() -> tuple[int, str, int]:
        server: SipServer

        def on_event(event: Event) -> None:
            if isinstance(event, RequestReceived):
                methods.append(event.transaction.request.method)
                server.respond(event.transaction, 200, body=SDP, content_type="application/sdp")

        server = SipServer(on_event)
        await server.start("127.0.0.1", 0)
        try:
            assert SIPP is not None
            process = await asyncio.create_subprocess_exec(
                SIPP, f"127.0.0.1:{server.port}", "-sn", "uac", "-s", "acme",
                "-i", "127.0.0.1", "-p", "0", "-t", transport,
                "-m", str(CALLS), "-r", str(CALLS), "-d", "50",
                "-nostdin", "-trace_err", "-error_file", str(tmp_path / "errors.log"),
                cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode is not None
            return process.returncode, output.decode(errors="replace"), server.core.dialogs
        finally:
            await server.stop()

    returncode, output, dialogs = asyncio.run(scenario())

    errors = tmp_path / "errors.log"
    assert returncode == 0, output[-2000:] + (errors.read_text() if errors.exists() else "")
    assert sorted(methods) == ["BYE"] * CALLS + ["INVITE"] * CALLS
    assert dialogs == 0

"""Real third-party SIP clients driven by the tests: SIPp and baresip, on 127.0.0.1 only.

Each is an ordinary program run as a subprocess with everything it needs written to
the test's temporary directory: SIPp a scenario (``sipp/``) and a pcap of G.711 tones
beside it, baresip a configuration directory (``config``, ``accounts``) and a WAV file
that its ``aufile`` module sends as the microphone. Tests that need one skip, with the
reason, when it is not installed (``.ci/run`` installs both).
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import socket
import struct
import subprocess
import wave
from pathlib import Path

import pytest

from tests.recorder.siprec.rtp_media import (
    PTIME_S,
    RtpStream,
    interleave,
    pcmu_tone,
    write_pcap,
)

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).parent / "sipp"
TIMEOUT_S = 120.0
BARESIP_MODULES = Path("/usr/lib/baresip/modules")
SIPP = shutil.which("sipp")
BARESIP = shutil.which("baresip")


def _can_send_raw() -> bool:
    """SIPp replays a pcap through a raw socket: root, or CAP_NET_RAW (bit 13)."""
    if os.geteuid() == 0:
        return True
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> 13 & 1)
    return False


needs_sipp = pytest.mark.skipif(
    SIPP is None or not _can_send_raw(),
    reason="needs sipp (Debian package sip-tester) and root or CAP_NET_RAW for its pcap play",
)
# Until the SIPREC server is part of the gateway, the tests that call it have nothing
# to call.
needs_siprec_server = pytest.mark.skipif(
    importlib.util.find_spec("recorder.siprec.server") is None,
    reason="the SIPREC server (recorder.siprec.server) is not in this build",
)
needs_baresip = pytest.mark.skipif(
    BARESIP is None or not (BARESIP_MODULES / "aufile.so").exists(),
    reason="needs baresip with its aufile module (Debian package baresip-core)",
)


def tones_pcaps(
    workdir: Path,
    *,
    tones: tuple[float, float] = (440.0, 660.0),
    seconds: float = 2.0,
    gap: int = 1,
    paused_s: float = 1.2,
) -> tuple[Path, Path]:
    """``before.pcap`` and ``after.pcap`` for the pause scenario's two plays: two RTP
    streams of PCMU tones each, the first to the capture's base port, the second to the
    base port + ``gap`` (where SIPp sends it: the answer's first ``m=`` port + ``gap``).
    The second play goes on numbering each stream where a sender that kept its clock
    running through a pause of ``paused_s`` would be."""
    streams = (
        RtpStream(ssrc=0x5EED0001, sequence=1000, timestamp=8000),
        RtpStream(ssrc=0x5EED0002, sequence=30000, timestamp=160000),
    )
    played = round(seconds / PTIME_S)
    later = played + round(paused_s / PTIME_S)
    paths = []
    for name, first in (("before.pcap", 0), ("after.pcap", later)):
        datagrams = interleave(
            [
                (6000 + gap * n, stream.packets(pcmu_tone(seconds, hz), first=first))
                for n, (stream, hz) in enumerate(zip(streams, tones, strict=True))
            ]
        )
        paths.append(write_pcap(workdir / name, datagrams))
    return paths[0], paths[1]


def run_sipp(
    scenario: str,
    *,
    port: int,
    workdir: Path,
    client: str,
    keys: dict[str, str],
    transport: str = "u1",
) -> subprocess.CompletedProcess[str]:
    """One call of ``sipp/<scenario>`` to 127.0.0.1:``port``, run in ``workdir``
    (where its pcap is), with ``-key NAME VALUE`` for each of ``keys``."""
    assert SIPP is not None
    shutil.copy(SCENARIOS / scenario, workdir / scenario)
    command = [
        SIPP,
        f"{HOST}:{port}",
        "-sf",
        scenario,
        "-s",
        client,
        "-i",
        HOST,
        "-mi",
        HOST,
        "-t",
        transport,
        "-m",
        "1",
        "-nostdin",
        "-trace_err",
        "-trace_msg",
        "-timeout",
        f"{int(TIMEOUT_S)}s",
        "-timeout_error",
    ]
    for name, value in keys.items():
        command += ["-key", name, value]
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT_S + 30, check=False
    )


def sipp_logs(workdir: Path) -> str:
    """What SIPp wrote of the call (messages and errors), for an assertion's message."""
    return "\n".join(p.read_text(errors="replace") for p in sorted(workdir.glob("*.log")))


def tone_wav(path: Path, *, hz: float, seconds: float, rate: int = 8000) -> Path:
    """A mono 16-bit WAV tone: what baresip's ``aufile`` source sends as its microphone."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * n / rate)))
                for n in range(int(seconds * rate))
            )
        )
    return path


def free_udp_tcp_port() -> int:
    """A port of 127.0.0.1 free for both UDP and TCP: baresip listens on both."""
    while True:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        ):
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind((HOST, port))
            except OSError:
                continue
            return port


def baresip_call(
    workdir: Path, *, port: int, client: str, wav: Path, seconds: int
) -> subprocess.CompletedProcess[str]:
    """baresip dials ``sip:<client>@127.0.0.1:<port>``, sends ``wav`` and quits (hanging up
    with a BYE) after ``seconds``. No audio device: ``aufile`` is the source, nothing plays."""
    home = workdir / "baresip"
    home.mkdir(exist_ok=True)
    (home / "config").write_text(
        "\n".join(
            [
                "poll_method epoll",
                f"sip_listen {HOST}:{free_udp_tcp_port()}",
                "sip_transports udp",
                # Without this baresip offers the machine's first non-loopback address
                # in its SDP; media must stay on loopback.
                f"net_interface {HOST}",
                f"audio_source aufile,{wav}",
                "ausrc_srate 8000",
                "ausrc_channels 1",
                f"module_path {BARESIP_MODULES}",
                "module g711.so",
                "module aufile.so",
                "module_app account.so",
                "module_app menu.so",
                "",
            ]
        )
    )
    (home / "accounts").write_text(f"<sip:tester@{HOST}>;regint=0;audio_codecs=PCMU\n")
    assert BARESIP is not None
    return subprocess.run(
        [
            BARESIP,
            "-f",
            str(home),
            "-e",
            f"/dial sip:{client}@{HOST}:{port}",
            "-t",
            str(seconds),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )

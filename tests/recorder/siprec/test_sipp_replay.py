"""The pcap writer, the SIPREC scenario and the baresip set-up, against plain UDP sockets.

Before SIPp drives callrec, this pins down what it does with our files: a minimal
answering side (a UDP socket that answers each INVITE with two ``m=audio`` lines of
its own and counts the RTP on two plain sockets) takes the scenario's multipart INVITE,
two re-INVITEs and the BYE; SIPp's ``play_pcap_audio`` sends the first stream of the
capture to the answer's first ``m=`` port and the second to that port + 1, each packet
as it was written, twice (before the pause and after the resume). baresip, set up as
the tests set it up, places a call from 127.0.0.1 with PCMU from its WAV file and
hangs up.
"""

from __future__ import annotations

import re
import select
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.recorder.siprec.clients import (
    baresip_call,
    needs_baresip,
    needs_sipp,
    run_sipp,
    sipp_logs,
    tone_wav,
    tones_pcaps,
)
from tests.recorder.siprec.rtp_media import (
    PTIME_S,
    RtpStream,
    interleave,
    pcmu_tone,
    read_pcap,
    ulaw_byte,
    write_pcap,
)

HOST = "127.0.0.1"


def test_mu_law_of_known_samples() -> None:
    # G.711 Table 2a: the code for 0 is 0xFF; full scale positive 0x80, negative 0x00.
    assert [ulaw_byte(s) for s in (0, 32767, -32768, 1000, -1000)] == [0xFF, 0x80, 0x00, 0xCE, 0x4E]


def test_pcap_round_trip(tmp_path: Path) -> None:
    stream = RtpStream(ssrc=7, sequence=65534, timestamp=2**32 - 160)
    packets = stream.packets(pcmu_tone(0.1, 440))
    assert len(packets) == 5
    written = interleave([(6000, packets), (6001, packets[:2])])
    read = read_pcap(write_pcap(tmp_path / "t.pcap", written))
    assert [(c.port, c.payload) for c in read] == [(c.port, c.payload) for c in written]
    assert [round(c.at, 6) for c in read] == [round(c.at, 6) for c in written]
    # RTP numbering wraps; the marker is on the first packet only.
    headers = [p[:12] for p in packets]
    assert [int.from_bytes(h[2:4], "big") for h in headers] == [65534, 65535, 0, 1, 2]
    assert [int.from_bytes(h[4:8], "big") for h in headers[:3]] == [2**32 - 160, 0, 160]
    assert [h[1] for h in headers[:2]] == [0x80, 0x00]
    assert read[2].at == pytest.approx(PTIME_S)


@dataclass
class Answerer:
    """A SIP UDP socket that answers 200 with two m=audio lines, and two RTP sinks."""

    sip: socket.socket = field(default_factory=lambda: _udp())
    # SIPp sends the capture's second stream to the first m= port + the capture's gap:
    # only a port above the first one can be reached that way.
    media: list[socket.socket] = field(
        default_factory=lambda: sorted((_udp(), _udp()), key=lambda s: s.getsockname()[1])
    )
    requests: list[str] = field(default_factory=list)
    offers: list[str] = field(default_factory=list)
    received: Counter[int] = field(default_factory=Counter)
    payloads: dict[int, list[bytes]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.sip.getsockname()[1])

    def ports(self) -> tuple[int, int]:
        return self.media[0].getsockname()[1], self.media[1].getsockname()[1]

    def serve(self) -> None:
        sockets = [self.sip, *self.media]
        while not self.stop.is_set():
            ready, _, _ = select.select(sockets, [], [], 0.05)
            for sock in ready:
                data, peer = sock.recvfrom(65536)
                if sock is self.sip:
                    self.answer(data.decode(), peer)
                else:
                    port = sock.getsockname()[1]
                    self.received[port] += 1
                    self.payloads.setdefault(port, []).append(data)

    def answer(self, text: str, peer: tuple[str, int]) -> None:
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        self.requests.append(lines[0].split()[0])
        if lines[0].startswith("ACK"):
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        to = headers["to"] if ";tag=" in headers["to"] else headers["to"] + ";tag=answerer"
        sdp = ""
        if lines[0].startswith("INVITE"):
            self.offers.append(body)
            offered = len(re.findall(r"^m=audio ", body, re.M))
            sdp = f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n" + "".join(
                f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=recvonly\r\n"
                for port in self.ports()[:offered]
            )
        response = (
            f"SIP/2.0 200 OK\r\nVia: {headers['via']}\r\nFrom: {headers['from']}\r\nTo: {to}\r\n"
            f"Call-ID: {headers['call-id']}\r\nCSeq: {headers['cseq']}\r\n"
            f"Contact: <sip:answerer@{HOST}:{self.port}>\r\n"
            + ("Content-Type: application/sdp\r\n" if sdp else "")
            + f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        self.sip.sendto(response.encode(), peer)


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    return sock


@pytest.fixture
def answerer() -> Iterator[Answerer]:
    answerer = Answerer()
    thread = threading.Thread(target=answerer.serve, daemon=True)
    thread.start()
    yield answerer
    answerer.stop.set()
    thread.join()
    for sock in (answerer.sip, *answerer.media):
        sock.close()


@needs_sipp
def test_sipp_plays_each_stream_of_the_pcap_to_its_port(answerer: Answerer, tmp_path: Path) -> None:
    first, second = answerer.ports()
    gap = second - first
    tones_pcaps(tmp_path, seconds=1.0, gap=gap)
    result = run_sipp(
        "siprec_pause.xml",
        port=answerer.port,
        workdir=tmp_path,
        client="acme",
        keys={"jurisdiction": "US-NY", "session": "sipp-replay-1"},
    )
    assert result.returncode == 0, result.stderr + sipp_logs(tmp_path)
    answerer.stop.set()
    assert answerer.requests == ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"]
    # The multipart offer went as written, with SIPp's keys filled in.
    offer = answerer.offers[0]
    assert "Content-Type: application/rs-metadata+xml" in offer
    assert "<sipSessionID>sipp-replay-1</sipSessionID>" in offer
    assert len(re.findall(r"^m=audio \d+ RTP/AVP 0\r$", offer, re.M)) == 2
    assert "a=inactive" in answerer.offers[1] and "a=sendonly" in answerer.offers[2]
    # 50 packets a stream per play, two plays; each stream to its own port, intact.
    assert answerer.received == {first: 100, second: 100}
    before, after = read_pcap(tmp_path / "before.pcap"), read_pcap(tmp_path / "after.pcap")
    for port in (first, second):
        captured = [c.payload for c in before + after if c.port == 6000 + (port - first)]
        assert answerer.payloads[port] == captured


@needs_baresip
def test_baresip_calls_from_loopback_with_its_wav(answerer: Answerer, tmp_path: Path) -> None:
    wav = tone_wav(tmp_path / "tone.wav", hz=440.0, seconds=10.0)
    result = baresip_call(tmp_path, port=answerer.port, client="acme", wav=wav, seconds=3)
    assert result.returncode == 0, result.stdout + result.stderr
    answerer.stop.set()
    assert answerer.requests == ["INVITE", "ACK", "BYE"], result.stdout
    (offer,) = answerer.offers
    assert re.search(r"^c=IN IP4 127\.0\.0\.1\r$", offer, re.M), offer
    assert len(re.findall(r"^m=audio ", offer, re.M)) == 1
    first = answerer.ports()[0]
    # About 50 packets a second for the call's 3 s; PCMU, each 160 bytes of audio.
    assert answerer.received[first] >= 50, answerer.received
    assert {len(p) for p in answerer.payloads[first]} == {172}
    assert {p[1] & 0x7F for p in answerer.payloads[first]} == {0}

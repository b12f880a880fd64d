"""A session recording client (SRC) for the tests: SIP over UDP or TCP, RTP over UDP.

Written from RFC 3261 / 3550 / 7866 for the tests, apart from callrec's own SIP code,
so that the server is checked against an independent reading of the protocols. Every
socket is on 127.0.0.1.
"""

from __future__ import annotations

import io
import math
import re
import secrets
import socket
import struct
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import av

LOOPBACK = "127.0.0.1"
G711_RATE = 8000
PACKET = 160  # 20 ms of G.711


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


def _parse_response(head: bytes, body: bytes) -> Response:
    lines = head.decode().replace("\r\n", "\n").split("\n")
    version, status, reason = [*lines[0].split(" ", 2), ""][:3]
    assert version == "SIP/2.0", lines[0]
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return Response(int(status), reason, headers, body)


@dataclass
class Request:
    method: str
    uri: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


_COPIED = ("via", "from", "to", "call-id", "cseq")


def _parse_request(head: bytes, body: bytes) -> Request:
    lines = head.decode().replace("\r\n", "\n").split("\n")
    method, uri, version = lines[0].split(" ", 2)
    assert version == "SIP/2.0", lines[0]
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return Request(method, uri, headers, body)


class Signalling:
    """One SRC's SIP socket towards callrec's SIP port."""

    def __init__(self, port: int, transport: str = "udp") -> None:
        self.port, self.transport = port, transport
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((LOOPBACK, 0))
        else:
            self.sock = socket.create_connection((LOOPBACK, port), timeout=10)
        self.local_port = self.sock.getsockname()[1]
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, (LOOPBACK, self.port))
        else:
            self.sock.sendall(data)

    def receive(self, timeout: float = 10.0) -> Response:
        head, body = self._message(timeout)
        return _parse_response(head, body)

    def incoming(self, timeout: float = 10.0) -> Request:
        """The next request callrec sends (answers to ours on the way are passed over)."""
        deadline = time.monotonic() + timeout
        while True:
            head, body = self._message(max(deadline - time.monotonic(), 0.01))
            if not head.startswith(b"SIP/2.0 "):
                return _parse_request(head, body)

    def answer(self, request: Request, status: int = 200, reason: str = "OK") -> None:
        """Answer a request of callrec's (§8.2.6: Via, From, To, Call-ID and CSeq copied)."""
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"{n}: {v}" for n, v in request.headers if n.lower() in _COPIED]
        lines.append("Content-Length: 0")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _message(self, timeout: float) -> tuple[bytes, bytes]:
        self.sock.settimeout(timeout)
        if self.transport == "udp":
            data = self.sock.recv(65535)
            head, _, body = data.partition(b"\r\n\r\n")
            return head, body
        while b"\r\n\r\n" not in self._buffer:
            self._more()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        found = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
        length = int(found.group(1)) if found else 0
        while len(rest) < length:
            self._buffer = head + b"\r\n\r\n" + rest
            self._more()
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
        self._buffer = rest[length:]
        return head, rest[:length]

    def _more(self) -> None:
        piece = self.sock.recv(65535)
        if not piece:
            raise ConnectionError("callrec closed the SIP connection")
        self._buffer += piece

    def response(self, timeout: float = 10.0) -> Response:
        """The next answer, past the requests callrec sends meanwhile (its BYE, again)."""
        deadline = time.monotonic() + timeout
        while True:
            head, body = self._message(max(deadline - time.monotonic(), 0.01))
            if head.startswith(b"SIP/2.0 "):
                return _parse_response(head, body)

    def final(self, timeout: float = 10.0) -> Response:
        """The final answer to the last request, past any provisional one."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.receive(max(deadline - time.monotonic(), 0.01))
            if response.status >= 200:
                return response


@dataclass
class Call:
    """A recording session seen from the SRC: its dialog and its requests."""

    sip: Signalling
    client: str = "acme"
    from_user: str = "src"
    to_user: str | None = None  # the client's name unless given
    call_id: str = field(default_factory=lambda: f"{secrets.token_hex(8)}@src.example")
    from_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    to_tag: str | None = None
    cseq: int = 0
    last_branch: str = ""
    extra: list[tuple[str, str]] = field(default_factory=list)  # on every request

    @property
    def uri(self) -> str:
        return f"sip:{self.client}@{LOOPBACK}:{self.sip.port}"

    def message(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        cseq: int | None = None,
        branch: str | None = None,
    ) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        self.last_branch = branch or "z9hG4bK" + secrets.token_hex(6)
        transport = self.sip.transport.upper()
        via = f"{LOOPBACK}:{self.sip.local_port};branch={self.last_branch};rport"
        to = f"<sip:{self.to_user or self.client}@{LOOPBACK}>"
        to += f";tag={self.to_tag}" if self.to_tag else ""
        lines = [
            f"{method} {self.uri} SIP/2.0",
            f"Via: SIP/2.0/{transport} {via}",
            "Max-Forwards: 70",
            f"From: <sip:{self.from_user}@{LOOPBACK}>;tag={self.from_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:src@{LOOPBACK}:{self.sip.local_port};transport={self.sip.transport}>",
            *(f"{name}: {value}" for name, value in [*self.extra, *headers]),
        ]
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        self.sip.send(self.message(method, body=body, content_type=content_type, headers=headers))
        response = self.sip.final()
        if method == "INVITE":
            if self.to_tag is None and 200 <= response.status < 300:
                to = response.header("To") or ""
                found = re.search(r";\s*tag=([^;\s]+)", to)
                assert found, to
                self.to_tag = found.group(1)
            self.ack(response)
        return response

    def ack(self, response: Response) -> None:
        """ACK a final answer: a new transaction for a 2xx, the INVITE's for the others."""
        if response.status < 300:
            self.sip.send(self.message("ACK", cseq=self.cseq))
        else:
            to = response.header("To") or ""
            found = re.search(r";\s*tag=([^;\s]+)", to)
            saved, self.to_tag = self.to_tag, found.group(1) if found else self.to_tag
            self.sip.send(self.message("ACK", cseq=self.cseq, branch=self.last_branch))
            self.to_tag = saved

    def invite(
        self, body: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()
    ) -> Response:
        return self.request("INVITE", body=body, content_type=content_type, headers=headers)

    def bye(self) -> Response:
        return self.request("BYE")


# -- bodies -------------------------------------------------------------------------

BOUNDARY = "callrec-test-boundary"


def sdp(
    ports: Sequence[int],
    *,
    formats: str = "0 8 101",
    direction: str = "sendonly",
    address: str = LOOPBACK,
    version: int = 1,
    labels: bool = True,
) -> str:
    """An SRC's offer: one sendonly audio stream per port, each labelled."""
    lines = [
        "v=0",
        f"o=SRC 2890844526 {version} IN IP4 {LOOPBACK}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    rtpmaps = {
        "0": "PCMU/8000",
        "8": "PCMA/8000",
        "9": "G722/8000",
        "18": "G729/8000",
        "101": "telephone-event/8000",
        "111": "opus/48000/2",
    }
    for n, port in enumerate(ports, start=1):
        lines.append(f"m=audio {port} RTP/AVP {formats}")
        lines += [f"a=rtpmap:{pt} {rtpmaps[pt]}" for pt in formats.split() if pt in rtpmaps]
        if "101" in formats.split():
            lines.append("a=fmtp:101 0-15")
        if labels:
            lines.append(f"a=label:{n}")
        lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def metadata(session_id: str, parties: Sequence[str]) -> str:
    """RFC 7865 metadata: a session, one participant per party, each sending its stream."""
    participants, streams = [], []
    for n, aor in enumerate(parties, start=1):
        participants.append(
            f'  <participant participant_id="p{n}">\n'
            f'    <nameID aor="{aor}"><name>Party {n}</name></nameID>\n'
            f"    <send>s{n}</send>\n"
            f"  </participant>"
        )
        streams.append(f'  <stream stream_id="s{n}" session_id="sess"><label>{n}</label></stream>')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1">\n'
        "  <datamode>complete</datamode>\n"
        f'  <session session_id="sess"><sipSessionID>{session_id}</sipSessionID></session>\n'
        + "\n".join(participants)
        + "\n"
        + "\n".join(streams)
        + "\n</recording>\n"
    )


def multipart(offer: str, xml: str) -> tuple[bytes, str]:
    """A SIPREC INVITE's body: SDP and metadata, and its content type."""
    body = (
        f"--{BOUNDARY}\r\n"
        "Content-Type: application/sdp\r\n\r\n"
        f"{offer}\r\n"
        f"--{BOUNDARY}\r\n"
        "Content-Type: application/rs-metadata+xml\r\n"
        "Content-Disposition: recording-session\r\n\r\n"
        f"{xml}\r\n"
        f"--{BOUNDARY}--\r\n"
    )
    return body.encode(), f'multipart/mixed;boundary="{BOUNDARY}"'


def answer_ports(answer: bytes) -> list[int]:
    """The ports of the answer's m= lines, in order (0: a stream declined)."""
    return [int(m) for m in re.findall(rb"(?m)^m=audio (\d+)", answer)]


# -- media --------------------------------------------------------------------------


# FFmpeg's encoder for each RTP format, and its audio rate (G.722: 16 kHz on an 8 kHz clock).
ENCODERS = {"pcmu": ("pcm_mulaw", 8000), "pcma": ("pcm_alaw", 8000), "g722": ("g722", 16000)}


def g711_tone(hz: float, seconds: float, *, codec: str = "pcm_mulaw") -> list[bytes]:
    """A tone as 20 ms G.711 payloads, encoded by FFmpeg."""
    return tone(hz, seconds, "pcma" if codec == "pcm_alaw" else "pcmu")


def tone(hz: float, seconds: float, fmt: str = "pcmu") -> list[bytes]:
    """A tone as 20 ms RTP payloads of ``fmt`` (pcmu, pcma, g722), encoded by FFmpeg."""
    name, rate = ENCODERS[fmt]
    encoder = av.CodecContext.create(name, "w")
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16"
    total = int(seconds * rate)
    pcm = array("h", (int(10000 * math.sin(2 * math.pi * hz * n / rate)) for n in range(total)))
    data = b""
    step = rate // 50
    for start in range(0, total - step + 1, step):
        frame = av.AudioFrame(format="s16", layout="mono", samples=step)
        frame.planes[0].update(pcm[start : start + step].tobytes())
        frame.sample_rate, frame.pts = rate, start
        data += b"".join(bytes(p) for p in encoder.encode(frame))
    data += b"".join(bytes(p) for p in encoder.encode(None))
    return [data[i : i + PACKET] for i in range(0, len(data) - PACKET + 1, PACKET)]


def answered_formats(answer: bytes) -> list[tuple[int, int, str]]:
    """Each accepted stream's ``(port, payload type, format name)``, in m= order."""
    text = answer.decode()
    found = []
    for port, pts in re.findall(r"(?m)^m=audio (\d+) \S+ ([\d ]+)", text):
        if int(port) == 0:
            continue
        pt = int(pts.split()[0])
        name = re.search(rf"(?m)^a=rtpmap:{pt} ([^/]+)/", text)
        found.append((int(port), pt, name.group(1).lower() if name else ""))
    return found


class RtpSender:
    """One stream's RTP: numbered, timestamped 20 ms packets to callrec's receiver."""

    opened: ClassVar[list[RtpSender]] = []  # closed after each test (see conftest.py)

    def __init__(self, port: int, *, pt: int = 0, source: str = LOOPBACK) -> None:
        RtpSender.opened.append(self)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.port, self.pt = port, pt
        self.ssrc = secrets.randbits(32)
        self.sequence = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.sent = 0
        self.last_at: float | None = None  # when the last packet left

    def send(self, payload: bytes, *, advance: int = PACKET) -> None:
        header = struct.pack(
            "!BBHII", 0x80, self.pt, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        self.sock.sendto(header + payload, (LOOPBACK, self.port))
        self.last_at = time.monotonic()
        self.sequence += 1
        self.timestamp += advance
        self.sent += 1

    def skip(self, packets: int) -> None:
        """Time passes without packets (a pause the SRC keeps its clock through)."""
        self.timestamp += packets * PACKET

    def close(self) -> None:
        self.sock.close()


def play(streams: Sequence[tuple[RtpSender, Sequence[bytes]]], *, step_s: float = 0.02) -> None:
    """Send every stream's packets side by side at real-time pacing.

    The RTP clock runs on between two plays, as a sampling clock does: the time spent
    meanwhile (a re-INVITE) is a jump of the timestamps, not a shift of the audio.
    """
    start = time.monotonic()
    for sender, _ in streams:
        if sender.last_at is not None:
            sender.skip(max(round((start - sender.last_at) / step_s) - 1, 0))
    for n in range(max(len(payloads) for _, payloads in streams)):
        for sender, payloads in streams:
            if n < len(payloads):
                sender.send(payloads[n])
        wait = start + (n + 1) * step_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)


def decode(data: bytes) -> tuple[int, list[array[float]]]:
    """A stored recording's rate and each party's samples, as floats.

    G.711 comes as one multi-channel stream, G.722 as one mono track per party.
    """
    with av.open(io.BytesIO(data)) as container:
        streams = list(container.streams.audio)
        planes = {s.index: [array("f") for _ in range(s.codec_context.channels)] for s in streams}
        resamplers = {
            s.index: av.AudioResampler(format="fltp", layout=s.layout, rate=s.rate) for s in streams
        }
        for packet in container.demux(*streams):
            for frame in packet.decode():
                for out in resamplers[packet.stream.index].resample(frame):  # type: ignore[arg-type]
                    for channel, plane in zip(planes[packet.stream.index], out.planes, strict=True):
                        channel.frombytes(bytes(plane)[: 4 * out.samples])
        return streams[0].rate, [channel for s in streams for channel in planes[s.index]]

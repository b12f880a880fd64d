"""SIPREC recording clients for ``bench.siprec_calls``, in a process of their own.

Each call is what an SBC sends a recording server: a multipart ``INVITE`` over UDP
(an SDP offer of two ``sendonly`` PCMU streams labelled 1 and 2, and RFC 7865 metadata
with a ``sipSessionID`` of its own), ``ACK`` of the ``200``, then G.711 RTP on both
streams every 20 ms from the two ports the offer named, to the two ports the answer
named, and at the end a ``BYE``. Calls start at ``ramp_per_s`` a second and send
media from their ``ACK`` on; once all of them are up, every stream sends for
``hold_s`` seconds, then the media stops and each call is ended.

The pacing is one loop over 1 ms slots: a stream joins the slot of the millisecond
it started in and sends one packet each time its slot comes round (every 20 ms), so
that the calls' packets are spread over the period as independent phones' would be.
Packets are built from one second of a tone cut in 50 payloads beforehand; nothing
is encoded while the benchmark measures.

In ``sink`` mode there is no SIP: the streams send the same packets, paced the same
way, to the ports listed in the config (a bare UDP sink's), for the baseline.

Run as ``python -m bench.siprec_load CONFIG_JSON``. It prints ``ramped SENT`` once every
call sends media, ``held SENT`` after the hold (SENT: packets sent so far), then one
JSON line with its figures; progress and failures go to stderr.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
PTIME_S = 0.02
SLOTS = 20  # 1 ms slots in a 20 ms period
SAMPLES = 160
RETRANSMIT_S = 0.5  # RFC 3261 T1
GIVE_UP_S = 32.0  # RFC 3261 64*T1
BEHIND_S = 0.04  # a packet sent this late (two periods) counts as behind time
GIVE_UP_BEHIND_S = 5.0  # a run this far behind time is given up
TONES = (440.0, 660.0)  # stream 1, stream 2

_BIAS, _CLIP = 0x84, 32635


def _ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), _CLIP) + _BIAS
    exponent = 7
    while exponent > 0 and not magnitude & (0x4000 >> (7 - exponent)):
        exponent -= 1
    return ~(sign | exponent << 4 | (magnitude >> (exponent + 3)) & 0x0F) & 0xFF


def tone_payloads(hz: float) -> list[bytes]:
    """One second of a tone as 50 PCMU payloads of 20 ms (440 and 660 Hz loop seamlessly)."""
    audio = bytes(_ulaw(int(10000 * math.sin(2 * math.pi * hz * n / 8000))) for n in range(8000))
    return [audio[at : at + SAMPLES] for at in range(0, 8000, SAMPLES)]


@dataclass
class Stream:
    sock: socket.socket
    target: tuple[str, int] | None
    payloads: list[bytes]
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    sequence: int = field(default_factory=lambda: secrets.randbits(16))
    timestamp: int = field(default_factory=lambda: secrets.randbits(32))
    sent: int = 0
    errors: int = 0

    def send(self) -> None:
        assert self.target is not None
        header = struct.pack(
            "!BBHII",
            0x80,
            0x80 if self.sent == 0 else 0,  # PCMU, the marker on a talk spurt's first packet
            (self.sequence + self.sent) & 0xFFFF,
            (self.timestamp + self.sent * SAMPLES) & 0xFFFFFFFF,
            self.ssrc,
        )
        try:
            self.sock.sendto(header + self.payloads[self.sent % 50], self.target)
        except OSError:
            self.errors += 1
            return
        self.sent += 1


@dataclass
class Call:
    index: int
    call_id: str
    session_id: str
    tag: str
    streams: list[Stream]
    remote_tag: str = ""
    contact: str = ""
    invite_sent: float = 0.0
    next_retransmit: float = 0.0
    attempts: int = 0
    state: str = "new"  # new, inviting, up, ending, ended, failed
    last: bytes = b""  # the request in progress, retransmitted as it was sent
    provisional: bool = False  # a 1xx came: an INVITE is no longer retransmitted
    setup_s: float = 0.0
    answer: str = ""


class Load:
    """The calls, the SIP socket and the pacing loop."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.server = (HOST, int(config.get("sip_port", 0)))
        self.sink = config.get("mode") == "sink"
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((HOST, 0))
        self.sip.setblocking(False)
        self.sip_port = self.sip.getsockname()[1]
        self.slots: list[list[Stream]] = [[] for _ in range(SLOTS)]
        self.tick = 0
        self.t0 = time.monotonic()
        self.behind = 0
        self.sent_total = 0
        self.by_call_id: dict[str, Call] = {}
        self.pending: dict[int, Call] = {}  # waiting for a final answer
        payloads = [tone_payloads(hz) for hz in TONES]
        ports = config.get("sink_ports", [])
        self.calls: list[Call] = []
        for index in range(int(config["calls"])):
            streams = []
            for n in range(2):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((HOST, 0))
                sock.setblocking(False)
                target = (HOST, ports[2 * index + n]) if self.sink else None
                streams.append(Stream(sock, target, payloads[n]))
            tag = f"{config['tag']}-{index}"
            call = Call(index, f"{tag}-{secrets.token_hex(6)}", f"{tag}-session", tag, streams)
            self.calls.append(call)
            self.by_call_id[call.call_id] = call

    # --- media ------------------------------------------------------------------

    def start_media(self, call: Call) -> None:
        slot = self.tick % SLOTS
        self.slots[slot].extend(call.streams)

    def stop_media(self) -> None:
        self.slots = [[] for _ in range(SLOTS)]

    def pace(self) -> None:
        """Send every slot that is due; count the packets that leave late."""
        now = time.monotonic()
        if now - (self.t0 + self.tick * 0.001) > GIVE_UP_BEHIND_S:
            # Catching up would only send bursts for ever: the machine cannot carry it.
            raise SystemExit(f"the clients fell more than {GIVE_UP_BEHIND_S:.0f} s behind time")
        while self.t0 + self.tick * 0.001 <= now:
            late = now - (self.t0 + self.tick * 0.001) > BEHIND_S
            for stream in self.slots[self.tick % SLOTS]:
                stream.send()
                self.behind += late
            self.tick += 1

    def sent(self) -> int:
        return sum(s.sent for c in self.calls for s in c.streams)

    # --- signalling ---------------------------------------------------------------

    def invite(self, call: Call, now: float) -> None:
        """Send the INVITE, or send it again as it was (RFC 3261 17.1.1.2: same branch)."""
        if call.attempts:
            self.sip.sendto(call.last, self.server)
            call.attempts += 1
            call.next_retransmit = now + RETRANSMIT_S * min(2 ** (call.attempts - 1), 8)
            return
        local = [s.sock.getsockname()[1] for s in call.streams]
        sdp = (
            f"v=0\r\no=SBC {call.index + 1} 1 IN IP4 {HOST}\r\ns=SIPREC\r\n"
            f"c=IN IP4 {HOST}\r\nt=0 0\r\n"
            f"m=audio {local[0]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:1\r\na=sendonly\r\n"
            f"m=audio {local[1]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:2\r\na=sendonly\r\n"
        )
        body = (
            "--bench-boundary\r\nContent-Type: application/sdp\r\n\r\n"
            f"{sdp}"
            "--bench-boundary\r\nContent-Type: application/rs-metadata+xml\r\n"
            "Content-Disposition: recording-session\r\n\r\n"
            f"{_metadata(call.session_id)}\r\n"
            "--bench-boundary--\r\n"
        )
        client = self.config["client"]
        headers = {
            "Content-Type": "multipart/mixed;boundary=bench-boundary",
            "Require": "siprec",
            "X-Callrec-Jurisdiction": self.config.get("jurisdiction", "US-NY"),
        }
        call.last = self.request(
            call, f"INVITE sip:{client}@{HOST}:{self.server[1]}", 1, "INVITE", headers, body
        )
        call.invite_sent, call.attempts = now, 1
        call.next_retransmit = now + RETRANSMIT_S
        call.state = "inviting"
        self.pending[call.index] = call

    def request(
        self,
        call: Call,
        line: str,
        cseq: int,
        method: str,
        headers: dict[str, str],
        body: str = "",
    ) -> bytes:
        to = f"<sip:{self.config['client']}@{HOST}:{self.server[1]}>"
        if call.remote_tag:
            to += f";tag={call.remote_tag}"
        branch = "z9hG4bK" + secrets.token_hex(8)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        text = (
            f"{line} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{self.sip_port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:sbc@{HOST}>;tag={call.tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:sbc@{HOST}:{self.sip_port}>;+sip.src\r\n"
            f"{extra}Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
        data = text.encode()
        self.sip.sendto(data, self.server)
        return data

    def receive(self, now: float) -> None:
        while True:
            try:
                data, peer = self.sip.recvfrom(65536)
            except BlockingIOError:
                return
            self.handle(data, peer, now)

    def handle(self, data: bytes, peer: tuple[str, int], now: float) -> None:
        head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
        lines = head.split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        call = self.by_call_id.get(headers.get("call-id", headers.get("i", "")))
        if not lines[0].startswith("SIP/2.0 "):
            self.answer_request(lines[0], headers, peer)
            return
        if call is None:
            return
        status = int(lines[0].split()[1])
        method = headers.get("cseq", "").split()[-1:]
        if method == ["INVITE"] and status < 200 and call.state == "inviting":
            # Timer A stops at a provisional answer; the final one may take until Timer B.
            call.provisional = True
            call.next_retransmit = call.invite_sent + GIVE_UP_S
        elif method == ["INVITE"] and status >= 200:
            call.remote_tag = _tag(headers.get("to", ""))
            call.contact = _uri(headers.get("contact", "")) or f"sip:{HOST}:{self.server[1]}"
            self.request(call, f"ACK {call.contact}", 1, "ACK", {})
            if call.state != "inviting":
                return  # a retransmitted 200: acknowledged again
            del self.pending[call.index]
            if status >= 300:
                call.state, call.answer = "failed", lines[0]
                print(f"call {call.index}: {lines[0]}", file=sys.stderr)
                return
            ports = [int(p) for p in re.findall(r"^m=audio (\d+)", body, re.M)]
            if len(ports) != 2 or 0 in ports:
                call.state, call.answer = "failed", f"answer ports {ports}"
                print(f"call {call.index}: answer ports {ports}", file=sys.stderr)
                return
            for stream, port in zip(call.streams, ports, strict=True):
                stream.target = (HOST, port)
            call.state, call.setup_s = "up", now - call.invite_sent
            self.start_media(call)
        elif method == ["BYE"] and status >= 200 and call.state == "ending":
            del self.pending[call.index]
            call.state = "ended" if status < 300 else "failed"
            call.answer = lines[0]

    def answer_request(self, line: str, headers: dict[str, str], peer: tuple[str, int]) -> None:
        """A request from the server (a BYE at a media timeout, an OPTIONS): 200."""
        if line.startswith("ACK"):
            return
        text = "SIP/2.0 200 OK\r\n" + "".join(
            f"{name}: {headers[name]}\r\n"
            for name in ("via", "from", "to", "call-id", "cseq")
            if name in headers
        )
        self.sip.sendto((text + "Content-Length: 0\r\n\r\n").encode(), peer)
        call = self.by_call_id.get(headers.get("call-id", ""))
        if line.startswith("BYE") and call is not None:
            print(f"call {call.index}: the server sent BYE", file=sys.stderr)
            self.pending.pop(call.index, None)
            self.slots = [[s for s in slot if s not in call.streams] for slot in self.slots]
            call.state, call.answer = "failed", "BYE from the server"

    # --- the run ----------------------------------------------------------------

    def wait(self, until: float) -> None:
        """Pace media and serve SIP until ``until`` (monotonic)."""
        while True:
            now = time.monotonic()
            if now >= until:
                return
            self.pace()
            self.receive(now)
            self.retransmit(now)
            next_tick = self.t0 + self.tick * 0.001
            time.sleep(max(0.0, min(next_tick, until) - time.monotonic()))

    def retransmit(self, now: float) -> None:
        for call in list(self.pending.values()):
            if now >= call.next_retransmit:
                if now - call.invite_sent >= GIVE_UP_S:
                    del self.pending[call.index]
                    call.state, call.answer = "failed", "timeout"
                    print(f"call {call.index}: no final answer", file=sys.stderr)
                elif call.state == "inviting":
                    self.invite(call, now)
                else:
                    self.bye(call, now)

    def bye(self, call: Call, now: float) -> None:
        """Send the BYE, or send it again as it was."""
        if call.state == "ending":
            self.sip.sendto(call.last, self.server)
        else:
            call.last = self.request(call, f"BYE {call.contact}", 2, "BYE", {})
            call.invite_sent, call.attempts = now, 0  # the BYE's own timer
        call.attempts += 1
        call.next_retransmit = now + RETRANSMIT_S * min(2 ** (call.attempts - 1), 8)
        call.state = "ending"
        self.pending[call.index] = call

    def run(self) -> dict[str, Any]:
        ramp = 1 / float(self.config["ramp_per_s"])
        self.t0 = time.monotonic()
        for call in self.calls:
            now = time.monotonic()
            if self.sink:
                call.state = "up"
                self.start_media(call)
            else:
                self.invite(call, now)
            self.wait(now + ramp)
        while self.pending:
            self.wait(time.monotonic() + 0.05)
        print(f"ramped {self.sent()}", flush=True)
        cpu0 = time.process_time()
        self.wait(time.monotonic() + float(self.config["hold_s"]))
        cpu_held = time.process_time() - cpu0
        print(f"held {self.sent()}", flush=True)
        self.stop_media()
        sent = self.sent()
        if not self.sink:
            for call in self.calls:
                if call.state == "up":
                    self.bye(call, time.monotonic())
                    self.wait(time.monotonic() + ramp / 2)
            while self.pending:
                self.wait(time.monotonic() + 0.05)
        setups = sorted(c.setup_s for c in self.calls if c.state == "ended")
        return {
            "sent": sent,
            "send_errors": sum(s.errors for c in self.calls for s in c.streams),
            "behind": self.behind,
            "calls": [
                {
                    "session_id": c.session_id,
                    "call_id": c.call_id,
                    "state": c.state,
                    "answer": c.answer,
                    "sent": [s.sent for s in c.streams],
                }
                for c in self.calls
            ],
            "setup_p50_ms": 1000 * setups[len(setups) // 2] if setups else None,
            "setup_max_ms": 1000 * setups[-1] if setups else None,
            "load_cpu_share": cpu_held / float(self.config["hold_s"]),
        }


def _metadata(session_id: str) -> str:
    """RFC 7865 metadata: the caller sends stream 1, the callee stream 2."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1">'
        "<datamode>complete</datamode>"
        f'<session session_id="c2Vzc2lvbg=="><sipSessionID>{session_id}</sipSessionID></session>'
        '<participant participant_id="cA=="><nameID aor="sip:+212612345678@carrier.example"/>'
        "</participant>"
        '<participant participant_id="cQ=="><nameID aor="sip:+212522000000@pbx.example"/>'
        "</participant>"
        '<stream stream_id="czE=" session_id="c2Vzc2lvbg=="><label>1</label></stream>'
        '<stream stream_id="czI=" session_id="c2Vzc2lvbg=="><label>2</label></stream>'
        '<participantstreamassoc participant_id="cA=="><send>czE=</send></participantstreamassoc>'
        '<participantstreamassoc participant_id="cQ=="><send>czI=</send></participantstreamassoc>'
        "</recording>"
    )


def _tag(value: str) -> str:
    match = re.search(r";\s*tag=([^;>\s]+)", value)
    return match.group(1) if match else ""


def _uri(value: str) -> str:
    match = re.search(r"<([^>]+)>", value)
    return match.group(1) if match else value.split(";")[0].strip()


if __name__ == "__main__":
    result = Load(json.loads(sys.argv[1])).run()
    print(json.dumps(result), flush=True)

"""G.711 tones as RTP packets, and a pcap file of them for SIPp's ``play_pcap_audio``.

SIPp replays the UDP payloads of a capture: it keeps each packet's time, rewrites the
source to its own media port and the destination to the port the other side's SDP
answered, plus how far the captured destination port lies above the lowest one in the
file (that is how a capture's RTCP lands on port + 1). It reads the capture through
libpcap and needs Ethernet (or Linux cooked) framing, IPv4 or IPv6, UDP; nothing else
of the headers matters to it. No pcap library is needed to write that.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

RATE = 8000
PTIME_S = 0.02
SAMPLES = int(RATE * PTIME_S)  # 160 per 20 ms packet
PCMU = 0

_BIAS = 0x84
_CLIP = 32635


def ulaw_byte(sample: int) -> int:
    """One 16-bit linear sample as a G.711 mu-law byte (ITU-T G.711, the usual bias form)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), _CLIP) + _BIAS
    exponent = 7
    while exponent > 0 and not magnitude & (0x4000 >> (7 - exponent)):
        exponent -= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | exponent << 4 | mantissa) & 0xFF


_ULAW = bytes(ulaw_byte(n - 32768) for n in range(65536))


def ulaw_sample(byte: int) -> int:
    """A G.711 mu-law byte back to its 16-bit linear sample."""
    byte = ~byte & 0xFF
    exponent, mantissa = (byte >> 4) & 0x07, byte & 0x0F
    magnitude = ((mantissa << 3) + _BIAS) << exponent
    return -(magnitude - _BIAS) if byte & 0x80 else magnitude - _BIAS


_LINEAR = [ulaw_sample(n) / 32768 for n in range(256)]


def decode_au(data: bytes) -> tuple[int, list[list[float]]]:
    """The rate and each channel's samples (floats) of a mu-law ``.au`` file
    (Sun/NeXT audio: a big-endian header, then the channels' bytes interleaved)."""
    magic, offset, _, encoding, rate, channels = struct.unpack_from("!4sIIIII", data)
    if magic != b".snd" or encoding != 1:
        raise ValueError(f"not a mu-law .au file: {magic!r}, encoding {encoding}")
    body = data[offset:]
    body = body[: len(body) - len(body) % channels]
    return rate, [[_LINEAR[b] for b in body[n::channels]] for n in range(channels)]


def pcmu_tone(seconds: float, hz: float, *, amplitude: int = 12000, start: int = 0) -> bytes:
    """``seconds`` of a sine at ``hz`` as mu-law bytes at 8 kHz, from sample ``start`` on."""
    count = round(seconds * RATE)
    return bytes(
        _ULAW[int(amplitude * math.sin(2 * math.pi * hz * (start + n) / RATE)) + 32768]
        for n in range(count)
    )


@dataclass(frozen=True)
class RtpStream:
    """One sender's RTP numbering."""

    ssrc: int
    sequence: int = 0
    timestamp: int = 0
    payload_type: int = PCMU

    def packets(self, audio: bytes, *, first: int = 0) -> list[bytes]:
        """``audio`` cut into 20 ms packets numbered from packet ``first`` of this stream."""
        out = []
        for index, at in enumerate(range(0, len(audio) - SAMPLES + 1, SAMPLES)):
            n = first + index
            header = struct.pack(
                "!BBHII",
                0x80,
                (0x80 if index == 0 else 0) | self.payload_type,  # a talk spurt's first
                (self.sequence + n) & 0xFFFF,
                (self.timestamp + n * SAMPLES) & 0xFFFFFFFF,
                self.ssrc,
            )
            out.append(header + audio[at : at + SAMPLES])
        return out


@dataclass(frozen=True)
class Captured:
    """A UDP datagram as a capture holds it: when it left, its destination port, its bytes."""

    at: float
    port: int
    payload: bytes


def interleave(streams: Sequence[tuple[int, Sequence[bytes]]]) -> list[Captured]:
    """Streams of 20 ms packets, each to its own port, sent side by side in time."""
    out = [
        Captured(index * PTIME_S, port, packet)
        for port, packets in streams
        for index, packet in enumerate(packets)
    ]
    return sorted(out, key=lambda c: (c.at, c.port))


_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # DLT_EN10MB


def write_pcap(
    path: Path,
    datagrams: Iterable[Captured],
    *,
    source: tuple[str, int] = ("127.0.0.1", 6000),
    destination: str = "127.0.0.1",
    start: float = 1_700_000_000.0,
) -> Path:
    """A libpcap file of ``datagrams`` in Ethernet / IPv4 / UDP framing."""
    src_ip, dst_ip = _ip(source[0]), _ip(destination)
    with path.open("wb") as out:
        out.write(_PCAP_HEADER)
        for ident, datagram in enumerate(datagrams):
            udp = _udp(src_ip, dst_ip, source[1], datagram.port, datagram.payload)
            ip = _ipv4(src_ip, dst_ip, udp, ident & 0xFFFF)
            frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip
            seconds, micros = divmod(round((start + datagram.at) * 1_000_000), 1_000_000)
            out.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
            out.write(frame)
    return path


def read_pcap(path: Path) -> list[Captured]:
    """The datagrams of a file written by ``write_pcap`` (times from its first packet)."""
    data = path.read_bytes()
    if data[:4] != _PCAP_HEADER[:4]:
        raise ValueError(f"{path}: not a little-endian microsecond pcap file")
    at, out, first = len(_PCAP_HEADER), [], None
    while at < len(data):
        seconds, micros, caplen, _ = struct.unpack_from("<IIII", data, at)
        frame = data[at + 16 : at + 16 + caplen]
        at += 16 + caplen
        ihl = (frame[14] & 0x0F) * 4
        udp = frame[14 + ihl :]
        port, length = struct.unpack_from("!HH", udp, 2)
        when = seconds + micros / 1_000_000
        first = when if first is None else first
        out.append(Captured(when - first, port, udp[8:length]))
    return out


def _ip(address: str) -> bytes:
    return bytes(int(part) for part in address.split("."))


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    checksum = ~_sum16(pseudo + header + payload) & 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, checksum or 0xFFFF) + payload


def _ipv4(src: bytes, dst: bytes, payload: bytes, ident: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, 64, 17, 0, src, dst)
    checksum = ~_sum16(header) & 0xFFFF
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload

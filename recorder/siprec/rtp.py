"""RTP reception for SIPREC: one UDP port per recorded stream, from a configured range.

``parse_rtp`` reads the fixed header of RFC 3550 §5.1 and everything that may follow
it (CSRC list, a header extension, padding) and raises ``ValueError``, and only that,
for anything else. A ``RtpReceiver`` holds one port of the ``PortPool`` and hands each
packet it was told to ``expect`` to a callback (its SSRC, sequence number, timestamp and
payload); everything else is dropped and counted:
packets from another address than the one the SDP named, payload types not negotiated
for recording (RFC 4733 telephone events and comfort noise, PT 13, among them), and
RTCP sent to the same port. Each stream has its own port, so the port says which
stream a packet belongs to, whatever its SSRC.

The receive path carries every packet of every call: it reads the header with one
``struct`` call, builds no object for the packet, and copies nothing but the payload.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from recorder._exceptions import PortsExhausted
from recorder.capture import PacketSink

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_EXTENSION = struct.Struct("!HH")  # profile-defined bits, length in 32-bit words
# RFC 5761 §4: with RTP and RTCP on one port, a second byte of 192-223 is RTCP (SR 200,
# RR 201, SDES 202, BYE 203, APP 204, feedback 205-206, XR 207): payload types 64-95
# with the marker set, which RTP must not use there.
_RTCP = range(192, 224)
_DATAGRAM = 8192  # read size: more than any RTP packet on a 1500-byte path
_BURST = 32  # datagrams read from one socket per wake-up at most
_PLAIN = 0x80  # version 2 with no padding, extension or CSRC: what nearly every SRC sends


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet's header fields and payload (padding removed)."""

    pt: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP version 2 packet; ``ValueError`` if it is anything else."""
    size = len(data)
    if size < 12:
        raise ValueError(f"{size} bytes: shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError(f"RTP version {first >> 6}, not 2")
    if second in _RTCP:
        raise ValueError(f"RTCP packet type {second}, not RTP")
    start = 12 + 4 * (first & 0x0F)  # the CSRC list
    if first & 0x10:  # RFC 3550 §5.3.1: one extension, its length in words after 4 bytes
        if size < start + 4:
            raise ValueError("header extension cut short")
        start += 4 + 4 * _EXTENSION.unpack_from(data, start)[1]
    end = size
    if first & 0x20:  # RFC 3550 §5.1: the last byte counts the padding, itself included
        if data[-1] == 0:
            raise ValueError("padding flag set with a padding count of zero")
        end -= data[-1]
    if start > end:
        raise ValueError(f"{size} bytes: headers and padding say {start + size - end}")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, data[start:end], bool(second & 0x80))


class PortPool:
    """The ports ``first``..``last`` (inclusive), lent one per stream.

    Ports are lent in the order they were given back (first in, first out), so a port
    rests as long as possible before another stream gets it: late packets of an ended
    stream do not reach the next stream on that port.
    """

    def __init__(self, first: int, last: int) -> None:
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"port range {first}-{last}: FIRST <= LAST, within 1-65535")
        self.first, self.last = first, last
        self._free: deque[int] = deque(range(first, last + 1))
        self._lent: set[int] = set()

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self) -> int:
        """A port no stream holds; ``PortsExhausted`` when every one is lent."""
        if not self._free:
            raise PortsExhausted(
                f"all {self.last - self.first + 1} RTP ports ({self.first}-{self.last}) are in use"
            )
        port = self._free.popleft()
        self._lent.add(port)
        return port

    def give_back(self, port: int) -> None:
        """Return a port taken from this pool; ``ValueError`` for any other."""
        if port not in self._lent:
            raise ValueError(f"port {port} was not taken from this pool")
        self._lent.remove(port)
        self._free.append(port)


def _addresses(source: str) -> frozenset[str]:
    """The forms in which the socket layer may report ``source`` (an IP literal)."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        raise ValueError(f"expected source {source!r} is not an IP address") from None
    forms = {source, str(address)}
    if isinstance(address, ipaddress.IPv4Address):
        forms.add(f"::ffff:{address}")  # seen on a dual-stack socket
    elif address.ipv4_mapped is not None:
        forms.add(str(address.ipv4_mapped))
    return frozenset(forms)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class RtpReceiver:
    """One stream's UDP port: packets it expects go to ``on_packet``, others are counted.

    Until ``expect`` is called nothing is expected: every packet is dropped. ``on_packet``
    may be replaced at any time (a SIPREC call's ports are bound before its capture).
    """

    port: int
    received: int
    dropped: int
    on_packet: PacketSink

    def __init__(self, pool: PortPool, port: int, on_packet: PacketSink) -> None:
        self.port = port
        self.received = 0  # handed to on_packet
        self.dropped = 0  # another source, another payload type, RTCP, or not RTP
        self._pool = pool
        self.on_packet = on_packet
        self._sources: frozenset[str] | None = None  # None: any source
        self._payload_types: frozenset[int] = frozenset()
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @classmethod
    async def open(cls, host: str, pool: PortPool, on_packet: PacketSink) -> RtpReceiver:
        """Bind a port of ``pool`` on ``host``; a port that will not bind is passed over.

        ``PortsExhausted`` when no free port of the pool binds.
        """
        loop = asyncio.get_running_loop()
        if not pool.free:
            pool.take()  # raises PortsExhausted
        failed: OSError | None = None
        for _ in range(pool.free):
            port = pool.take()
            try:
                sock = _bind(host, port)
            except OSError as exc:  # another program holds it: it goes to the back
                pool.give_back(port)
                failed = exc
                log.warning("RTP port %s on %s does not bind (%s); passed over", port, host, exc)
                continue
            receiver = cls(pool, port, on_packet)
            receiver._socket, receiver._loop = sock, loop
            loop.add_reader(sock.fileno(), receiver._readable)
            return receiver
        detail = f"; the last bind failed: {failed}" if failed else ""
        raise PortsExhausted(f"no free RTP port of {pool.first}-{pool.last} binds{detail}")

    def _readable(self) -> None:
        # The socket is read here rather than through an asyncio transport, which reads
        # one datagram per wake-up into a fresh 256 KiB buffer: this one drains what is
        # queued (up to a burst, so that no stream starves the others) into 8 KiB. The
        # hot path of every packet of every call: all of it inline, locals only.
        sock = self._socket
        assert sock is not None
        sources, payload_types = self._sources, self._payload_types
        for _ in range(_BURST):
            try:
                data, addr = sock.recvfrom(_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error queued on the socket, say: not a packet
                log.debug("RTP port %s: %s", self.port, exc)
                return
            if (
                (sources is not None and addr[0] not in sources)
                or len(data) < 12
                or data[1] & 0x7F not in payload_types
            ):
                self.dropped += 1
                continue
            if data[0] == _PLAIN and data[1] not in _RTCP:
                _, _, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
                payload = data[12:]
            else:
                try:
                    packet = parse_rtp(data)
                except ValueError:
                    self.dropped += 1
                    continue
                sequence, timestamp, ssrc = packet.sequence, packet.timestamp, packet.ssrc
                payload = packet.payload
            self.received += 1
            self.on_packet(ssrc, sequence, timestamp, payload)

    def expect(self, *, source: str | None, payload_types: Iterable[int]) -> None:
        """Keep packets from ``source`` (an IP address; None: any) with these payload types."""
        self._sources = None if source is None else _addresses(source)
        self._payload_types = frozenset(payload_types)

    def close(self) -> None:
        """Stop receiving and give the port back to the pool (once; again does nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._socket is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._socket.fileno())
            self._socket.close()  # now, so that the port given back binds at once
        self._pool.give_back(self.port)

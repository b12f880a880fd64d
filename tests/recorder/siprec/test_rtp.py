"""RTP for SIPREC: the header parser, the port pool, and receivers on real UDP sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Iterator
from typing import NamedTuple, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder._exceptions import LiveCaptureError, PortsExhausted
from recorder.siprec.rtp import PortPool, RtpPacket, RtpReceiver, parse_rtp

T = TypeVar("T")
HOST = "127.0.0.1"
OTHER_HOST = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to loopback
PCMU, PCMA, CN, TELEPHONE_EVENT = 0, 8, 13, 101


def rtp(
    pt: int = PCMU,
    *,
    sequence: int = 1,
    timestamp: int = 160,
    ssrc: int = 0x1234ABCD,
    payload: bytes = b"\xff" * 160,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    """An RTP packet as a sender builds it (RFC 3550 §5.1, §5.3.1)."""
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrcs)
    out = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, sequence, timestamp, ssrc)
    out += b"".join(struct.pack("!I", csrc) for csrc in csrcs)
    if extension is not None:
        out += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes((padding,))
    return out


# --- parse_rtp ---------------------------------------------------------------------


def test_a_plain_packet_parses() -> None:
    packet = parse_rtp(rtp(PCMA, sequence=65535, timestamp=0xFFFFFFFF, marker=True))
    assert packet == RtpPacket(
        pt=PCMA,
        sequence=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0x1234ABCD,
        payload=b"\xff" * 160,
        marker=True,
    )


def test_csrcs_extension_and_padding_are_skipped() -> None:
    data = rtp(
        payload=b"audio",
        csrcs=(1, 2, 15),
        extension=b"\x10\xaa\x00\x00" * 2,
        padding=7,
    )
    packet = parse_rtp(data)
    assert packet.payload == b"audio"
    assert (packet.pt, packet.marker) == (PCMU, False)


def test_an_empty_payload_and_padding_of_one_byte() -> None:
    assert parse_rtp(rtp(payload=b"")).payload == b""
    assert parse_rtp(rtp(payload=b"x", padding=1)).payload == b"x"
    assert parse_rtp(rtp(payload=b"", extension=b"", padding=4)).payload == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than an RTP header"),
        (rtp()[:11], "shorter than an RTP header"),
        (b"\x40" + rtp()[1:], "RTP version 1, not 2"),
        (b"\x00" + rtp()[1:], "RTP version 0, not 2"),
        (b"\xc0" + rtp()[1:], "RTP version 3, not 2"),
        # RTCP receiver report arriving on the RTP port (RFC 5761 §4)
        (bytes((0x81, 201)) + struct.pack("!HI", 7, 1) + bytes(24), "RTCP packet type 201"),
        (bytes((0x80, 200)) + bytes(26), "RTCP packet type 200"),
        (bytes((0x80, 204)) + bytes(26), "RTCP packet type 204"),
        (bytes((0x8F,)) + rtp()[1:12] + bytes(56), "headers and padding say"),
        (rtp(payload=b"")[:12].replace(b"\x80", b"\x90", 1) + b"\xbe\xde", "extension cut short"),
        (rtp(payload=b"", extension=b"1234")[:-1], "headers and padding say"),
        (rtp(payload=b"ab", padding=2)[:-1] + b"\x00", "padding count of zero"),
        (rtp(payload=b"ab", padding=2)[:-1] + b"\x05", "headers and padding say"),
    ],
)
def test_what_is_not_rtp_is_a_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rtp(data)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_value_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except ValueError:
        return
    assert len(packet.payload) <= len(data) - 12


@st.composite
def near_rtp(draw: st.DrawFn) -> bytes:
    """Packets a sender could build, then damaged: flags, counts and lengths that lie."""
    data = bytearray(
        rtp(
            draw(st.integers(0, 127)),
            sequence=draw(st.integers(0, 65535)),
            payload=draw(st.binary(max_size=40)),
            marker=draw(st.booleans()),
            csrcs=tuple(range(draw(st.integers(0, 15)))),
            extension=draw(st.none() | st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4])),
            padding=draw(st.integers(0, 255)),
        )
    )
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_rtp())
def test_damaged_rtp_parses_or_raises_value_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except ValueError:
        return
    assert 0 <= packet.pt <= 127
    assert len(packet.payload) <= len(data) - 12


@settings(max_examples=500, deadline=None)
@given(
    st.integers(0, 127).filter(lambda pt: pt not in range(64, 96)),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=50),
    st.booleans(),
    st.integers(0, 15),
    st.integers(0, 255),
)
def test_what_a_sender_builds_reads_back(
    pt: int, sequence: int, timestamp: int, payload: bytes, marker: bool, csrcs: int, padding: int
) -> None:
    packet = parse_rtp(
        rtp(
            pt,
            sequence=sequence,
            timestamp=timestamp,
            payload=payload,
            marker=marker,
            csrcs=tuple(range(csrcs)),
            padding=padding,
        )
    )
    assert packet == RtpPacket(pt, sequence, timestamp, 0x1234ABCD, payload, marker)


# --- PortPool ----------------------------------------------------------------------


def test_the_pool_lends_each_port_once_and_takes_back_first_in_first_out() -> None:
    pool = PortPool(40000, 40002)
    assert [pool.take(), pool.take(), pool.take()] == [40000, 40001, 40002]
    with pytest.raises(PortsExhausted, match="all 3 RTP ports"):
        pool.take()
    pool.give_back(40001)
    pool.give_back(40000)
    assert [pool.take(), pool.take()] == [40001, 40000]


def test_only_ports_lent_can_be_given_back() -> None:
    pool = PortPool(40000, 40001)
    with pytest.raises(ValueError, match="not taken"):
        pool.give_back(40000)
    port = pool.take()
    pool.give_back(port)
    with pytest.raises(ValueError, match="not taken"):
        pool.give_back(port)
    with pytest.raises(ValueError, match="not taken"):
        pool.give_back(39999)


def test_ports_exhausted_is_a_live_capture_error() -> None:
    assert issubclass(PortsExhausted, LiveCaptureError)


@pytest.mark.parametrize(("first", "last"), [(40001, 40000), (0, 10), (65535, 65536)])
def test_a_pool_over_no_ports_is_refused(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="port range"):
        PortPool(first, last)


# --- RtpReceiver over real UDP ------------------------------------------------------


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, 20)

    return asyncio.run(bounded())


def free_ports(count: int) -> tuple[int, int]:
    """``count`` consecutive ports that bind on loopback now, below the ephemeral range."""
    for first in range(21000, 32000, 97):
        held: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind((HOST, port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return first, first + count - 1
    raise RuntimeError("no free port range")


@contextlib.contextmanager
def sender(host: str = HOST) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        yield sock
    finally:
        sock.close()


class Handed(NamedTuple):
    ssrc: int
    sequence: int
    timestamp: int
    payload: bytes


class Inbox:
    """What a receiver hands on, and a way to await the packet with a given sequence."""

    def __init__(self) -> None:
        self.packets: list[Handed] = []
        self._waiting: dict[int, asyncio.Event] = {}

    def __call__(self, ssrc: int, sequence: int, timestamp: int, payload: bytes) -> None:
        self.packets.append(Handed(ssrc, sequence, timestamp, payload))
        if sequence in self._waiting:
            self._waiting[sequence].set()

    async def until(self, sequence: int) -> None:
        event = self._waiting.setdefault(sequence, asyncio.Event())
        if any(packet.sequence == sequence for packet in self.packets):
            return
        await event.wait()


def test_only_the_expected_source_and_payload_types_reach_the_callback() -> None:
    async def scenario() -> None:
        pool, inbox = PortPool(*free_ports(4)), Inbox()
        receiver = await RtpReceiver.open(HOST, pool, inbox)
        address = (HOST, receiver.port)
        try:
            with sender() as near, sender(OTHER_HOST) as far:
                near.sendto(rtp(sequence=1), address)  # nothing expected yet
                while not receiver.dropped:  # read before anything is expected
                    await asyncio.sleep(0)
                receiver.expect(source=HOST, payload_types={PCMU, PCMA})
                far.sendto(rtp(sequence=2), address)  # another source
                near.sendto(rtp(TELEPHONE_EVENT, sequence=3, payload=b"\x05\x8a\x03\x20"), address)
                near.sendto(rtp(CN, sequence=4, payload=b"\x40"), address)
                near.sendto(bytes((0x80, 200)) + bytes(26), address)  # RTCP sender report
                near.sendto(b"\x00" * 40, address)  # not RTP at all
                near.sendto(rtp(sequence=5, payload=b"\xd5" * 160, marker=True), address)
                near.sendto(rtp(PCMA, sequence=6, payload=b"\xd5" * 80), address)
                await inbox.until(6)
        finally:
            receiver.close()
        assert [(p.sequence, p.payload) for p in inbox.packets] == [
            (5, b"\xd5" * 160),
            (6, b"\xd5" * 80),
        ]
        assert (receiver.received, receiver.dropped) == (2, 6)

    run(scenario())


def test_headers_beyond_the_plain_one_are_read_through() -> None:
    # The receiver reads the plain 12-byte header in place; CSRCs, an extension and
    # padding take the full parse, and each packet hands on its payload alone.
    async def scenario() -> None:
        pool, inbox = PortPool(*free_ports(2)), Inbox()
        receiver = await RtpReceiver.open(HOST, pool, inbox)
        receiver.expect(source=HOST, payload_types={PCMU})
        address = (HOST, receiver.port)
        voice = bytes(range(160))
        try:
            with sender() as near:
                near.sendto(rtp(sequence=1, timestamp=160, ssrc=7, payload=voice), address)
                near.sendto(rtp(sequence=2, csrcs=(1, 2), payload=voice), address)
                near.sendto(rtp(sequence=3, extension=b"\x10\xaa\x00\x00", payload=voice), address)
                near.sendto(rtp(sequence=4, padding=4, payload=voice), address)
                near.sendto(rtp(sequence=5, marker=True, payload=voice), address)
                await inbox.until(5)
        finally:
            receiver.close()
        assert inbox.packets[0] == Handed(7, 1, 160, voice)
        assert [(p.sequence, p.payload) for p in inbox.packets] == [(n, voice) for n in range(1, 6)]

    run(scenario())


def test_without_a_source_every_address_is_taken() -> None:
    async def scenario() -> None:
        pool, inbox = PortPool(*free_ports(2)), Inbox()
        receiver = await RtpReceiver.open(HOST, pool, inbox)
        receiver.expect(source=None, payload_types={PCMU})
        try:
            with sender() as near, sender(OTHER_HOST) as far:
                far.sendto(rtp(sequence=1), (HOST, receiver.port))
                near.sendto(rtp(sequence=2), (HOST, receiver.port))
                await inbox.until(2)
        finally:
            receiver.close()
        assert sorted(p.sequence for p in inbox.packets) == [1, 2]
        assert receiver.dropped == 0

    run(scenario())


def test_a_source_must_be_an_ip_address() -> None:
    async def scenario() -> None:
        receiver = await RtpReceiver.open(HOST, PortPool(*free_ports(1)), Inbox())
        try:
            with pytest.raises(ValueError, match="not an IP address"):
                receiver.expect(source="sbc.example.com", payload_types={PCMU})
        finally:
            receiver.close()

    run(scenario())


def test_each_stream_has_its_own_port_and_close_gives_it_back() -> None:
    async def scenario() -> None:
        first, last = free_ports(2)
        pool = PortPool(first, last)
        one = await RtpReceiver.open(HOST, pool, Inbox())
        two = await RtpReceiver.open(HOST, pool, Inbox())
        assert {one.port, two.port} == {first, last}
        with pytest.raises(PortsExhausted):
            await RtpReceiver.open(HOST, pool, Inbox())
        one.close()
        one.close()  # a second close gives nothing back twice
        assert pool.free == 1
        three = await RtpReceiver.open(HOST, pool, Inbox())  # binds at once: the socket is shut
        assert three.port == one.port
        two.close()
        three.close()
        assert pool.free == 2

    run(scenario())


def test_a_port_another_program_holds_is_passed_over() -> None:
    async def scenario() -> None:
        first, last = free_ports(2)
        pool = PortPool(first, last)
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.bind((HOST, first))
        try:
            receiver = await RtpReceiver.open(HOST, pool, Inbox())
            assert receiver.port == last
            with pytest.raises(PortsExhausted, match="binds"):
                await RtpReceiver.open(HOST, pool, Inbox())
            assert pool.free == 1  # the held port stays in the pool for later
            receiver.close()
        finally:
            holder.close()
        again = await RtpReceiver.open(HOST, pool, Inbox())
        again.close()

    run(scenario())


def test_a_queue_of_packets_longer_than_one_burst_is_read_whole() -> None:
    async def scenario() -> None:
        pool, inbox = PortPool(*free_ports(1)), Inbox()
        receiver = await RtpReceiver.open(HOST, pool, inbox)
        receiver.expect(source=HOST, payload_types={PCMU})
        try:
            with sender() as near:
                for sequence in range(1, 201):  # queued before the loop reads any
                    near.sendto(rtp(sequence=sequence), (HOST, receiver.port))
                await inbox.until(200)
        finally:
            receiver.close()
        assert [p.sequence for p in inbox.packets] == list(range(1, 201))
        assert (receiver.received, receiver.dropped) == (200, 0)

    run(scenario())


def test_a_source_given_as_an_ipv4_mapped_address_matches_its_ipv4_form() -> None:
    async def scenario() -> None:
        pool, inbox = PortPool(*free_ports(1)), Inbox()
        receiver = await RtpReceiver.open(HOST, pool, inbox)
        receiver.expect(source=f"::ffff:{HOST}", payload_types={PCMU})
        try:
            with sender(OTHER_HOST) as far, sender() as near:
                far.sendto(rtp(sequence=1), (HOST, receiver.port))
                near.sendto(rtp(sequence=2), (HOST, receiver.port))
                await inbox.until(2)
        finally:
            receiver.close()
        assert [p.sequence for p in inbox.packets] == [2]
        assert receiver.dropped == 1

    run(scenario())

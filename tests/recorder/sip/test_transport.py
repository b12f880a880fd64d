"""The SIP server over real UDP and TCP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from recorder.sip.core import Confirmed, Event, RequestReceived
from recorder.sip.message import MAX_MESSAGE, SipRequest, SipResponse, parse
from recorder.sip.transport import SipServer
from tests.recorder.sip.messages import invite, request

BOUND = 20.0  # no test waits for anything this long unless something is broken


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(scenario(), BOUND)

    asyncio.run(bounded())


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, server_port: int) -> UdpClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_datagram_endpoint(
            cls, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", server_port)
        )
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def answer(self) -> SipResponse:
        message = parse(await self.received.get())
        assert isinstance(message, SipResponse)
        return message

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


class TcpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server_port: int) -> TcpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", server_port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> SipResponse:
        head = await self.reader.readuntil(b"\r\n\r\n")
        message = parse(head)
        length = int(message.headers.get("content-length") or 0)
        message = parse(head + await self.reader.readexactly(length))
        assert isinstance(message, SipResponse)
        return message

    async def closed_by_server(self) -> bool:
        try:
            return await self.reader.read() == b""
        except ConnectionResetError:
            return True

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class App:
    """An application that answers 200 to every request, and records the events."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.server = SipServer(self.on_event)

    def on_event(self, event: Event) -> Awaitable[None] | None:
        self.events.put_nowait(event)
        if isinstance(event, RequestReceived):
            self.server.respond(
                event.transaction, 200, body=b"v=0\r\n", content_type="application/sdp"
            )
        return None

    async def __aenter__(self) -> App:
        await self.server.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()


def test_udp_and_tcp_share_one_ephemeral_port() -> None:
    async def scenario() -> None:
        async with App() as app:
            port = app.server.port
            assert port > 0
            client = await UdpClient.open(port)
            client.send(request("OPTIONS", port=client.port, branch="z9hG4bKu"))
            assert (await client.answer()).status == 200
            tcp = await TcpClient.open(port)
            await tcp.send(request("OPTIONS", transport="TCP", branch="z9hG4bKt"))
            assert (await tcp.answer()).status == 200
            client.close()
            await tcp.close()

    run(scenario)


def test_a_call_over_udp_the_2xx_repeated_until_the_ack() -> None:
    async def scenario() -> None:
        async with App() as app:
            client = await UdpClient.open(app.server.port)
            client.send(invite(port=client.port))

            assert (await client.answer()).status == 100
            event = await app.events.get()
            assert isinstance(event, RequestReceived) and event.dialog is None
            ok = await client.answer()
            assert (ok.status, ok.body) == (200, b"v=0\r\n")
            again = await client.answer()  # not acknowledged yet: sent again after T1
            assert again.status == 200
            tag = (ok.headers.get("to") or "").split("tag=")[1]
            client.send(request("ACK", to_tag=tag, port=client.port, branch="z9hG4bKack", cseq=1))
            confirmed = await app.events.get()
            assert isinstance(confirmed, Confirmed)
            assert confirmed.dialog.local_tag == tag

            client.send(request("BYE", to_tag=tag, port=client.port, branch="z9hG4bKbye", cseq=2))
            bye = await app.events.get()
            assert isinstance(bye, RequestReceived) and bye.dialog is confirmed.dialog
            while (answer := await client.answer()).status != 200 or "BYE" not in (
                answer.headers.get("cseq") or ""
            ):
                pass  # a 200 for the INVITE still in flight before the ACK landed
            client.close()

    run(scenario)


def test_a_call_over_tcp_with_split_and_pipelined_messages() -> None:
    async def scenario() -> None:
        async with App() as app:
            tcp = await TcpClient.open(app.server.port)
            data = invite(transport="TCP")
            await tcp.send(data[:100])
            await asyncio.sleep(0)  # let the first part arrive on its own
            await tcp.send(data[100:])
            assert (await tcp.answer()).status == 100
            ok = await tcp.answer()
            assert ok.status == 200
            assert (
                ok.headers.get(
                    "contact",
                )
                == f"<sip:acme@127.0.0.1:{app.server.port};transport=tcp>"
            )
            tag = (ok.headers.get("to") or "").split("tag=")[1]

            ack = request("ACK", to_tag=tag, transport="TCP", branch="z9hG4bKa", cseq=1)
            options = request("OPTIONS", transport="TCP", branch="z9hG4bKo", call_id="other")
            bye = request("BYE", to_tag=tag, transport="TCP", branch="z9hG4bKb", cseq=2)
            await tcp.send(b"\r\n\r\n" + ack + options + bye)  # a keep-alive, then three
            assert await tcp.reader.readexactly(2) == b"\r\n"  # RFC 5626's pong
            assert [(await tcp.answer()).status for _ in range(2)] == [200, 200]
            kinds = [type(await app.events.get()).__name__ for _ in range(3)]
            assert kinds == ["RequestReceived", "Confirmed", "RequestReceived"]
            await tcp.close()

    run(scenario)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        request("OPTIONS", transport="TCP").replace(b"Content-Length: 0", b"Content-Length: abc"),
        request("OPTIONS", transport="TCP").replace(
            b"Content-Length: 0", b"Content-Length: 99999999"
        ),
        b"OPTIONS sip:a@h SIP/2.0\r\n" + b"X: " + b"y" * MAX_MESSAGE,
    ],
)
def test_a_tcp_connection_sending_garbage_is_closed_and_the_server_keeps_serving(
    garbage: bytes,
) -> None:
    async def scenario() -> None:
        async with App() as app:
            bad = await TcpClient.open(app.server.port)
            await bad.send(garbage)
            assert await bad.closed_by_server()
            await bad.close()
            good = await TcpClient.open(app.server.port)
            await good.send(request("OPTIONS", transport="TCP"))
            assert (await good.answer()).status == 200
            await good.close()

    run(scenario)


def test_bad_datagrams_get_400_or_silence_and_the_server_keeps_serving() -> None:
    async def scenario() -> None:
        async with App() as app:
            client = await UdpClient.open(app.server.port)
            options = request("OPTIONS", port=client.port)
            for junk in [
                options[:40],  # truncated
                b"\x00\xff" * 600,  # binary
                b"hello, is it me you are looking for",
                options + b"x" * (MAX_MESSAGE - len(options) + 1),  # oversized
                options.replace(b"Content-Length: 0", b"Content-Length: -5"),
                options.replace(b"Content-Length: 0", b"Content-Length: 4000"),
                options.replace(b"Call-ID: a84b4c76e66710@src.example.com\r\n", b""),
                options.replace(b"Max-Forwards: 70", b"Max Forwards 70"),
            ]:
                client.send(junk)
            client.send(request("OPTIONS", port=client.port, branch="z9hG4bKlast", call_id="last"))

            answers: list[SipResponse] = []
            while not answers or answers[-1].headers.get("call-id") != "last":
                answers.append(await client.answer())
            # Bad lengths are a datagram's business only: the body is the rest of it.
            assert [a.status for a in answers] == [200, 200, 400, 400, 200]
            client.close()

    run(scenario)


def test_a_failing_handler_is_logged_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    async def scenario() -> None:
        server: SipServer

        def broken(event: Event) -> Awaitable[None] | None:
            assert isinstance(event, RequestReceived)
            call_id = event.transaction.request.headers.get("call-id")
            calls.append(call_id or "")
            if call_id == "c0":
                raise RuntimeError("a handler's bug")
            return answer_later(event, call_id)

        async def answer_later(event: RequestReceived, call_id: str | None) -> None:
            await asyncio.sleep(0)
            if call_id == "c1":
                raise RuntimeError("an async handler's bug")
            server.respond(event.transaction, 486)

        server = SipServer(broken)
        await server.start("127.0.0.1", 0)
        client = await UdpClient.open(server.port)
        for n in range(3):
            client.send(invite(port=client.port, branch=f"z9hG4bK{n}", call_id=f"c{n}"))
        statuses = set()
        while 486 not in statuses:
            statuses.add((await client.answer()).status)
        client.close()
        await server.stop()

    with caplog.at_level(logging.ERROR, logger="recorder.sip.transport"):
        run(scenario)

    assert sorted(calls) == ["c0", "c1", "c2"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("handler failed" in m for m in messages)
    texts = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert "a handler's bug" in texts and "an async handler's bug" in texts


def test_stop_closes_both_sockets() -> None:
    async def scenario() -> None:
        server = SipServer(lambda event: None)
        await server.start("127.0.0.1", 0)
        port = server.port
        await server.stop()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", port))

    run(scenario)


def test_hang_up_sends_a_bye_on_the_connection() -> None:
    async def scenario() -> None:
        async with App() as app:
            tcp = await TcpClient.open(app.server.port)
            await tcp.send(invite(transport="TCP"))
            await tcp.answer()
            ok = await tcp.answer()
            tag = (ok.headers.get("to") or "").split("tag=")[1]
            await tcp.send(request("ACK", to_tag=tag, transport="TCP", branch="z9hG4bKa", cseq=1))
            await app.events.get()
            confirmed = await app.events.get()
            assert isinstance(confirmed, Confirmed)

            app.server.hang_up(confirmed.dialog, headers=[("Reason", 'SIP;text="opt_out"')])

            head = await tcp.reader.readuntil(b"\r\n\r\n")
            bye = parse(head)
            assert isinstance(bye, SipRequest)
            assert bye.method == "BYE"
            assert bye.headers.get("reason") == 'SIP;text="opt_out"'
            assert app.server.core.dialogs == 0
            await tcp.close()

    run(scenario)

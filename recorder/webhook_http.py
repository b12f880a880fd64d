"""The webhook dispatcher's HTTP client: POSTs over kept-alive connections, h11 on asyncio streams.

h11 does the protocol (request framing, every way a response may be framed, keep-alive
rules); this module only moves its bytes. Measured on the test machine, httpx2 spent
about 7 ms of the event loop per POST whatever the concurrency (130 POSTs/s), where the
same requests written directly went out at over 500/s: short of the delivery rate
webhooks need (BENCHMARKS.md, Webhooks).

A response body is read and dropped (webhook receivers answer with a status), up to
``MAX_RESPONSE_BYTES``: past that the connection is closed rather than drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

MAX_RESPONSE_BYTES = 64 * 1024
_READ = 16 * 1024


class PostError(Exception):
    """The request could not be made or got no well-formed answer (not a callrec error:
    the dispatcher records it as the attempt's outcome)."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


_Key = tuple[str, str, int]


class Poster:
    """POSTs with a bound on open connections, reusing idle ones per origin."""

    def __init__(self, *, timeout_s: float, max_connections: int, user_agent: str) -> None:
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._user_agent = user_agent
        self._idle: dict[_Key, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """The answer's status; TimeoutError past the timeout, PostError on any other failure."""
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        key = (scheme, host, parts.port or (443 if scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = h11.Request(
            method="POST",
            target=target,
            headers=[
                ("host", parts.netloc.rsplit("@", 1)[-1]),
                ("user-agent", self._user_agent),
                ("content-length", str(len(body))),
                *headers.items(),
            ],
        )
        async with self._slots, asyncio.timeout(self._timeout_s):
            return await self._exchange(key, request, body)

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    async def _exchange(self, key: _Key, request: h11.Request, body: bytes) -> int:
        idle = self._idle.setdefault(key, [])
        while idle:  # a kept-alive connection the receiver may have closed meanwhile
            connection = idle.pop()
            try:
                return await self._once(key, connection, request, body)
            except (OSError, h11.ProtocolError, PostError):
                continue  # before any answer on a stale connection: a fresh one
        return await self._once(key, await self._open(key), request, body)

    async def _open(self, key: _Key) -> _Connection:
        scheme, host, port = key
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls else None
            )
        except OSError as exc:
            raise PostError(f"cannot connect: {exc.strerror or exc}") from None
        return _Connection(reader, writer)

    async def _once(
        self, key: _Key, connection: _Connection, request: h11.Request, body: bytes
    ) -> int:
        protocol = connection.protocol
        try:
            data = protocol.send(request) or b""
            data += (protocol.send(h11.Data(data=body)) or b"") + (
                protocol.send(h11.EndOfMessage()) or b""
            )
            connection.writer.write(data)
            await connection.writer.drain()
            status, read = await self._answer(connection)
        except BaseException:
            connection.close()
            raise
        reusable = read <= MAX_RESPONSE_BYTES and (
            protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
        )
        if reusable:
            protocol.start_next_cycle()
            self._idle.setdefault(key, []).append(connection)
        else:
            connection.close()
        return status

    async def _answer(self, connection: _Connection) -> tuple[int, int]:
        protocol, status, read = connection.protocol, 0, 0
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                chunk = await connection.reader.read(_READ)
                protocol.receive_data(chunk)  # b"": the peer closed
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                read += len(event.data)
                if read > MAX_RESPONSE_BYTES:
                    return status, read  # the status is known; the rest is not worth reading
            elif isinstance(event, h11.EndOfMessage):
                return status, read
            elif isinstance(event, h11.ConnectionClosed):
                raise PostError("the receiver closed the connection without an answer")

"""The asyncio side of SIP: one UDP socket and one TCP listener on one port, around a SipCore.

Everything SIP is decided in ``SipCore``; this module only moves bytes, keeps the core's
next timer on the loop (``loop.call_at``) and hands the core's events to the application.
An application callback may be a plain function or return an awaitable (run as a task);
its exceptions are logged and never stop the server.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from recorder.sip.core import Dialog, Event, Peer, ServerTransaction, SipCore
from recorder.sip.framing import StreamFramer
from recorder.sip.message import SipParseError

__all__ = ["SipServer"]

log = logging.getLogger(__name__)

# Recording sources keep one or a few connections each; more than this is not a source.
MAX_CONNECTIONS = 1024
# Answers queued for a peer that does not read them: past this, the connection is closed.
MAX_WRITE_BUFFER = 1024 * 1024
# Tries at a port free for both UDP and TCP when the caller leaves the choice to us.
EPHEMERAL_TRIES = 20

OnEvent = Callable[[Event], Awaitable[None] | None]
CoreFactory = Callable[[str, int], SipCore]


def _default_core(host: str, port: int) -> SipCore:
    return SipCore(local_host=host, local_port=port)


class SipServer:
    """SIP over UDP and TCP on ``host:port`` (``start``), answering through ``respond``."""

    def __init__(
        self,
        on_event: OnEvent,
        *,
        core_factory: CoreFactory = _default_core,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._on_event = on_event
        self._core_factory = core_factory
        self._max_connections = max_connections
        self._core: SipCore | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._datagrams: _Datagrams | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._flushing = False
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def listening(self) -> bool:
        return self._udp is not None

    @property
    def core(self) -> SipCore:
        if self._core is None:
            raise RuntimeError("the SIP server is not started")
        return self._core

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP and TCP at ``host:port``; port 0: one ephemeral port for both."""
        loop = asyncio.get_running_loop()
        for attempt in range(EPHEMERAL_TRIES if port == 0 else 1):
            udp, datagrams = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(host, port)
            )
            bound = udp.get_extra_info("sockname")[1]
            try:
                tcp = await loop.create_server(
                    lambda: _Connection(self), host, bound, reuse_address=True
                )
            except OSError as exc:
                udp.close()
                if port == 0 and exc.errno == errno.EADDRINUSE and attempt + 1 < EPHEMERAL_TRIES:
                    continue  # that UDP port's TCP twin is taken: another ephemeral port
                raise
            self._udp, self._tcp, self._port = udp, tcp, bound
            self._datagrams = datagrams
            self._core = self._core_factory(host, bound)
            return

    def respond(
        self,
        transaction: ServerTransaction,
        status: int,
        *,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Dialog | None:
        """Answer a request now (``SipCore.respond`` at the loop's time) and send it."""
        now = asyncio.get_running_loop().time()
        dialog = self.core.respond(
            transaction,
            status,
            now=now,
            reason=reason,
            headers=headers,
            body=body,
            content_type=content_type,
        )
        self._flush()
        return dialog

    def hang_up(self, dialog: Dialog, *, headers: Sequence[tuple[str, str]] = ()) -> None:
        """End a dialog from our side with a BYE (``SipCore.hang_up``)."""
        self.core.hang_up(dialog, now=asyncio.get_running_loop().time(), headers=headers)
        self._flush()

    def end_dialog(self, dialog: Dialog) -> None:
        """Forget a dialog the application ended (``SipCore.end_dialog``)."""
        self.core.end_dialog(dialog)
        self._flush()

    async def stop(self) -> None:
        """Close the sockets and the connections; cancel the callbacks still running."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._udp is not None:
            self._udp.close()
            if self._datagrams is not None:
                await self._datagrams.closed  # the socket is closed once this is done
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for connection in list(self._connections.values()):
                connection.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- bytes in --------------------------------------------------------------------

    def _received(self, data: bytes, peer: Peer) -> None:
        if self._core is None:
            return
        try:
            self._core.receive(data, peer, asyncio.get_running_loop().time())
        except Exception:  # a bug in the core must not stop the server for everyone
            log.exception("SIP core failed on a message from %s:%d", peer.host, peer.port)
        self._flush()

    def _tick(self) -> None:
        # The loop may run a timer up to its clock's resolution early: never before its time.
        now = max(asyncio.get_running_loop().time(), self._timer_at or 0.0)
        self._timer, self._timer_at = None, None
        if self._core is None:
            return
        try:
            self._core.tick(now)
        except Exception:
            log.exception("SIP core failed on its timers")
        self._flush()

    # -- bytes and events out --------------------------------------------------------

    def _flush(self) -> None:
        """Send what the core has to send, hand over its events, set its next timer."""
        if self._flushing or self._core is None:
            return  # a callback answering inside the loop below: the loop picks it up
        self._flushing = True
        try:
            while True:
                outgoing = self._core.take_outgoing()
                events = self._core.take_events()
                if not outgoing and not events:
                    break
                for peer, data in outgoing:
                    self._send(peer, data)
                for event in events:
                    self._dispatch(event)
        finally:
            self._flushing = False
        self._arm()

    def _send(self, peer: Peer, data: bytes) -> None:
        if peer.transport == "udp":
            if self._udp is not None:
                self._udp.sendto(data, (peer.host, peer.port))
            return
        connection = self._connections.get(peer.connection or 0)
        if connection is None:
            log.debug("SIP answer for closed connection %s dropped", peer.connection)
            return
        connection.write(data)

    def _dispatch(self, event: Event) -> None:
        try:
            result = self._on_event(event)
        except Exception:
            log.exception("SIP event handler failed on %s", type(event).__name__)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP event handler failed", exc_info=task.exception())

    def _arm(self) -> None:
        if self._core is None:
            return
        deadline = self._core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = (
            None if deadline is None else asyncio.get_running_loop().call_at(deadline, self._tick)
        )


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self._server = server
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._server._received(data, Peer("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier answer (the peer's port is closed): nothing to do.
        log.debug("SIP over UDP: %s", exc)


class _Connection(asyncio.Protocol):
    """One TCP connection: framed by Content-Length; answers go back on it."""

    def __init__(self, server: SipServer) -> None:
        self._server = server
        self._framer = StreamFramer()
        self._transport: asyncio.Transport | None = None
        self._id = 0
        self._peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream's: a Transport
        server = self._server
        if len(server._connections) >= server._max_connections:
            log.warning("SIP over TCP: %d connections, one more refused", len(server._connections))
            transport.close()
            return
        self._id = next(server._ids)
        host, port = transport.get_extra_info("peername")[:2]
        self._peer = Peer("tcp", str(host), int(port), self._id)
        server._connections[self._id] = self

    def data_received(self, data: bytes) -> None:
        if self._peer is None:
            return
        try:
            messages = self._framer.feed(data)
        except SipParseError as exc:
            log.info("SIP over TCP from %s:%d closed: %s", self._peer.host, self._peer.port, exc)
            self.close()
            return
        if self._framer.pings:
            # RFC 5626 §4.4.1: a CRLF CRLF ping is answered with a CRLF pong.
            self.write(b"\r\n" * self._framer.pings)
            self._framer.pings = 0
        for message in messages:
            self._server._received(message, self._peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.pop(self._id, None)
        self._peer = None

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if self._transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("SIP over TCP: a peer that does not read its answers, closed")
            self.close()
            return
        self._transport.write(data)

    def close(self) -> None:
        self._server._connections.pop(self._id, None)
        self._peer = None
        if self._transport is not None:
            self._transport.close()

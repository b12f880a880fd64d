"""An HTTP-aware relay in front of the test S3 that can hold one kind of request.

A test points a gateway at it and says which request to hold, and whether before it
reaches S3 or after (S3 did the work, the answer never comes back): the gateway is
then stuck at a known step of the store path, where the test can kill it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

Match = Callable[[str, str], bool]  # (method, target) -> hold it?


@dataclass
class Rule:
    match: Match
    after: bool  # forward it, then hold the answer
    caught: threading.Event
    target: str = ""


class S3Gate:
    """Relays HTTP/1.1 to ``upstream``; ``hold`` arms one rule at a time."""

    def __init__(self, upstream: str) -> None:
        url = urlsplit(upstream)
        self._upstream = (url.hostname or "127.0.0.1", url.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._rule: Rule | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def hold(self, match: Match, *, after: bool = False) -> Rule:
        """Hold the next request that ``match`` picks; its rule says when it was caught."""
        rule = Rule(match, after, threading.Event())
        with self._lock:
            self._rule = rule
        return rule

    def open(self) -> None:
        """Relay everything again (requests already held stay held)."""
        with self._lock:
            self._rule = None

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._threads[0].join()
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            held = threading.Event()  # answers from S3 no longer reach the client
            pumps = (
                threading.Thread(target=self._requests, args=(client, server, held), daemon=True),
                threading.Thread(target=self._answers, args=(server, client, held), daemon=True),
            )
            for pump in pumps:
                self._threads.append(pump)
                pump.start()

    def _take(self, method: str, target: str) -> Rule | None:
        with self._lock:
            rule = self._rule
            if rule is None or not rule.match(method, target):
                return None
            self._rule = None
            rule.target = target
            return rule

    def _requests(
        self, client: socket.socket, server: socket.socket, held: threading.Event
    ) -> None:
        try:
            self._relay_requests(client, server, held)
        except OSError:
            pass
        finally:
            for sock in (server, client):  # ends the answers' thread too
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _relay_requests(
        self, client: socket.socket, server: socket.socket, held: threading.Event
    ) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = client.recv(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:])
            }
            assert "chunked" not in headers.get("transfer-encoding", ""), "not relayed"
            length = int(headers.get("content-length", "0"))
            rule = self._take(method, target)
            if rule is not None and not rule.after:
                rule.caught.set()
                while client.recv(65536):  # never forwarded; read until the client dies
                    pass
                return
            if rule is not None:
                held.set()
            server.sendall(head + b"\r\n\r\n")
            while length:
                if not buffer:
                    buffer = client.recv(min(length, 65536))
                    if not buffer:
                        return
                piece, buffer = buffer[:length], buffer[length:]
                server.sendall(piece)
                length -= len(piece)
            if rule is not None:
                rule.caught.set()

    @staticmethod
    def _answers(server: socket.socket, client: socket.socket, held: threading.Event) -> None:
        with suppress(OSError):
            while data := server.recv(65536):
                if not held.is_set():
                    client.sendall(data)
        with suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)

"""A webhook receiver on 127.0.0.1, as an integrator runs one: up, down, failing or slow."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # a dispatcher opens dozens of connections at once


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers ``mode``: ``ok`` (200, the request is kept), ``error`` (500) or ``slow``
    (an answer only after ``delay`` seconds, and a 503 then); ``stop`` takes it down."""

    def __init__(self, path: str = "/hooks") -> None:
        self.path = path
        self.mode = "ok"
        self.delay = 1.0
        self.received: list[Received] = []
        self.attempts = 0
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.path}"

    def start(self) -> Receiver:
        """Listen (on the port of the last run, after a ``stop``)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                mode = receiver.mode
                if mode == "slow":
                    time.sleep(receiver.delay)
                status = {"ok": 200, "error": 500, "slow": 503}[mode]
                with receiver._changed:
                    receiver.attempts += 1
                    if status == 200:
                        headers = {k.lower(): v for k, v in self.headers.items()}
                        receiver.received.append(Received(headers, body))
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait(self, predicate: Any, timeout: float = 60.0) -> None:
        """Block until ``predicate(self)`` holds (AssertionError after ``timeout``)."""
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self), timeout), (
                f"receiver: {len(self.received)} received, {self.attempts} attempts"
            )

"""``callrec serve`` that kills itself with SIGKILL at one step of the store path.

Run as ``python -m tests.recorder.crashing_gateway STEP serve …``: the same gateway as
``python -m recorder``, with one function wrapped so that the process dies, as under
``kill -9``, exactly when the step is reached. Nothing is flushed or cleaned up.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request

import recorder.app
from recorder.cli import main
from storage.objectstore import ObjectStore
from storage.spool import SpoolWriter
from storage.vault import Vault

Message = MutableMapping[str, Any]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _before(owner: type, name: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _die()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _after(owner: type, name: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        _die()
        return result

    setattr(owner, name, wrapper)


def _mid_body() -> None:
    """Die once half the upload's body was received (and handed on)."""
    original = Request.stream

    async def stream(self: Request) -> AsyncIterator[bytes]:
        upload = self.url.path.endswith("/recording")
        half, seen = int(self.headers.get("content-length", "0")) // 2, 0
        async for piece in original(self):
            if upload and piece and seen >= half:
                _die()
            seen += len(piece)
            yield piece

    Request.stream = stream  # type: ignore[method-assign]


def _mid_response() -> None:
    """Die right after the first bytes of a recording's audio went out."""
    original = recorder.app.create_app

    def create_app(*args: Any, **kwargs: Any) -> Any:
        app = original(*args, **kwargs)

        async def crashing(
            scope: Message,
            receive: Callable[[], Awaitable[Message]],
            send: Callable[[Message], Awaitable[None]],
        ) -> None:
            async def sending(message: Message) -> None:
                await send(message)
                if message["type"] == "http.response.body" and message.get("body"):
                    _die()

            audio = scope["type"] == "http" and scope["path"].endswith("/audio")
            await app(scope, receive, sending if audio else send)

        return crashing

    recorder.app.create_app = create_app  # type: ignore[assignment]


STEPS: dict[str, Callable[[], None]] = {
    "upload-mid-body": _mid_body,
    "upload-body-received": lambda: _before(Vault, "begin"),
    "upload-spooled": lambda: _before(SpoolWriter, "seal"),
    "upload-sealed": lambda: _after(SpoolWriter, "seal"),
    "upload-object-complete": lambda: (
        _after(ObjectStore, "put_file"),
        _after(ObjectStore, "complete_upload"),
    ),
    "upload-catalog-written": lambda: _after(Vault, "finish"),
    "download-decrypted": lambda: _after(Vault, "read"),
    "download-mid-response": _mid_response,
}


if __name__ == "__main__":
    STEPS[sys.argv.pop(1)]()
    main()

"""Files served over HTTP from an encrypted scratch: audio and access exports."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from storage.scratch import Scratch


def stream_scratch(scratch: Scratch, *, media_type: str, filename: str) -> StreamingResponse:
    """Serve a sealed scratch's plaintext as an attachment; the scratch goes afterwards."""
    return StreamingResponse(
        _pieces_then_close(scratch),
        media_type=media_type,
        headers={
            "Content-Length": str(scratch.size),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
        background=BackgroundTask(scratch.close),  # also when the body was never started
    )


def _pieces_then_close(scratch: Scratch) -> Iterator[bytes]:
    try:
        yield from scratch.pieces()
    finally:
        scratch.close()

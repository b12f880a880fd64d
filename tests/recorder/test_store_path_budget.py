"""A short store path: two transactions that write per upload, the body read once."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from recorder import recordings
from storage.backend import StorageBackend
from storage.scratch import Scratch
from tests.recorder.conftest import call_body, make_tenant, tone_wav


class _CountingReader(io.RawIOBase):
    """A reader that adds what it hands out to ``counts["body"]``."""

    def __init__(self, inner: io.BufferedReader, counts: Counter[str]) -> None:
        super().__init__()
        self._inner, self._counts = inner, counts

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def readinto(self, buffer: Any) -> int:
        count = self._inner.readinto(buffer)
        self._counts["body"] += count
        return count

    def close(self) -> None:
        self._inner.close()
        super().close()


def test_one_upload_writes_twice_and_reads_its_body_once(
    client: TestClient, backend: StorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = make_tenant(client)
    client.post("/v1/calls", json=call_body(), headers=tenant.integrator)
    # The webhook dispatcher polls the outbox on the same engine whenever it likes:
    # stopped, so that what is counted is the upload's own work.
    dispatcher = client.app.state.webhooks  # type: ignore[attr-defined]
    assert client.portal is not None
    client.portal.call(dispatcher.stop)
    body = tone_wav(tmp_path / "call.wav", seconds=20.0, channels=2).read_bytes()
    counts: Counter[str] = Counter()
    storing = False

    def begin(connection: sa.Connection) -> None:
        writes = connection.get_execution_options().get("callrec_writes", False)
        where = "store" if storing else "request"
        counts[f"{where} {'writes' if writes else 'reads'}"] += 1

    # The store path: from the received body to the stored recording.
    store_upload = recordings._store_upload

    def measured(*args: Any) -> Any:
        nonlocal storing
        storing = True
        try:
            return store_upload(*args)
        finally:
            storing = False

    monkeypatch.setattr(recordings, "_store_upload", measured)

    opened = Scratch.open
    monkeypatch.setattr(
        Scratch, "open", lambda self: io.BufferedReader(_CountingReader(opened(self), counts))
    )
    sa.event.listen(backend.engine, "begin", begin)
    try:
        answer = client.put(
            "/v1/calls/call-1/recording",
            content=body,
            headers={**tenant.integrator, "Content-Type": "audio/wav"},
        )
    finally:
        sa.event.remove(backend.engine, "begin", begin)
    assert answer.status_code == 201, answer.text
    # Cataloguing the recording, then storing it: two transactions, both writing (a
    # write lock each on SQLite), and nothing else on the store path. Around it, the
    # request checks its key, admits the call's audio and reads the answer.
    assert (counts["store writes"], counts["store reads"]) == (2, 0), counts
    assert counts["request writes"] + counts["request reads"] <= 3, counts
    # Decoded once: what the sniffing and the demuxer's probe read again is small.
    assert counts["body"] < 1.2 * len(body), (counts["body"], len(body))

"""Secrets generated under the data directory: one winner, read whole by everyone."""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage.backend import StorageBackend
from storage.secret_files import create_once
from storage.settings import Settings


def test_the_first_secret_stays_and_later_ones_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "secret"
    assert create_once(path, "first")
    assert not create_once(path, "second")
    assert path.read_text() == "first"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no staging file left


def test_processes_starting_together_share_one_master_key(tmp_path: Path) -> None:
    # A gateway and a CLI beside it may both find no key and make one: every one of them
    # must end up with the same key, read whole, and none may fail.
    for attempt in range(20):
        settings = Settings(data_dir=tmp_path / str(attempt))
        barrier = threading.Barrier(8)

        with ThreadPoolExecutor(8) as pool:
            keys = list(pool.map(_start, [settings] * 8, [barrier] * 8))
        assert len(set(keys)) == 1
        assert StorageBackend(settings).master_key() == keys[0]


def _start(settings: Settings, barrier: threading.Barrier) -> bytes:
    backend = StorageBackend(settings)
    barrier.wait()  # all at once: each may find no key yet
    return backend.master_key()

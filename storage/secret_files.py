"""Secrets generated once under the data directory, whole or not at all.

Two processes may start at the same moment (a gateway and a CLI beside it): each
writes its candidate to a private staging file and links it into place. A link never
replaces a file, so the first wins, and the other reads the winner's, never a file
still being written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def create_once(path: Path, text: str) -> bool:
    """Write ``path`` whole with mode 0600 unless it exists; False if another got there first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(staging, path)  # atomic, and never replaces a secret already there
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()

"""Where a running embedded S3 can be found by other callrec processes on the same data.

``callrec serve`` owns the embedded SeaweedFS and holds its data dir locked, so a
command run beside it (``purge``, ``reconcile`` …) cannot start a second one there. The
owner writes its endpoint to ``endpoint.json`` in the S3 data dir once it answers, and
removes it on a clean stop; the secret stays in ``DATA_DIR/s3-credentials.json``, which
both read. A file left by a process that died is known by its pid, and is replaced by
the next owner, which holds the lock.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

ENDPOINT_FILE = "endpoint.json"


@dataclass(frozen=True)
class PublishedEndpoint:
    """What a running embedded S3 tells the processes beside it."""

    endpoint_url: str
    pid: int  # the callrec process that owns the server (not weed itself)
    access_key_id: str  # its secret is in DATA_DIR/s3-credentials.json


def publish_endpoint(data_dir: Path, endpoint: PublishedEndpoint) -> None:
    """Write the endpoint file atomically, readable by us only."""
    path = data_dir / ENDPOINT_FILE
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(endpoint), handle)
    os.replace(tmp, path)


def withdraw_endpoint(data_dir: Path) -> None:
    (data_dir / ENDPOINT_FILE).unlink(missing_ok=True)


def running_endpoint(data_dir: Path) -> PublishedEndpoint | None:
    """The endpoint of the embedded S3 running on ``data_dir``, or None.

    None when no file is there, or when it names a process that is gone: the file is
    then stale, left by a process that was killed.
    """
    try:
        found = PublishedEndpoint(**json.loads((data_dir / ENDPOINT_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return found if _alive(found.pid) else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:  # gone, or another user's process that reused the pid
        return False
    try:  # a killed process its parent has not reaped yet is a zombie: gone as well
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: the signal test is all there is
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"

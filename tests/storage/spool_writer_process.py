"""A capture in a process of its own, for tests that kill it: ``python -m`` this file.

Argument: a JSON object with the database URL, the S3 config, the master key (hex),
the spool directory, how many bytes to write and whether to seal. It prints the
spool's path once written, then waits on stdin for a kill that never announces itself.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from storage.audit import AuditLog
from storage.db import create_db_engine
from storage.keyring import Keyring
from storage.objectstore import ObjectStore
from storage.s3_client import S3Config
from storage.vault import RecordingDraft, Vault


def main() -> None:
    args = json.loads(sys.argv[1])
    keyring = Keyring(bytes.fromhex(args["master_key"]))
    now = datetime.now(UTC)
    vault = Vault(
        engine=create_db_engine(args["database_url"]),
        store=ObjectStore.from_config(S3Config(**args["s3"])),
        keyring=keyring,
        audit=AuditLog(keyring.derive("audit-anchor")),
        spool_dir=Path(args["spool_dir"]),
        part_size=args["part_size"],
    )
    draft = RecordingDraft(
        client_id="acme", call_id="killed", channel="upload", codec="opus", container="ogg"
    )
    writer = vault.begin(draft, now=now)
    writer.write(os.urandom(args["size"]))
    path = writer.seal()[0] if args["seal"] else writer.path
    print(json.dumps({"recording_id": writer.recording_id, "path": str(path)}), flush=True)
    sys.stdin.read()  # killed here


if __name__ == "__main__":
    main()

"""Assembles the storage layer from the settings: database, S3, keys, audit, vault.

``StorageBackend.start`` is where callrec refuses to start: an unreachable database, an
S3 endpoint that is down, refuses our credentials or lacks a feature, or a master key
that does not match the data all raise a StorageError with a one-line message.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from storage import crypto
from storage.audit import AuditLog
from storage.capabilities import check_backend
from storage.db import check_database, create_db_engine, migrate, session_scope
from storage.embedded_s3 import EmbeddedS3
from storage.errors import ConfigError
from storage.keyring import Keyring
from storage.objectstore import ObjectStore, S3Config
from storage.settings import Settings
from storage.vault import Vault

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str


class StorageBackend:
    """Owns the engine, the object store (and the embedded S3 if any) and the vault."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded_s3: EmbeddedS3 | None = None
        self._engine: Engine | None = None
        self._store: ObjectStore | None = None
        self._vault: Vault | None = None
        self._keyring: Keyring | None = None
        self._audit: AuditLog | None = None

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "StorageBackend.start() first"
        return self._engine

    @property
    def store(self) -> ObjectStore:
        assert self._store is not None, "StorageBackend.start() first"
        return self._store

    @property
    def vault(self) -> Vault:
        assert self._vault is not None, "StorageBackend.start() first"
        return self._vault

    @property
    def keyring(self) -> Keyring:
        assert self._keyring is not None, "StorageBackend.start() first"
        return self._keyring

    @property
    def audit(self) -> AuditLog:
        assert self._audit is not None, "StorageBackend.start() first"
        return self._audit

    def start(self, *, now: datetime, migrate_schema: bool = True) -> None:
        """Connect, migrate, start or reach S3, check it; stop again on any failure."""
        try:
            self._start(now=now, migrate_schema=migrate_schema)
        except BaseException:
            self.stop()
            raise

    def _start(self, *, now: datetime, migrate_schema: bool) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._engine = create_db_engine(settings.resolved_database_url)
        check_database(self._engine)
        if migrate_schema:
            migrate(self._engine)
        self._keyring = Keyring(self.master_key())
        with session_scope(self._engine) as session:
            self._keyring.check_master_key(session)
        self._audit = AuditLog(self._keyring.derive("audit-anchor"))
        self._store = self._open_store()
        self._store.ensure_bucket()
        check_backend(self._store)
        self._vault = Vault(
            engine=self._engine,
            store=self._store,
            keyring=self._keyring,
            audit=self._audit,
            spool_dir=settings.data_dir / "spool",
            part_size=settings.s3_part_size,
            concurrency=settings.s3_concurrency,
        )
        recovered = self._vault.recover(now=now)
        if recovered:
            log.info("uploaded %d recordings left in the spool", recovered)

    def stop(self) -> None:
        """Stop the embedded S3 and release connections; safe to call twice."""
        if self.embedded_s3 is not None:
            self.embedded_s3.stop()
            self.embedded_s3 = None
        if self._engine is not None:
            self._engine.dispose()

    def check_ready(self) -> None:
        """Raise a StorageError unless the database and S3 both answer."""
        check_database(self.engine)
        self.store.ping()

    def _open_store(self) -> ObjectStore:
        settings = self.settings
        credentials = s3_credentials(settings)
        if settings.s3_endpoint_url is None:
            self.embedded_s3 = EmbeddedS3(
                settings.data_dir / "s3",
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
            )
            self.embedded_s3.start()
            log.info("embedded SeaweedFS S3 at %s", self.embedded_s3.endpoint_url)
            config = replace(self.embedded_s3.config(settings.s3_bucket), region=settings.s3_region)
        else:
            config = S3Config(
                endpoint_url=settings.s3_endpoint_url,
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
                bucket=settings.s3_bucket,
                region=settings.s3_region,
            )
        return ObjectStore.from_config(config, max_pool_connections=settings.s3_concurrency * 4)

    def master_key(self) -> bytes:
        """The master key: from the settings, or generated under DATA_DIR (embedded only)."""
        settings = self.settings
        if settings.master_key is not None:
            return crypto.parse_master_key(settings.master_key.get_secret_value())
        if settings.database_url is not None:
            # Replicas sharing a database must share the key; a generated one would not be.
            raise ConfigError("CALLREC_MASTER_KEY must be set when CALLREC_DATABASE_URL is")
        path = settings.data_dir / "master.key"
        if not path.exists():
            _write_secret(path, crypto.format_master_key(crypto.generate_key()))
            log.info("generated a master key at %s", path)
        return crypto.parse_master_key(path.read_text().strip())


def s3_credentials(settings: Settings) -> S3Credentials:
    """The S3 credentials: from the settings, or generated once for the embedded S3."""
    secret = settings.s3_secret_access_key
    if settings.s3_access_key_id and secret is not None:
        return S3Credentials(settings.s3_access_key_id, secret.get_secret_value())
    if not settings.embedded_s3:
        raise ConfigError(
            "CALLREC_S3_ACCESS_KEY_ID and CALLREC_S3_SECRET_ACCESS_KEY must be set "
            "when CALLREC_S3_ENDPOINT_URL is"
        )
    path = settings.data_dir / "s3-credentials.json"
    if not path.exists():
        generated = {
            "access_key_id": "callrec" + secrets.token_hex(6),
            "secret_access_key": secrets.token_urlsafe(30),
        }
        _write_secret(path, json.dumps(generated, indent=2))
    stored = json.loads(path.read_text())
    return S3Credentials(stored["access_key_id"], stored["secret_access_key"])


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")

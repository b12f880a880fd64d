"""Assembles the storage layer from the settings: database, S3, keys, audit, vault.

``StorageBackend.start`` is where callrec refuses to start: an unreachable database, an
S3 endpoint that is down, refuses our credentials or lacks a feature, or a master key
that does not match the data all raise a StorageError with a one-line message.

With the embedded S3, a backend uses the one already running on its data dir (a
gateway's, found through storage.s3_endpoint) or starts its own. A serving backend
(``callrec serve``) publishes its endpoint for the commands run beside it, and keeps
its SeaweedFS running (storage.s3_supervisor).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine

from storage import audit_feed, crypto
from storage.audit import AuditLog
from storage.capabilities import check_backend
from storage.db import check_database, create_db_engine, migrate, session_scope
from storage.embedded_s3 import EmbeddedS3, is_loopback
from storage.errors import ConfigError, EmbeddedS3Error, StoreUnavailable
from storage.keyring import Keyring
from storage.objectstore import ObjectStore
from storage.s3_client import S3Config
from storage.s3_endpoint import PublishedEndpoint, running_endpoint
from storage.s3_supervisor import S3Supervisor
from storage.secret_files import create_once
from storage.settings import Settings
from storage.vault import Vault

log = logging.getLogger(__name__)

# How long a command waits for the endpoint of an embedded S3 that another process is
# starting on the same data dir (it answers in about a second).
_ENDPOINT_WAIT_S = 15.0


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str


class StorageBackend:
    """Owns the engine, the object store (and the embedded S3 if any) and the vault.

    ``serving`` is for a long-running gateway: the embedded S3 it starts is supervised
    (restarted after ``restart_delays[0]`` doubling up to ``restart_delays[1]`` seconds)
    and its endpoint published for the commands run beside it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        serving: bool = False,
        restart_delays: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.settings = settings
        self.embedded_s3: EmbeddedS3 | None = None
        self.s3_supervisor: S3Supervisor | None = None
        self._serving = serving
        self._restart_delays = restart_delays
        self._restart_hooks: list[Callable[[], None]] = []
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
        with self._engine.connect() as connection:
            # A broken chain does not stop the start: the gateway comes up not ready,
            # appends nothing, and says why (readiness, metrics, a CRITICAL line).
            self._audit.check_head(connection)
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
        if self._serving:  # the gateway's log: one line per domain event
            audit_feed.watch(self._engine, audit_feed.log_events)
        recovered = self._vault.recover(now=now)
        if recovered:
            log.info("uploaded %d recordings left in the spool", recovered)

    def on_s3_restarted(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (from the supervisor's thread) each time the embedded S3 is back."""
        self._restart_hooks.append(hook)

    def stop(self) -> None:
        """Stop the embedded S3 and release connections; safe to call twice."""
        if self.s3_supervisor is not None:
            self.s3_supervisor.stop()
            self.s3_supervisor = None
        if self.embedded_s3 is not None:
            self.embedded_s3.stop()
            self.embedded_s3 = None
        if self._engine is not None:
            self._engine.dispose()

    def check_ready(self) -> None:
        """Raise a StorageError unless the database and S3 both answer and the audit
        chain's head matches its anchor."""
        check_database(self.engine)
        with self.engine.connect() as connection:
            self.audit.require_head(connection)
        supervisor = self.s3_supervisor
        if supervisor is not None and (problem := supervisor.problem) is not None:
            raise StoreUnavailable(problem)
        self.store.ping()

    def _open_store(self) -> ObjectStore:
        settings = self.settings
        credentials = s3_credentials(settings)
        if settings.s3_endpoint_url is None:
            config = replace(self._embedded_config(credentials), region=settings.s3_region)
        else:
            config = S3Config(
                endpoint_url=settings.s3_endpoint_url,
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
                bucket=settings.s3_bucket,
                region=settings.s3_region,
            )
        return ObjectStore.from_config(config, max_pool_connections=settings.s3_concurrency * 4)

    def _embedded_config(self, credentials: S3Credentials) -> S3Config:
        """The running embedded S3 on our data dir, or one started here."""
        s3_dir = self.settings.data_dir / "s3"
        running = running_endpoint(s3_dir)
        if running is None:
            server = EmbeddedS3(
                s3_dir,
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
                publish=self._serving,
            )
            try:
                server.start()
            except EmbeddedS3Error as exc:
                if exc.code != "embedded_s3_in_use":
                    raise
                running = _await_endpoint(s3_dir, _ENDPOINT_WAIT_S)
                if running is None:
                    raise EmbeddedS3Error(
                        f"{exc} that publishes no endpoint (a command such as purge, or a "
                        "gateway that is still starting); try again once it is done",
                        code=exc.code,
                    ) from None
            else:
                self._own(server)
                return server.config(self.settings.s3_bucket)
        return self._attach(running, credentials)

    def _own(self, server: EmbeddedS3) -> None:
        self.embedded_s3 = server
        log.info("embedded SeaweedFS S3 at %s", server.endpoint_url)
        if self._serving:
            first, most = self._restart_delays
            self.s3_supervisor = S3Supervisor(
                server, first_delay=first, max_delay=most, on_restarted=self._s3_restarted
            )
            self.s3_supervisor.start()

    def _attach(self, running: PublishedEndpoint, credentials: S3Credentials) -> S3Config:
        if running.access_key_id != credentials.access_key_id:
            raise ConfigError(
                f"the embedded S3 of process {running.pid} uses other credentials than "
                f"{self.settings.data_dir / 's3-credentials.json'}"
            )
        log.info("using the embedded S3 of process %d at %s", running.pid, running.endpoint_url)
        return S3Config(
            endpoint_url=running.endpoint_url,
            access_key_id=credentials.access_key_id,
            secret_access_key=credentials.secret_access_key,
            bucket=self.settings.s3_bucket,
            sign_payload=not is_loopback(urlsplit(running.endpoint_url).hostname or ""),
        )

    def _s3_restarted(self) -> None:
        for hook in self._restart_hooks:
            hook()

    def master_key(self) -> bytes:
        """The master key: from the settings, or generated under DATA_DIR (embedded only)."""
        settings = self.settings
        if settings.master_key is not None:
            return crypto.parse_master_key(settings.master_key.get_secret_value())
        if settings.database_url is not None:
            # Replicas sharing a database must share the key; a generated one would not be.
            raise ConfigError("CALLREC_MASTER_KEY must be set when CALLREC_DATABASE_URL is")
        path = settings.data_dir / "master.key"
        if not path.exists() and create_once(path, crypto.format_master_key(crypto.generate_key())):
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
        create_once(path, json.dumps(generated, indent=2))
    stored = json.loads(path.read_text())
    return S3Credentials(stored["access_key_id"], stored["secret_access_key"])


def _await_endpoint(s3_dir: Path, timeout: float) -> PublishedEndpoint | None:
    """The endpoint another process publishes on ``s3_dir`` within ``timeout``, or None."""
    deadline = time.monotonic() + timeout
    while (running := running_endpoint(s3_dir)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return running

"""The ``callrec`` command line."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from storage.errors import CallrecError
from storage.settings import Settings, load_settings

app = typer.Typer(help="callrec: call-recording consent and retention.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
s3_app = typer.Typer(help="The embedded S3 (SeaweedFS).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(s3_app, name="s3")

out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return settings


def _now() -> datetime:
    return datetime.now(UTC)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Override CALLREC_HTTP_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Override CALLREC_HTTP_PORT.")] = None,
) -> None:
    """Run the gateway (HTTP API), with the embedded S3 unless an endpoint is set."""
    import uvicorn

    from recorder.app import create_app
    from storage.backend import StorageBackend

    settings = _settings()
    backend = StorageBackend(settings)
    backend.start(now=_now())
    try:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(backend),
                host=host or settings.http_host,
                port=settings.http_port if port is None else port,
                log_level=settings.log_level.lower(),
                lifespan="on",
            )
        )
        # uvicorn re-raises the signal that stopped it once it has shut down; both
        # Ctrl-C and SIGTERM end here as a clean exit, after the backend has stopped.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    finally:
        backend.stop()


def _exit_cleanly(*_: object) -> None:
    raise SystemExit(0)


@app.command()
def migrate() -> None:
    """Apply the database migrations."""
    from storage.db import check_database, create_db_engine
    from storage.db import migrate as apply_migrations

    settings = _settings()
    engine = create_db_engine(settings.resolved_database_url)
    check_database(engine)
    apply_migrations(engine)
    out.print(f"schema up to date at {engine.url.render_as_string(hide_password=True)}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit chain; exit 1 if any event was edited, inserted or removed."""
    from sqlmodel import Session

    from storage.audit import AuditLog
    from storage.backend import StorageBackend
    from storage.db import check_database, create_db_engine
    from storage.keyring import Keyring

    settings = _settings()
    engine = create_db_engine(settings.resolved_database_url)
    check_database(engine)
    keyring = Keyring(StorageBackend(settings).master_key())
    with Session(engine) as session:
        report = AuditLog(keyring.derive("audit-anchor")).verify(session)
    if report.ok:
        out.print(f"audit chain intact: {report.events} events")
        return
    err.print(f"audit chain BROKEN at event {report.first_bad}: {report.problem}")
    raise typer.Exit(1)


@s3_app.command("serve")
def s3_serve() -> None:
    """Run the embedded SeaweedFS S3 alone, until Ctrl-C."""
    from storage.backend import s3_credentials
    from storage.embedded_s3 import EmbeddedS3

    settings = _settings()
    credentials = s3_credentials(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedS3(
        settings.data_dir / "s3",
        access_key_id=credentials.access_key_id,
        secret_access_key=credentials.secret_access_key,
    ) as s3:
        out.print(f"S3 endpoint {s3.endpoint_url}")
        out.print(f"credentials in {settings.data_dir / 's3-credentials.json'}")
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


def main() -> None:
    """Entry point: a known error is one line on stderr and exit status 2."""
    try:
        app()
    except CallrecError as exc:
        err.print(f"callrec: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)

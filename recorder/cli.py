"""The ``callrec`` command line."""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from recorder.cli_common import (
    CLI_ACTOR,
    cli_settings,
    closed_with_command,
    err,
    out,
    release_engines,
    utc_now,
)
from recorder.cli_evidence import why
from recorder.cli_packs import evidence_app
from recorder.cli_tenants import clients_app, consent_app, keys_app
from storage.errors import CallrecError, ConfigError

app = typer.Typer(help="callrec: call-recording consent and retention.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
s3_app = typer.Typer(help="The embedded S3 (SeaweedFS).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(s3_app, name="s3")
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="keys")
app.add_typer(consent_app, name="consent")
app.add_typer(evidence_app, name="evidence")
app.command()(why)


@app.callback()
def _every_command(context: typer.Context) -> None:
    context.call_on_close(release_engines)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Override CALLREC_HTTP_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Override CALLREC_HTTP_PORT.")] = None,
) -> None:
    """Run the gateway (HTTP API), with the embedded S3 unless an endpoint is set."""
    import uvicorn

    from recorder.app import create_app
    from recorder.scheduler import start_jobs
    from storage.backend import StorageBackend

    settings = cli_settings()
    host = host or settings.http_host
    port = settings.http_port if port is None else port
    # Bound before anything starts, so a port in use costs one line, not a started S3.
    listener = _listen(host, port)
    backend = StorageBackend(settings, serving=True)
    try:
        backend.start(now=utc_now())
    except BaseException:
        listener.close()
        raise
    jobs = start_jobs(backend)
    try:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(backend),
                host=host,
                port=port,
                log_level=settings.log_level.lower(),
                lifespan="on",
            )
        )
        # uvicorn re-raises the signal that stopped it once it has shut down; both
        # Ctrl-C and SIGTERM end here as a clean exit, after the backend has stopped.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[listener])
    finally:
        listener.close()
        jobs.shutdown(wait=True)
        backend.stop()


def _listen(host: str, port: int) -> socket.socket:
    """The HTTP listening socket; ConfigError (one line, exit 2) if it cannot be had."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        # Made with its protocol named (socket.create_server leaves it 0): asyncio turns
        # Nagle's algorithm off only on accepted sockets that say TCP, and with it on, an
        # answer written in two pieces waited for the client's delayed ACK (~40 ms).
        listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(2048)
        except OSError:
            listener.close()
            raise
        return listener
    except OSError as exc:
        reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ConfigError(
            f"cannot listen on {host}:{port} (CALLREC_HTTP_HOST/CALLREC_HTTP_PORT): {reason}"
        ) from None


def _exit_cleanly(*_: object) -> None:
    raise SystemExit(0)


@app.command()
def purge(
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            help="Purge as if it were this time (UTC; default now); "
            "a time ahead only with --dry-run",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, change nothing")] = False,
) -> None:
    """Withdraw expired purposes and purge recordings with none left, with proofs."""
    from rich.progress import Progress

    import consent.models  # noqa: F401  (every table known, so foreign keys resolve)
    import retention.models  # noqa: F401
    from retention.purge import Purger
    from retention.sweeps import check_as_of, sweep_as_of
    from storage.backend import StorageBackend

    started = utc_now()
    when = started if as_of is None else as_of.replace(tzinfo=as_of.tzinfo or UTC)
    check_as_of(when, now=started, dry_run=dry_run)  # before anything starts
    backend = StorageBackend(cli_settings())
    backend.start(now=started)
    try:
        purger = Purger.for_backend(backend)
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("purging", total=None)
            report = sweep_as_of(
                purger,
                as_of=when,
                now=started,
                dry_run=dry_run,
                actor=CLI_ACTOR,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    finally:
        backend.stop()
    verb = "would" if dry_run else "did"
    out.print(
        f"as of {when:%Y-%m-%d %H:%M} UTC: {verb} expire {report.purposes_expired} purposes, "
        f"{verb} purge {report.purged} recordings; {report.held} kept under legal hold"
    )
    if report.failed:
        err.print(f"{len(report.failed)} failed, retried next sweep: {', '.join(report.failed)}")
        raise typer.Exit(1)


@app.command()
def report(
    format: Annotated[str, typer.Option(help="json, csv or html")] = "html",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout")] = None,
    client: Annotated[str | None, typer.Option(help="Only this client")] = None,
    period_days: Annotated[int, typer.Option(min=1, max=366)] = 30,
    verify_audit: Annotated[bool, typer.Option(help="Also walk the audit chain")] = True,
) -> None:
    """The retention report for compliance officers (an HTML dashboard by default)."""
    from sqlmodel import Session

    from recorder.cli_common import open_database
    from retention.report import to_json
    from retention.report_csv import to_csv
    from retention.report_html import to_html
    from retention.report_run import retention_report

    renderers = {"json": to_json, "csv": to_csv, "html": to_html}
    if format not in renderers:
        raise typer.BadParameter("json, csv or html", param_hint="--format")
    db = open_database(cli_settings())
    with Session(db.engine) as session:
        built = retention_report(
            session,
            audit=db.audit,
            now=utc_now(),
            client_id=client,
            period_days=period_days,
            verify_audit=verify_audit,
        )
    text = renderers[format](built)
    if out_file is None:
        sys.stdout.write(text)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text)
    out.print(f"retention report written to {out_file}")


def _duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h`` or ``2d``."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 30m, 1h or 2d")
    return timedelta(**{units[unit]: int(number)})


@app.command()
def reconcile(
    clean_older_than: Annotated[
        timedelta | None,
        typer.Option(
            "--clean-older-than",
            parser=_duration,
            metavar="DURATION",
            help="Abort unfinished uploads and delete stray versions older than this "
            "(e.g. 1h); never orphans or ghosts",
        ),
    ] = None,
) -> None:
    """Compare the catalog with the bucket; exit 1 on orphans, ghosts or leftovers."""
    import consent.models  # noqa: F401
    import retention.models  # noqa: F401
    from retention import reconcile as reconciliation
    from storage.backend import StorageBackend

    backend = StorageBackend(cli_settings())
    backend.start(now=utc_now())
    try:
        report = reconciliation.run(
            backend.engine,
            backend.store,
            audit=backend.audit,
            actor=CLI_ACTOR,
            now=utc_now(),
            clean_older_than=clean_older_than,
        )
    finally:
        backend.stop()
    out.print(
        f"{report.objects} objects, {report.recordings} stored recordings: "
        f"{len(report.orphans)} orphans, {len(report.ghosts)} ghosts, "
        f"{len(report.unfinished_uploads)} unfinished uploads, "
        f"{len(report.stray_versions)} stray versions"
    )
    for key in report.orphans:
        out.print(f"orphan object: {key}")
    for recording_id in report.ghosts:
        out.print(f"ghost recording (object missing): {recording_id}")
    for upload in report.unfinished_uploads:
        out.print(f"unfinished upload: {upload.key} since {upload.initiated:%Y-%m-%d %H:%M}")
    for stray in report.stray_versions:
        out.print(f"stray version: {stray.key} {stray.version_id} (of {stray.recording_id})")
    if clean_older_than is not None:
        out.print(
            f"cleaned: {len(report.aborted)} uploads aborted, {len(report.deleted)} versions "
            f"deleted; {report.leftovers} left (younger, current, or refused)"
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Apply the database migrations."""
    from storage.db import check_database, create_db_engine
    from storage.db import migrate as apply_migrations

    settings = cli_settings()
    engine = closed_with_command(create_db_engine(settings.resolved_database_url))
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

    settings = cli_settings()
    engine = closed_with_command(create_db_engine(settings.resolved_database_url))
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

    settings = cli_settings()
    credentials = s3_credentials(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedS3(
        settings.data_dir / "s3",
        access_key_id=credentials.access_key_id,
        secret_access_key=credentials.secret_access_key,
        publish=True,  # commands run beside it use it
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

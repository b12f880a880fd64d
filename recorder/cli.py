"""The ``callrec`` command line."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from storage.errors import CallrecError
from storage.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from storage.audit import AuditLog
    from storage.keyring import Keyring

app = typer.Typer(help="callrec: call-recording consent and retention.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
s3_app = typer.Typer(help="The embedded S3 (SeaweedFS).", no_args_is_help=True)
clients_app = typer.Typer(help="Clients (tenants).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
consent_app = typer.Typer(help="The consent ledger.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(s3_app, name="s3")
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="keys")
app.add_typer(consent_app, name="consent")

CLI_ACTOR = "cli"

# Piped output (scripts, logs) gets room for full ids instead of an 80-column cut.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _settings() -> Settings:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
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
    from recorder.scheduler import start_jobs
    from storage.backend import StorageBackend

    settings = _settings()
    backend = StorageBackend(settings)
    backend.start(now=_now())
    jobs = start_jobs(backend)
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
        jobs.shutdown(wait=True)
        backend.stop()


def _exit_cleanly(*_: object) -> None:
    raise SystemExit(0)


@dataclass
class Database:
    """The database side of callrec, for commands that need no S3."""

    engine: Engine
    keyring: Keyring
    audit: AuditLog


def _database(settings: Settings) -> Database:
    import consent.models  # noqa: F401  (every table known, so foreign keys resolve)
    from storage.audit import AuditLog
    from storage.backend import StorageBackend
    from storage.db import check_database, create_db_engine
    from storage.db import migrate as apply_migrations
    from storage.keyring import Keyring

    engine = create_db_engine(settings.resolved_database_url)
    check_database(engine)
    apply_migrations(engine)
    keyring = Keyring(StorageBackend(settings).master_key())
    return Database(engine, keyring, AuditLog(keyring.derive("audit-anchor")))


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def _fail_on_invalid(exc: ValidationError) -> NoReturn:
    from consent.errors import InvalidRequest

    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    raise InvalidRequest(problems) from None


@clients_app.command("create")
def clients_create(
    client_id: Annotated[str, typer.Argument(help="Slug, e.g. acme")],
    name: Annotated[str, typer.Option(help="Display name")],
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2, e.g. MA")],
) -> None:
    """Create a client."""
    from consent import clients
    from storage.db import session_scope

    db = _database(_settings())
    try:
        data = clients.ClientCreate(id=client_id, name=name, country=country)
    except ValidationError as exc:
        _fail_on_invalid(exc)
    with session_scope(db.engine) as session:
        row = clients.create_client(session, data=data, actor=CLI_ACTOR, audit=db.audit, now=_now())
        _print_json(clients.ClientPublic.model_validate(row, from_attributes=True).model_dump())


@clients_app.command("list")
def clients_list() -> None:
    """List clients."""
    from sqlmodel import Session

    from consent import clients

    db = _database(_settings())
    table = Table("id", "name", "country", "status", "created")
    with Session(db.engine) as session:
        for row in clients.list_clients(session):
            table.add_row(row.id, row.name, row.country, row.status, f"{row.created_at:%Y-%m-%d}")
    out.print(table)


@clients_app.command("offboard")
def clients_offboard(client_id: str) -> None:
    """Offboard a client: its key is destroyed and its recordings become unreadable."""
    from consent import clients
    from storage.db import session_scope

    db = _database(_settings())
    with session_scope(db.engine) as session:
        clients.offboard_client(
            session,
            client_id=client_id,
            actor=CLI_ACTOR,
            keyring=db.keyring,
            audit=db.audit,
            now=_now(),
        )
    out.print(f"client {client_id} offboarded; its key is destroyed")


@keys_app.command("issue")
def keys_issue(
    role: Annotated[str, typer.Argument(help="admin, compliance, client_admin or integrator")],
    client: Annotated[str | None, typer.Option(help="The client, for client roles")] = None,
) -> None:
    """Issue an API key; the key is printed once and never stored."""
    from consent import apikeys
    from consent.api import ApiContext
    from storage.db import session_scope

    db = _database(_settings())
    try:
        chosen = apikeys.Role(role)
    except ValueError:
        raise typer.BadParameter(f"unknown role {role!r}") from None
    with session_scope(db.engine) as session:
        if client is not None:
            from consent.clients import get_client

            get_client(session, client)
        issued = apikeys.issue_key(
            session,
            role=chosen,
            client_id=client,
            pepper=ApiContext.pepper_of(db.keyring),
            actor=CLI_ACTOR,
            audit=db.audit,
            now=_now(),
        )
    _print_json(issued.model_dump())


@keys_app.command("list")
def keys_list(client: Annotated[str | None, typer.Option()] = None) -> None:
    """List API keys (never their secrets)."""
    from sqlmodel import Session

    from consent import apikeys

    db = _database(_settings())
    table = Table("id", "role", "client", "created", "revoked")
    with Session(db.engine) as session:
        for row in apikeys.list_keys(session, client_id=client):
            revoked = f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else ""
            table.add_row(
                row.id, row.role, row.client_id or "", f"{row.created_at:%Y-%m-%d}", revoked
            )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key."""
    from consent import apikeys
    from storage.db import session_scope

    db = _database(_settings())
    with session_scope(db.engine) as session:
        apikeys.revoke_key(session, key_id=key_id, actor=CLI_ACTOR, audit=db.audit, now=_now())
    out.print(f"api key {key_id} revoked")


@consent_app.command("grant")
def consent_grant(
    client: str,
    purposes: Annotated[list[str], typer.Option("--purpose", help="Repeat for each purpose")],
    notice: Annotated[str, typer.Option(help="announcement or contract")],
    granted_by: Annotated[str, typer.Option(help="Who granted it, for the client")],
    evidence: Annotated[str, typer.Option(help="Document reference or hash")],
    notice_version: Annotated[str | None, typer.Option()] = None,
    notice_sha256: Annotated[str | None, typer.Option()] = None,
    valid_until: Annotated[datetime | None, typer.Option(help="ISO date, UTC")] = None,
) -> None:
    """Record a client's permission to record calls."""
    from consent import clients, ledger, registry
    from storage.db import session_scope

    db = _database(_settings())
    try:
        request = ledger.GrantRequest(
            purposes=purposes,
            notice=notice,
            granted_by=granted_by,
            evidence=evidence,
            notice_version=notice_version,
            notice_sha256=notice_sha256,
            valid_until=valid_until.replace(tzinfo=UTC) if valid_until else None,
        )
    except ValidationError as exc:
        _fail_on_invalid(exc)
    now = _now()
    with session_scope(db.engine) as session:
        clients.require_active(session, client)
        event = ledger.grant(
            session,
            client_id=client,
            request=request,
            known_purposes=registry.purposes(session),
            actor=CLI_ACTOR,
            audit=db.audit,
            now=now,
        )
        _print_json(ledger.to_public(event, None, now=now).model_dump())


@consent_app.command("revoke")
def consent_revoke(
    client: str,
    grant: str,
    reason: Annotated[str, typer.Option()],
    purge_existing: Annotated[bool, typer.Option(help="Also withdraw from recordings")] = False,
) -> None:
    """Revoke a grant: recording under it stops at once."""
    from consent import ledger
    from storage.db import session_scope

    db = _database(_settings())
    with session_scope(db.engine) as session:
        ledger.revoke(
            session,
            client_id=client,
            grant_id=grant,
            request=ledger.RevokeRequest(reason=reason, purge_existing=purge_existing),
            actor=CLI_ACTOR,
            audit=db.audit,
            now=_now(),
        )
    out.print(f"grant {grant} revoked")


@consent_app.command("list")
def consent_list(client: str) -> None:
    """A client's grants, derived from its ledger."""
    from sqlmodel import Session

    from consent import ledger
    from consent.clients import get_client

    db = _database(_settings())
    now = _now()
    table = Table("grant", "version", "status", "purposes", "notice", "valid until")
    with Session(db.engine) as session:
        get_client(session, client)
        for granted, revoked in ledger.current_grants(ledger.ledger(session, client)).values():
            public = ledger.to_public(granted, revoked, now=now)
            until = f"{public.valid_until:%Y-%m-%d}" if public.valid_until else ""
            table.add_row(
                public.id,
                str(public.version),
                public.status,
                ", ".join(public.purposes),
                public.notice,
                until,
            )
    out.print(table)


@app.command()
def purge(
    as_of: Annotated[
        datetime | None,
        typer.Option("--as-of", help="Purge as if it were this time (UTC); default now"),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, change nothing")] = False,
) -> None:
    """Withdraw expired purposes and purge recordings with none left, with proofs."""
    from rich.progress import Progress

    import consent.models  # noqa: F401  (every table known, so foreign keys resolve)
    import retention.models  # noqa: F401
    from retention.purge import Purger
    from storage.backend import StorageBackend

    now = _now()
    when = now if as_of is None else as_of.replace(tzinfo=as_of.tzinfo or UTC)
    if when < now - timedelta(minutes=1):
        from consent.errors import InvalidRequest

        raise InvalidRequest(
            f"--as-of {when:%Y-%m-%d %H:%M} is in the past; purges run as of now or later"
        )
    backend = StorageBackend(_settings())
    backend.start(now=now)
    try:
        purger = Purger(
            engine=backend.engine, store=backend.store, keyring=backend.keyring, audit=backend.audit
        )
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("purging", total=None)
            report = purger.sweep(
                as_of=when,
                now=now,
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
def reconcile() -> None:
    """Compare the catalog with the bucket; exit 1 on orphans or ghosts (never fixed)."""
    from sqlmodel import Session

    import consent.models  # noqa: F401
    import retention.models  # noqa: F401
    from retention import reconcile as reconciliation
    from storage.backend import StorageBackend
    from storage.db import session_scope

    backend = StorageBackend(_settings())
    backend.start(now=_now())
    try:
        with Session(backend.engine) as session:
            report = reconciliation.reconcile(session, backend.store, now=_now())
        with session_scope(backend.engine) as session:
            reconciliation.record(session, report, audit=backend.audit, actor=CLI_ACTOR)
    finally:
        backend.stop()
    out.print(
        f"{report.objects} objects, {report.recordings} stored recordings: "
        f"{len(report.orphans)} orphans, {len(report.ghosts)} ghosts"
    )
    for key in report.orphans:
        out.print(f"orphan object: {key}")
    for recording_id in report.ghosts:
        out.print(f"ghost recording (object missing): {recording_id}")
    if not report.ok:
        raise typer.Exit(1)


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

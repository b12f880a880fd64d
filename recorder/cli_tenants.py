"""``callrec clients``, ``callrec keys`` and ``callrec consent``: tenants from the shell.

Each command runs the same operation as its HTTP route (``consent.operations``,
``retention.withdrawal.revoke_consent``), as the actor ``cli``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from recorder.cli_common import (
    CLI_ACTOR,
    cli_settings,
    fail_on_invalid,
    open_database,
    out,
    print_json,
    utc_now,
)

clients_app = typer.Typer(help="Clients (tenants).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
consent_app = typer.Typer(help="The consent ledger.", no_args_is_help=True)


@clients_app.command("create")
def clients_create(
    client_id: Annotated[str, typer.Argument(help="Slug, e.g. acme")],
    name: Annotated[str, typer.Option(help="Display name")],
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2, e.g. MA")],
) -> None:
    """Create a client."""
    from consent import operations
    from consent.clients import ClientCreate
    from storage.db import session_scope

    try:
        data = ClientCreate(id=client_id, name=name, country=country)
    except ValidationError as exc:
        fail_on_invalid(exc)
    db = open_database(cli_settings())
    with session_scope(db.engine) as session:
        created = operations.create_client(
            session, data=data, actor=CLI_ACTOR, audit=db.audit, now=utc_now()
        )
    print_json(created.model_dump())


@clients_app.command("list")
def clients_list() -> None:
    """List clients."""
    from sqlmodel import Session

    from consent import operations

    db = open_database(cli_settings())
    table = Table("id", "name", "country", "status", "created")
    with Session(db.engine) as session:
        for row in operations.list_clients(session):
            table.add_row(row.id, row.name, row.country, row.status, f"{row.created_at:%Y-%m-%d}")
    out.print(table)


@clients_app.command("offboard")
def clients_offboard(client_id: str) -> None:
    """Offboard a client: its key is destroyed and its recordings become unreadable."""
    from consent import operations
    from storage.db import session_scope

    db = open_database(cli_settings())
    with session_scope(db.engine) as session:
        operations.offboard_client(
            session,
            client_id=client_id,
            actor=CLI_ACTOR,
            keyring=db.keyring,
            audit=db.audit,
            now=utc_now(),
        )
    out.print(f"client {client_id} offboarded; its key is destroyed")


@clients_app.command("siprec")
def clients_siprec(
    client_id: Annotated[str, typer.Argument(help="The client")],
    networks: Annotated[
        list[str] | None,
        typer.Option("--network", help="A CIDR SIPREC may come from; repeat for each"),
    ] = None,
    jurisdiction: Annotated[
        str | None, typer.Option(help="ISO 3166 code of its calls, e.g. MA or US-CA")
    ] = None,
    loopback_only: Annotated[
        bool, typer.Option("--loopback-only", help="Set no network: only loopback may send")
    ] = False,
    show: Annotated[
        bool, typer.Option("--show", help="Print the settings, change nothing")
    ] = False,
) -> None:
    """Set a client's SIPREC settings (replaced whole), or --show them."""
    from sqlmodel import Session

    from consent import operations
    from consent.siprec import SiprecSettingsRequest
    from storage.db import session_scope

    setting = bool(networks) or jurisdiction is not None or loopback_only
    if show == setting:
        raise typer.BadParameter(
            "give --show, or the settings: --network (repeatable), --jurisdiction, --loopback-only"
        )
    if loopback_only and networks:
        raise typer.BadParameter("--loopback-only sets no network: drop --network")
    db = open_database(cli_settings())
    if show:
        with Session(db.engine) as session:
            shown = operations.siprec_settings(session, client_id=client_id)
        print_json(shown.model_dump())
        return
    try:
        request = SiprecSettingsRequest(networks=networks or [], jurisdiction=jurisdiction)
    except ValidationError as exc:
        fail_on_invalid(exc)
    with session_scope(db.engine) as session:
        put = operations.put_siprec_settings(
            session,
            client_id=client_id,
            request=request,
            actor=CLI_ACTOR,
            audit=db.audit,
            now=utc_now(),
        )
    print_json(put.model_dump())


@keys_app.command("issue")
def keys_issue(
    role: Annotated[str, typer.Argument(help="admin, compliance, client_admin or integrator")],
    client: Annotated[str | None, typer.Option(help="The client, for client roles")] = None,
) -> None:
    """Issue an API key; the key is printed once and never stored."""
    from consent import operations
    from consent.api_context import ApiContext
    from consent.apikeys import Role
    from storage.db import session_scope

    try:
        chosen = Role(role)
    except ValueError:
        raise typer.BadParameter(f"unknown role {role!r}") from None
    db = open_database(cli_settings())
    with session_scope(db.engine) as session:
        issued = operations.issue_key(
            session,
            role=chosen,
            client_id=client,
            pepper=ApiContext.pepper_of(db.keyring),
            actor=CLI_ACTOR,
            audit=db.audit,
            now=utc_now(),
        )
    print_json(issued.model_dump())


@keys_app.command("list")
def keys_list(client: Annotated[str | None, typer.Option()] = None) -> None:
    """List API keys (never their secrets)."""
    from sqlmodel import Session

    from consent import operations

    db = open_database(cli_settings())
    table = Table("id", "role", "client", "created", "revoked")
    with Session(db.engine) as session:
        for row in operations.list_keys(session, client_id=client):
            revoked = f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else ""
            table.add_row(
                row.id, row.role, row.client_id or "", f"{row.created_at:%Y-%m-%d}", revoked
            )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key."""
    from consent import operations
    from storage.db import session_scope

    db = open_database(cli_settings())
    with session_scope(db.engine) as session:
        operations.revoke_key(
            session, key_id=key_id, actor=CLI_ACTOR, audit=db.audit, now=utc_now()
        )
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
    from consent import ledger, operations
    from storage.db import session_scope

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
        fail_on_invalid(exc)
    db = open_database(cli_settings())
    with session_scope(db.engine) as session:
        granted = operations.grant_consent(
            session,
            client_id=client,
            request=request,
            actor=CLI_ACTOR,
            audit=db.audit,
            now=utc_now(),
        )
    print_json(granted.model_dump())


@consent_app.command("revoke")
def consent_revoke(
    client: str,
    grant: str,
    reason: Annotated[str, typer.Option()],
    purge_existing: Annotated[bool, typer.Option(help="Also withdraw from recordings")] = False,
) -> None:
    """Revoke a grant: recording under it stops at once."""
    from consent import ledger
    from retention.withdrawal import revoke_consent
    from storage.db import session_scope

    try:
        request = ledger.RevokeRequest(reason=reason, purge_existing=purge_existing)
    except ValidationError as exc:
        fail_on_invalid(exc)
    settings = cli_settings()
    if not purge_existing:
        db = open_database(settings)
        with session_scope(db.engine) as session:
            revoke_consent(
                session,
                client_id=client,
                grant_id=grant,
                request=request,
                audit=db.audit,
                purger=None,
                actor=CLI_ACTOR,
                now=utc_now(),
            )
        out.print(f"grant {grant} revoked")
        return
    # Withdrawing purposes reaches the bucket: the object store is needed too.
    from retention.purge import Purger
    from storage.backend import StorageBackend

    started = utc_now()
    backend = StorageBackend(settings)
    backend.start(now=started)
    try:
        with session_scope(backend.engine) as session:
            revoke_consent(
                session,
                client_id=client,
                grant_id=grant,
                request=request,
                audit=backend.audit,
                purger=Purger.for_backend(backend),
                actor=CLI_ACTOR,
                now=started,
            )
    finally:
        backend.stop()
    out.print(f"grant {grant} revoked; its purposes withdrawn from existing recordings")


@consent_app.command("list")
def consent_list(client: str) -> None:
    """A client's grants, derived from its ledger."""
    from sqlmodel import Session

    from consent import operations

    db = open_database(cli_settings())
    table = Table("grant", "version", "status", "purposes", "notice", "valid until")
    with Session(db.engine) as session:
        found = operations.consent_ledger(session, client_id=client, now=utc_now())
    for public in found.grants:
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

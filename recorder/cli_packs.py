"""``callrec evidence pack`` and ``callrec evidence verify``: signed packs for inspections.

``pack`` reads the database directly (it works beside a running gateway and writes
nothing there) and signs with this installation's key (``storage.signing``). ``verify``
needs only the file: it works offline, on any machine; it compares the signer with the
key given by ``--public-key``, else with this installation's key when there is one.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from recorder.cli_common import cli_settings, err, open_database, out, utc_now

evidence_app = typer.Typer(help="Signed evidence packs for inspections.", no_args_is_help=True)


def _instant(text: str) -> datetime:
    """``2026-11-01`` (midnight UTC) or an ISO 8601 time; UTC unless it names a zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (2026-11-01) or ISO time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@evidence_app.command("pack")
def pack(
    out_file: Annotated[Path, typer.Option("--out", help="Write the pack (a zip) here")],
    start: Annotated[
        datetime,
        typer.Option(
            "--from", parser=_instant, metavar="DATE", help="Start of the period (included)"
        ),
    ],
    end: Annotated[
        datetime,
        typer.Option("--to", parser=_instant, metavar="DATE", help="End of the period (excluded)"),
    ],
    client: Annotated[str | None, typer.Option(help="Only this client (default: all)")] = None,
) -> None:
    """A signed evidence pack for a client and a period: report, ledger, decisions,
    deletion certificates, subject requests and the audit events, with their anchors."""
    from rich.progress import Progress
    from sqlmodel import Session

    from retention.evidence_pack import STEPS, build_pack
    from retention.pack_format import check_pack
    from storage.signing import signing_key

    settings = cli_settings()
    key = signing_key(settings)
    db = open_database(settings)
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("building the evidence pack", total=STEPS)
        with Session(db.engine) as session:
            data = build_pack(
                session,
                client_id=client,
                start=start,
                end=end,
                audit=db.audit,
                key=key,
                now=utc_now(),
                on_progress=lambda done, total: progress.update(task, completed=done),
            )
    _write_whole(out_file, data)
    check = check_pack(data, expected=key.public)
    out.print(
        f"evidence pack for {client or 'all clients'}, {start:%Y-%m-%d %H:%M} to "
        f"{end:%Y-%m-%d %H:%M} UTC: {check.files} files, {check.events} audit events "
        f"({check.withheld} withheld), signed by key {key.public.fingerprint}",
        markup=False,
        highlight=False,
    )
    out.print(f"written to {out_file} ({len(data)} bytes)", markup=False, highlight=False)


@evidence_app.command("verify")
def verify(
    pack_file: Annotated[
        Path,
        typer.Argument(
            help="The pack (a zip)", metavar="FILE", exists=True, dir_okay=False, readable=True
        ),
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            exists=True,
            dir_okay=False,
            readable=True,
            help="The key it must be signed with (PEM or base64, as GET "
            "/v1/evidence/signing-key gives it); default: this installation's key, if any",
        ),
    ] = None,
) -> None:
    """Check a pack's signature, every file's hash, and the audit chain inside it;
    exit 1 naming whatever was altered."""
    from retention.pack_format import check_pack
    from storage.signing import PublicKey, existing_signing_key, parse_public_key

    expected: PublicKey | None
    if public_key is not None:
        expected = parse_public_key(public_key.read_bytes().decode("ascii", "replace"))
        source = str(public_key)
    else:
        local = existing_signing_key(cli_settings())
        expected = local.public if local is not None else None
        source = "this installation's signing key"
    check = check_pack(pack_file.read_bytes(), expected=expected)
    if not check.ok:
        for problem in check.problems:
            err.print(f"{pack_file}: {problem}", markup=False, highlight=False)
        err.print(f"{pack_file}: evidence pack ALTERED or not trusted", markup=False)
        raise typer.Exit(1)
    params = check.parameters
    out.print(
        f"{pack_file}: intact. {check.files} files, {check.events} audit events "
        f"({check.withheld} withheld) chained from the anchor before the period to the one "
        f"after it; client {params.get('client_id') or 'all'}, from {params.get('from')} "
        f"to {params.get('to')}, made {check.created_at}",
        markup=False,
        highlight=False,
    )
    if expected is None:
        signer = (
            f"signed by key {check.signed_by} (not compared with any expected key: "
            "pass --public-key to know who signed it)"
        )
    else:
        signer = f"signed by key {check.signed_by}, the expected key ({source})"
    out.print(signer, markup=False, highlight=False)


def _write_whole(path: Path, data: bytes) -> None:
    """Write under a temporary name, then rename: no half-written pack is ever there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.part")
    staging.write_bytes(data)
    os.replace(staging, path)

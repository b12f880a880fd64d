"""HTTP routes of the retention layer: legal holds, data-subject requests, the report,
and revoking a grant (its ``purge_existing`` reaches existing recordings)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from consent import clients, ledger
from consent.api_auth import allow, allow_client
from consent.api_context import ApiContext, Context
from consent.apikeys import Principal, Role
from retention import holds, report_run, subjects, withdrawal
from retention.api_files import stream_scratch
from retention.errors import NotFound, StateConflict
from retention.purge import Purger
from retention.report import to_json
from retention.report_csv import to_csv
from retention.report_html import to_html
from storage import catalog
from storage.catalog import Recording, RecordingState
from storage.objectstore import ObjectStore
from storage.scratch import Scratch
from storage.vault import Vault

router = APIRouter(prefix="/v1", tags=["retention"])

Compliance = Annotated[Principal, Depends(allow(Role.COMPLIANCE))]


def get_store(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


Store = Annotated[ObjectStore, Depends(get_store)]


@router.post("/legal-holds", status_code=status.HTTP_201_CREATED)
def place_hold(
    body: holds.HoldRequest, context: Context, store: Store, principal: Compliance
) -> holds.HoldPublic:
    """Open a legal hold case over recordings, calls or a whole client."""
    with context.write() as session:
        return holds.place_hold(
            session,
            request=body,
            store=store,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )


class HoldList(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    items: list[holds.HoldPublic]
    """This page's items."""
    next: str | None
    """The cursor of the next page (none: this is the last)."""


@router.get("/legal-holds")
def list_holds(
    context: Context,
    principal: Compliance,
    client_id: str | None = None,
    state: Annotated[holds.HoldStatus | None, Query(alias="status")] = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> HoldList:
    """List legal hold cases: filter by the client they touch and by status."""
    with context.read() as session:
        items = holds.list_holds(
            session, client_id=client_id, status=state, after=cursor, limit=limit + 1
        )
    more = len(items) > limit
    return HoldList(items=items[:limit], next=items[limit - 1].id if more else None)


@router.get("/legal-holds/{hold_id}")
def get_hold(hold_id: str, context: Context, principal: Compliance) -> holds.HoldPublic:
    """One legal hold case, with what it covers."""
    with context.read() as session:
        return holds.get_hold(session, hold_id)


@router.delete("/legal-holds/{hold_id}")
def release_hold(
    hold_id: str, context: Context, store: Store, principal: Compliance
) -> holds.HoldPublic:
    """Release a case; what no other case covers may be purged again."""
    with context.write() as session:
        return holds.release_hold(
            session,
            hold_id=hold_id,
            store=store,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )


Requester = Annotated[Principal, Depends(allow(Role.CLIENT_ADMIN, Role.COMPLIANCE))]


def _purger(context: ApiContext, store: ObjectStore) -> Purger:
    return Purger(engine=context.engine, store=store, keyring=context.keyring, audit=context.audit)


@router.post("/clients/{client}/consents/{grant}/revoke", tags=["consent"])
def revoke_consent(
    client: str,
    grant: str,
    body: ledger.RevokeRequest,
    context: Context,
    store: Store,
    principal: Annotated[Principal, Depends(allow_client(Role.CLIENT_ADMIN))],
) -> ledger.GrantPublic:
    """Revoke a grant: recording under it stops at once; `purge_existing` also withdraws
    its purposes from existing recordings (purged when none is left and none is held)."""
    with context.write() as session:
        return withdrawal.revoke_consent(
            session,
            client_id=client,
            grant_id=grant,
            request=body,
            audit=context.audit,
            purger=_purger(context, store),
            actor=principal.actor,
            now=context.clock(),
        )


@router.post("/subject-requests", status_code=status.HTTP_201_CREATED)
def submit_subject_request(
    body: subjects.SubjectRequestCreate, context: Context, store: Store, principal: Requester
) -> subjects.SubjectRequestPublic:
    """A data-subject request by phone number: access, erasure, restriction or objection."""
    if principal.client_id not in (None, body.client_id):
        raise NotFound(f"no client {body.client_id}")
    with context.write() as session:
        clients.get_client(session, body.client_id)
        row = subjects.submit(
            session,
            request=body,
            phone_key=context.phone_key,
            purger=_purger(context, store),
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )
        return subjects.to_public(row)


@router.get("/subject-requests/{request_id}")
def get_subject_request(
    request_id: str, context: Context, principal: Requester
) -> subjects.SubjectRequestPublic:
    """A subject request and what was done."""
    with context.read() as session:
        row = subjects.get_request(session, request_id, client_id=principal.client_id)
        return subjects.to_public(row)


@router.get(
    "/subject-requests/{request_id}/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/zip": {}}},
        409: {"description": "Not an access request."},
        410: {"description": "A recording's key was destroyed (client offboarded)."},
    },
)
def export_subject_data(
    request_id: str, request: Request, context: Context, principal: Requester
) -> StreamingResponse:
    """The access export: each recording's audio and metadata, in one zip (audited)."""
    vault: Vault = request.app.state.vault
    with context.read() as session:
        row = subjects.get_request(session, request_id, client_id=principal.client_id)
        if row.kind != subjects.RequestKind.ACCESS:
            raise StateConflict(f"{request_id} is not an access request", code="not_access")
        recordings = subjects.recordings_of_number(
            session, client_id=row.client_id, phone_hash=row.phone_hash
        )
        # Each entry names its audio file, whose bytes hash to its ``audio_sha256``
        # (``size`` and ``sha256`` are the stored, encrypted object's).
        metadata = [
            {
                **recording.model_dump(mode="json", exclude={"object_key", "version_id", "state"}),
                "state": str(recording.state),
                "file": export_name(recording),
                "purposes": {
                    p: e.isoformat() for p, e in catalog.purposes_of(session, recording.id).items()
                },
            }
            for recording in recordings
        ]
    bundle = export_bundle(vault, recordings, metadata, request.app.state.scratch_dir)
    try:
        with context.write() as session:
            context.audit.append(
                session,
                kind="subject_request.exported",
                actor=principal.actor,
                now=context.clock(),
                client_id=row.client_id,
                subject=row.id,
                data={"recordings": [r.id for r in recordings]},
            )
    except BaseException:
        bundle.close()
        raise
    return stream_scratch(bundle, media_type="application/zip", filename=f"{row.id}.zip")


def export_name(recording: Recording) -> str | None:
    """The recording's audio file in an access export; None if it has no audio left."""
    if recording.state not in (RecordingState.STORED, RecordingState.RESTRICTED):
        return None
    return f"{recording.id}.{recording.container}"


def export_bundle(
    vault: Vault, recordings: list[Recording], metadata: list[dict[str, object]], scratch: Path
) -> Scratch:
    """Build the zip: ``metadata.json`` and one audio file per recording still readable.

    It is built in an encrypted scratch (audio never lies on disk in the clear) and
    written as a stream, so each entry's sizes follow its data.
    """
    bundle = Scratch(scratch)
    try:
        with zipfile.ZipFile(bundle, "w") as archive:
            archive.writestr("metadata.json", json.dumps(metadata, indent=2))
            for recording in recordings:
                name = export_name(recording)
                if name is None:
                    continue
                with archive.open(name, "w") as entry:
                    vault.read(recording, entry)
        bundle.seal()
    except BaseException:
        bundle.close()
        raise
    return bundle


_MEDIA = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
}


@router.get("/reports/retention", responses={200: {"content": {m: {} for m in _MEDIA.values()}}})
def retention_report(
    context: Context,
    principal: Requester,
    format: Literal["json", "csv", "html"] = "json",
    client_id: str | None = None,
    period_days: Annotated[int, Query(ge=1, le=366)] = 30,
    verify_audit: Annotated[
        bool, Query(description="Walk the audit chain (false: skip it on a large log)")
    ] = True,
) -> Response:
    """The retention report: policy, inventory, forecast, purges, overdue, holds, requests,
    the last reconciliation and the audit chain."""
    if principal.client_id is not None:
        if client_id not in (None, principal.client_id):
            raise NotFound(f"no client {client_id}")
        client_id = principal.client_id
    with context.read() as session:
        report = report_run.retention_report(
            session,
            audit=context.audit,
            now=context.clock(),
            client_id=client_id,
            period_days=period_days,
            verify_audit=verify_audit,
        )
    body = {"json": to_json, "csv": to_csv, "html": to_html}[format](report)
    headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}
    if format == "csv":
        headers["Content-Disposition"] = 'attachment; filename="retention-report.csv"'
    return Response(body, media_type=_MEDIA[format], headers=headers)

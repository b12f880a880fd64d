"""Recordings over HTTP: the platform's upload, and reading back (every read audited)."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from sqlmodel import Session

from consent import calls
from consent.admission import admit_audio
from consent.api_auth import Integrator, allow, tenant_of
from consent.api_context import ApiContext, Context
from consent.apikeys import Principal, Role
from consent.errors import (
    NotFound,
    PayloadTooLarge,
    StateConflict,
)
from recorder import audio
from recorder._exceptions import AudioTooLong, UnsupportedAudio
from recorder.capture.codecs import MEDIA_TYPES, OPUS, media_type
from retention.api_files import stream_scratch
from retention.evidence import AUDIO_ROUTE
from retention.holds import held_from_the_start
from storage import catalog
from storage.catalog import Recording, RecordingState
from storage.scratch import Scratch
from storage.vault import RecordingDraft, Vault

router = APIRouter(prefix="/v1", tags=["recordings"])

Reader = Annotated[Principal, Depends(allow(Role.CLIENT_ADMIN, Role.COMPLIANCE))]


class RecordingPublic(BaseModel):
    """A recording's metadata (never its parties' numbers)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    """The recording's id."""
    client_id: str
    """The client it belongs to."""
    call_id: str
    """The platform's call id."""
    decision_id: str | None
    """The decision that allowed it."""
    channel: str
    """How the audio came: `upload`, `whip` or `siprec`."""
    codec: str
    """The stored audio's codec (`opus`, …)."""
    container: str
    """The stored audio's container (`ogg`, …)."""
    channels: int
    """Audio channels: one per party."""
    state: str
    """`recording`, `stored`, `restricted`, `purged` or `failed`."""
    purposes: dict[str, datetime]
    """Each live purpose and when it expires."""
    legal_hold: bool
    """Whether a legal hold keeps it from being purged."""
    duration_s: float | None
    """Length of the audio in seconds."""
    size: int | None
    """Size in bytes of the stored (encrypted) object."""
    sha256: str | None
    """SHA-256 of the stored (encrypted) object."""
    audio_size: int | None
    """Size in bytes of the audio as served (decrypted)."""
    audio_sha256: str | None
    """SHA-256 of the audio as served: a downloaded file hashes to it."""
    started_at: datetime | None
    """When the audio started."""
    ended_at: datetime | None
    """When the audio ended."""
    recovered: bool
    """Whether the audio was recovered after a crash cut a live capture: kept up to the
    last whole encrypted chunk (64 KiB) spooled before the crash; what came after is lost."""
    created_at: datetime
    """When callrec created the recording."""


class RecordingList(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    items: list[RecordingPublic]
    """This page's items."""
    next: str | None
    """The cursor of the next page (none: this is the last)."""


def to_public(session: Session, recording: Recording) -> RecordingPublic:
    return RecordingPublic(
        **recording.model_dump(include=set(RecordingPublic.model_fields) - {"purposes", "state"}),
        state=recording.state,
        purposes=catalog.purposes_of(session, recording.id),
    )


def get_vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


VaultDep = Annotated[Vault, Depends(get_vault)]


def _admit_audio(
    context: ApiContext, principal: Principal, client_id: str, call_id: str
) -> calls.CallDecision:
    with context.write() as session:
        admission = admit_audio(
            session,
            client_id=client_id,
            call_id=call_id,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )
    return admission.require()  # after the commit: a lapsed decision is kept


@router.put(
    "/calls/{call_id}/recording",
    status_code=status.HTTP_201_CREATED,
    responses={202: {"description": "Accepted; stored once S3 is back.", "model": RecordingPublic}},
    # The body is read as a stream, not parsed: its media types are documented here.
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The audio as recorded: WAV, MP3, Ogg (Vorbis or Opus) or FLAC.",
            "content": {
                media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in audio.SUPPORTED_TYPES
            },
        }
    },
)
async def upload_recording(
    call_id: str,
    request: Request,
    response: Response,
    context: Context,
    vault: VaultDep,
    principal: Integrator,
) -> RecordingPublic:
    """Upload audio the platform recorded (wav, mp3, ogg, flac); stored as Ogg/Opus."""
    client_id = tenant_of(principal)
    content_type = request.headers.get("content-type", "")
    limit: int = request.app.state.upload_max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload is over the {limit}-byte limit")
    call = await run_in_threadpool(_admit_audio, context, principal, client_id, call_id)
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in audio.SUPPORTED_TYPES:
        accepted = ", ".join(sorted(audio.SUPPORTED_TYPES))
        raise UnsupportedAudio(f"content type {media_type or '(none)'} is not one of {accepted}")
    # The body is encrypted as it arrives, under a key only this request holds: no
    # audio is ever on disk in the clear, not even after a crash.
    with Scratch(request.app.state.scratch_dir) as body:
        size = 0
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise PayloadTooLarge(f"the upload is over the {limit}-byte limit")
            body.write(piece)
        body.seal()
        max_duration_s: int = request.app.state.upload_max_duration_s
        recording = await run_in_threadpool(
            _store_upload, context, vault, call, body, content_type, max_duration_s
        )
    if recording.state != RecordingState.STORED:
        response.status_code = status.HTTP_202_ACCEPTED
    with context.read() as session:
        return to_public(session, recording)


def _store_upload(
    context: ApiContext,
    vault: Vault,
    call: calls.CallDecision,
    body: Scratch,
    content_type: str,
    max_duration_s: float,
) -> Recording:
    # An AudioError is answered 415, 422, or 413 for a container that declares more
    # than the limit: refused before anything is catalogued. The body is opened once:
    # the probe's decoding carries on into the encoding.
    with audio.open_upload(body, content_type, max_duration_s=max_duration_s) as upload:
        now = context.clock()
        draft = RecordingDraft(
            client_id=call.client_id,
            call_id=call.call_id,
            decision_id=call.id,
            channel="upload",
            codec="opus",
            container=OPUS.container,  # uploads are normalized to Ogg/Opus
            channels=upload.info.channels,
            purposes=call.purpose_expiries(),
            started_at=now,
        )
        # The limit holds while decoding too: a container may declare nothing, or lie.
        encoding = upload.to_ogg_opus(max_duration_s=max_duration_s)
        # Another upload for this call may have got in since the check: the database
        # decides (RecordingExists, 409). Holds are asked in the same transaction.
        held = partial(held_from_the_start, client_id=call.client_id, call_id=call.call_id)
        writer = vault.begin(draft, now=now, is_held=held)
        try:
            for piece in encoding:
                writer.write(piece)
        except audio.AudioError as exc:
            reason = "upload too long" if isinstance(exc, AudioTooLong) else "invalid audio"
            vault.discard(writer, reason=f"{reason}: {exc}", now=context.clock())
            raise
        except BaseException:
            vault.discard(writer, reason="upload failed", now=context.clock())
            raise
    return vault.finish(writer, now=context.clock(), duration_s=encoding.duration_s)


@router.get("/recordings")
def list_recordings(
    context: Context,
    principal: Reader,
    client_id: str | None = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RecordingList:
    """List recordings: a client's own, or any for compliance (filter with `client_id`)."""
    if principal.client_id is not None:
        if client_id not in (None, principal.client_id):
            raise NotFound(f"no client {client_id}")
        client_id = principal.client_id
    with context.read() as session:
        rows = catalog.list_recordings(session, client_id=client_id, after=cursor, limit=limit)
        items = [to_public(session, r) for r in rows]
    return RecordingList(items=items, next=items[-1].id if len(items) == limit else None)


def _visible(session: Session, principal: Principal, recording_id: str) -> Recording:
    recording = catalog.get_recording(session, recording_id, client_id=principal.client_id)
    if recording is None:
        raise NotFound(f"no recording {recording_id}", code="unknown_recording")
    return recording


@router.get("/recordings/{recording_id}")
def get_recording(recording_id: str, context: Context, principal: Reader) -> RecordingPublic:
    """One recording's metadata."""
    with context.read() as session:
        return to_public(session, _visible(session, principal, recording_id))


@router.get(
    "/recordings/{recording_id}/audio",
    response_class=StreamingResponse,
    responses={
        200: {"content": {served: {} for served in MEDIA_TYPES.values()}},
        409: {"description": "The recording is restricted, or not stored (yet, or any more)."},
        410: {"description": "The recording's key was destroyed (client offboarded)."},
    },
)
def get_audio(
    recording_id: str, request: Request, context: Context, vault: VaultDep, principal: Reader
) -> StreamingResponse:
    """The decrypted audio; every read is written to the audit log."""
    with context.read() as session:
        recording = _visible(session, principal, recording_id)
    if recording.state == RecordingState.RESTRICTED:
        raise StateConflict(f"recording {recording_id} is restricted", code="recording_restricted")
    if recording.state != RecordingState.STORED:
        raise StateConflict(f"recording {recording_id} is {recording.state}", code="not_stored")
    # The whole object is authenticated before the first byte is served: a tampered or
    # cut object fails here, with an error, instead of in the middle of the audio. The
    # plaintext waits in an encrypted scratch meanwhile, never in the clear on disk.
    scratch = Scratch(request.app.state.scratch_dir)
    try:
        vault.read(recording, scratch)
        scratch.seal()
        with context.write() as session:
            context.audit.append(
                session,
                kind="recording.accessed",
                actor=principal.actor,
                now=context.clock(),
                client_id=recording.client_id,
                subject=recording.id,
                data={"role": principal.role, "sha256": recording.sha256, "route": AUDIO_ROUTE},
            )
    except BaseException:
        scratch.close()
        raise
    return stream_scratch(
        scratch,
        media_type=media_type(recording.container),
        filename=f"{recording.id}.{recording.container}",
    )

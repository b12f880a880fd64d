"""Legal holds: cases that keep recordings from being purged.

A case covers recordings by id, by call, or a whole client (recordings made later
included). A recording stays held until every case covering it is released. Holds
never shorten retention and never extend a purpose: they only block the purge.
``until`` is the case's review date; a hold ends only when it is released.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, col, select

from retention.errors import InvalidRequest, NotFound, StateConflict
from storage import catalog
from storage.audit import AuditLog
from storage.catalog import Recording
from storage.ids import new_id
from storage.objectstore import ObjectStore
from storage.types import UTCDateTime


class LegalHold(SQLModel, table=True):
    __tablename__ = "legal_holds"

    id: str = SQLField(primary_key=True, max_length=40)
    reason: str = SQLField(sa_type=sa.Text)
    created_by: str = SQLField(max_length=100)
    created_at: datetime = SQLField(sa_type=UTCDateTime)
    until: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    released_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    released_by: str | None = SQLField(default=None, max_length=100)


class LegalHoldTarget(SQLModel, table=True):
    """What one case covers: a recording, a call or a client."""

    __tablename__ = "legal_hold_targets"

    hold_id: str = SQLField(primary_key=True, foreign_key="legal_holds.id", max_length=40)
    kind: str = SQLField(primary_key=True, max_length=20)  # recording, call, client
    target: str = SQLField(primary_key=True, max_length=200, index=True)


class HoldRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, description="Why: the case")
    recording_ids: list[str] = Field(default_factory=list, description="Recordings held")
    call_ids: list[str] = Field(
        default_factory=list, description="Calls whose recordings are held, later ones too"
    )
    client_id: str | None = Field(
        default=None, description="A client all of whose recordings are held, later ones too"
    )
    until: datetime | None = Field(
        default=None,
        description="Review date (with a time zone, not past); the hold ends only on release",
    )

    @model_validator(mode="after")
    def _something(self) -> HoldRequest:
        if not (self.recording_ids or self.call_ids or self.client_id):
            raise ValueError("a hold covers recording_ids, call_ids or a client_id")
        if self.until is not None and self.until.tzinfo is None:
            raise ValueError("until needs a time zone")
        return self


class HoldStatus(StrEnum):
    OPEN = "open"
    RELEASED = "released"


class HoldPublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    """The case's id."""
    reason: str
    """Why: the case."""
    created_by: str
    """Who opened it (the key's actor)."""
    created_at: datetime
    """When it was opened."""
    until: datetime | None
    """Review date; the hold ends only on release."""
    status: HoldStatus
    """`open` or `released`."""
    released_at: datetime | None
    """When it was released."""
    released_by: str | None
    """Who released it."""
    recording_ids: list[str]
    """Recordings it names."""
    call_ids: list[str]
    """Calls it names (their recordings, later ones too)."""
    client_id: str | None
    """A client it covers whole (later recordings too)."""
    recordings_held: int
    """Recordings it holds now."""


def targets_naming(recording: Recording) -> sa.ColumnElement[bool]:
    """Hold targets that name ``recording``: the recording itself, its call or its client."""
    return sa.or_(
        sa.and_(
            col(LegalHoldTarget.kind) == "recording",
            col(LegalHoldTarget.target) == recording.id,
        ),
        sa.and_(
            col(LegalHoldTarget.kind) == "call",
            col(LegalHoldTarget.target) == recording.call_id,
        ),
        sa.and_(
            col(LegalHoldTarget.kind) == "client",
            col(LegalHoldTarget.target) == recording.client_id,
        ),
    )


def holds_covering(session: Session, recording: Recording) -> list[str]:
    """Ids of the active cases that hold ``recording``."""
    query = (
        select(LegalHoldTarget.hold_id)
        .join(LegalHold, LegalHold.id == LegalHoldTarget.hold_id)  # type: ignore[arg-type]
        .where(
            LegalHold.released_at.is_(None),  # type: ignore[union-attr]
            targets_naming(recording),
        )
        .distinct()
    )
    return sorted(session.exec(query))


def held_among(session: Session, recordings: Iterable[Recording]) -> set[str]:
    """Ids of those ``recordings`` that an active case holds, in one query.

    Active cases are few, so their targets are read once and matched here.
    """
    targets = _active_targets(session)
    return {
        r.id
        for r in recordings
        if targets & {("recording", r.id), ("call", r.call_id), ("client", r.client_id)}
    }


def held_from_the_start(session: Session, *, client_id: str, call_id: str) -> bool:
    """Whether a recording of this call, not stored yet, is held the moment it is.

    A case on the client covers recordings made later, and a case on a call covers
    that call's recording whenever it arrives.
    """
    return bool(_active_targets(session) & {("client", client_id), ("call", call_id)})


def _active_targets(session: Session) -> set[tuple[str, str]]:
    return set(
        session.exec(
            select(LegalHoldTarget.kind, LegalHoldTarget.target)
            .join(LegalHold, LegalHold.id == LegalHoldTarget.hold_id)  # type: ignore[arg-type]
            .where(LegalHold.released_at.is_(None))  # type: ignore[union-attr]
        )
    )


def _covered(session: Session, request: HoldRequest) -> list[Recording]:
    return list(session.exec(select(Recording).where(_covering(request))))


def _covering(request: HoldRequest) -> sa.ColumnElement[bool]:
    conditions = []
    if request.recording_ids:
        conditions.append(Recording.id.in_(request.recording_ids))  # type: ignore[attr-defined]
    if request.call_ids:
        conditions.append(Recording.call_id.in_(request.call_ids))  # type: ignore[attr-defined]
    if request.client_id:
        conditions.append(Recording.client_id == request.client_id)
    return sa.or_(*conditions)


def place_hold(
    session: Session,
    *,
    request: HoldRequest,
    store: ObjectStore,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> HoldPublic:
    """Open a case; unknown recording, call or client ids are refused, nothing is held."""
    from consent.calls import CallDecision
    from consent.clients import Client

    if request.until is not None and request.until <= now:
        # A review date already past is a typo, not a case: nothing is written.
        raise InvalidRequest(
            f"until {request.until.isoformat()} is in the past", code="until_in_past"
        )
    # Recordings being stored wait for this case, or this case waits for them.
    catalog.order_with_holds(session, exclusive=True)
    known = set(session.exec(select(Recording.id).where(Recording.id.in_(request.recording_ids))))  # type: ignore[attr-defined]
    missing = sorted(set(request.recording_ids) - known)
    if missing:
        raise NotFound(f"unknown recordings: {', '.join(missing)}", code="unknown_recording")
    calls = set(
        session.exec(select(CallDecision.call_id).where(CallDecision.call_id.in_(request.call_ids)))  # type: ignore[attr-defined]
    )
    missing = sorted(set(request.call_ids) - calls)
    if missing:
        raise NotFound(f"unknown calls: {', '.join(missing)}", code="unknown_call")
    if request.client_id and session.get(Client, request.client_id) is None:
        raise NotFound(f"no client {request.client_id}")
    audit.require_head(session)  # before S3 tags change for a case that could not be audited
    hold = LegalHold(
        id=new_id("hold", now),
        reason=request.reason,
        created_by=actor,
        created_at=now,
        until=request.until,
    )
    session.add(hold)
    session.flush()
    targets = [("recording", r) for r in request.recording_ids]
    targets += [("call", c) for c in request.call_ids]
    targets += [("client", request.client_id)] if request.client_id else []
    for kind, target in dict.fromkeys(targets):
        session.add(LegalHoldTarget(hold_id=hold.id, kind=kind, target=target))
    session.flush()
    recordings = _covered(session, request)
    _refresh(session, recordings, store, now)
    audit.append(
        session,
        kind="legal_hold.placed",
        actor=actor,
        now=now,
        client_id=request.client_id,
        subject=hold.id,
        data={
            "reason": request.reason,
            "targets": targets,
            "recordings": len(recordings),
            "clients": _clients(session, request, recordings),
        },
    )
    return _public(hold, request, len(recordings))


def release_hold(
    session: Session,
    *,
    hold_id: str,
    store: ObjectStore,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> HoldPublic:
    """Release a case; recordings no other case covers may be purged again."""
    catalog.order_with_holds(session, exclusive=True)
    hold = session.get(LegalHold, hold_id)
    if hold is None:
        raise NotFound(f"no legal hold {hold_id}")
    if hold.released_at is not None:
        raise StateConflict(f"legal hold {hold_id} is already released", code="already_released")
    audit.require_head(session)
    hold.released_at, hold.released_by = now, actor
    session.add(hold)
    session.flush()
    request = _request_of(session, hold)
    recordings = _covered(session, request)
    _refresh(session, recordings, store, now)
    audit.append(
        session,
        kind="legal_hold.released",
        actor=actor,
        now=now,
        client_id=request.client_id,
        subject=hold.id,
        data={"recordings": len(recordings), "clients": _clients(session, request, recordings)},
    )
    return _public(hold, request, len(recordings))


def _clients(
    session: Session, request: HoldRequest, recordings: Iterable[Recording]
) -> dict[str, int]:
    """Each client the case touches, with how many of its recordings it covers: each
    client's webhook tells it of its own (storage.webhook_events)."""
    from consent.calls import CallDecision

    counts = Counter(r.client_id for r in recordings)
    touched = {request.client_id} if request.client_id else set()
    if request.call_ids:
        touched |= set(
            session.exec(
                select(CallDecision.client_id).where(
                    col(CallDecision.call_id).in_(request.call_ids)
                )
            )
        )
    return {client: counts.get(client, 0) for client in sorted(touched | set(counts))}


def _refresh(
    session: Session, recordings: Iterable[Recording], store: ObjectStore, now: datetime
) -> None:
    """Bring each recording's flag and tags in line with the active cases.

    A recording still being captured has no object yet: its flag is set, and the
    vault tags the object from the flag when it stores it.
    """
    State = catalog.RecordingState
    for recording in recordings:
        held = bool(holds_covering(session, recording))
        if held == recording.legal_hold or recording.state in (State.PURGED, State.FAILED):
            continue
        if recording.state != State.RECORDING:
            purposes = catalog.purposes_of(session, recording.id)
            tags = catalog.object_tags(recording.client_id, purposes, legal_hold=held)
            store.put_tags(recording.object_key, tags)
        recording.legal_hold, recording.updated_at = held, now
        session.add(recording)
    session.flush()


def list_holds(
    session: Session,
    *,
    client_id: str | None = None,
    status: HoldStatus | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[HoldPublic]:
    """Cases in id (creation) order after the cursor ``after``.

    ``client_id`` selects the cases that cover anything of that client: the whole
    client, one of its calls or one of its recordings.
    """
    from consent.calls import CallDecision

    query = select(LegalHold).order_by(LegalHold.id).limit(limit)
    if status is not None:
        released = LegalHold.released_at.is_not(None)  # type: ignore[union-attr]
        query = query.where(released if status == HoldStatus.RELEASED else ~released)
    if after is not None:
        query = query.where(LegalHold.id > after)
    if client_id is not None:
        kind, target = col(LegalHoldTarget.kind), col(LegalHoldTarget.target)
        touching = sa.or_(
            sa.and_(kind == "client", target == client_id),
            sa.and_(
                kind == "call",
                target.in_(select(CallDecision.call_id).where(CallDecision.client_id == client_id)),
            ),
            sa.and_(
                kind == "recording",
                target.in_(select(Recording.id).where(Recording.client_id == client_id)),
            ),
        )
        query = query.where(col(LegalHold.id).in_(select(LegalHoldTarget.hold_id).where(touching)))
    rows = list(session.exec(query))
    targets = _targets_of(session, [hold.id for hold in rows])
    return [_described(session, hold, targets.get(hold.id, [])) for hold in rows]


def get_hold(session: Session, hold_id: str) -> HoldPublic:
    """One case with what it covers; an unknown id is NotFound."""
    hold = session.get(LegalHold, hold_id)
    if hold is None:
        raise NotFound(f"no legal hold {hold_id}", code="unknown_hold")
    return _described(session, hold, _targets_of(session, [hold.id]).get(hold.id, []))


def _targets_of(session: Session, hold_ids: Sequence[str]) -> dict[str, list[LegalHoldTarget]]:
    by_hold: dict[str, list[LegalHoldTarget]] = {}
    if hold_ids:
        query = select(LegalHoldTarget).where(col(LegalHoldTarget.hold_id).in_(hold_ids))
        for target in session.exec(query.order_by(col(LegalHoldTarget.target))):
            by_hold.setdefault(target.hold_id, []).append(target)
    return by_hold


def _described(session: Session, hold: LegalHold, targets: list[LegalHoldTarget]) -> HoldPublic:
    request = _request_from(hold, targets)
    count = session.exec(
        select(sa.func.count()).select_from(Recording).where(_covering(request))
    ).one()
    return _public(hold, request, count)


def _request_of(session: Session, hold: LegalHold) -> HoldRequest:
    targets = list(session.exec(select(LegalHoldTarget).where(LegalHoldTarget.hold_id == hold.id)))
    return _request_from(hold, targets)


def _request_from(hold: LegalHold, targets: list[LegalHoldTarget]) -> HoldRequest:
    return HoldRequest(
        reason=hold.reason,
        recording_ids=[t.target for t in targets if t.kind == "recording"],
        call_ids=[t.target for t in targets if t.kind == "call"],
        client_id=next((t.target for t in targets if t.kind == "client"), None),
    )


def _public(hold: LegalHold, request: HoldRequest, count: int) -> HoldPublic:
    return HoldPublic(
        id=hold.id,
        reason=hold.reason,
        created_by=hold.created_by,
        created_at=hold.created_at,
        until=hold.until,
        status=HoldStatus.OPEN if hold.released_at is None else HoldStatus.RELEASED,
        released_at=hold.released_at,
        released_by=hold.released_by,
        recording_ids=request.recording_ids,
        call_ids=request.call_ids,
        client_id=request.client_id,
        recordings_held=count,
    )


__all__ = [
    "HoldPublic",
    "HoldRequest",
    "HoldStatus",
    "LegalHold",
    "LegalHoldTarget",
    "get_hold",
    "holds_covering",
    "list_holds",
]

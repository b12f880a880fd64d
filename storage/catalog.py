"""The recordings catalog: what was stored, where, for which purposes, in which state.

The catalog and the object tags always agree (DESIGN.md, Object store layout); the
functions here change rows only and never commit — the caller owns the transaction.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from storage.errors import InvalidTransition
from storage.types import UTCDateTime

CLIENT_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class RecordingState(StrEnum):
    RECORDING = "recording"  # audio is being captured or waits for its upload
    STORED = "stored"
    RESTRICTED = "restricted"  # kept, but neither served nor processed
    PURGED = "purged"
    FAILED = "failed"


_NEXT_STATES: Mapping[RecordingState, frozenset[RecordingState]] = {
    RecordingState.RECORDING: frozenset({RecordingState.STORED, RecordingState.FAILED}),
    RecordingState.STORED: frozenset({RecordingState.RESTRICTED, RecordingState.PURGED}),
    RecordingState.RESTRICTED: frozenset({RecordingState.STORED, RecordingState.PURGED}),
    RecordingState.FAILED: frozenset({RecordingState.PURGED}),
    RecordingState.PURGED: frozenset(),
}


# Channels whose audio arrives live: a crash cuts the capture, and what was spooled is
# all there will ever be (an upload can be sent again by the platform).
LIVE_CHANNELS = frozenset({"whip", "siprec"})


class Recording(SQLModel, table=True):
    """One stored call recording; its purposes live in ``RecordingPurpose`` rows."""

    __tablename__ = "recordings"
    # One recording per call, failed attempts aside: the database decides between
    # concurrent uploads (a check before the insert could not).
    __table_args__ = (
        sa.Index(
            "uq_recordings_one_per_call",
            "client_id",
            "call_id",
            unique=True,
            sqlite_where=sa.text("state != 'failed'"),
            postgresql_where=sa.text("state != 'failed'"),
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    client_id: str = Field(index=True, max_length=63)
    call_id: str = Field(index=True, max_length=200)
    decision_id: str | None = Field(default=None, max_length=40)
    channel: str = Field(max_length=20)  # upload, whip, siprec
    codec: str = Field(max_length=20)  # opus, pcmu, pcma, g722
    container: str = Field(max_length=10)  # ogg, wav
    channels: int = 1
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    duration_s: float | None = None
    size: int | None = Field(default=None, sa_type=sa.BigInteger)
    sha256: str | None = Field(default=None, max_length=64)
    # Of the audio as served (decrypted): what a downloaded file is checked against.
    audio_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    audio_sha256: str | None = Field(default=None, max_length=64)
    object_key: str = Field(unique=True, max_length=300)
    version_id: str | None = Field(default=None, max_length=200)
    state: RecordingState = Field(
        default=RecordingState.RECORDING, index=True, sa_type=sa.String(20)
    )
    legal_hold: bool = False
    # A summary of the purpose rows, kept in step with them by the functions below so
    # that the retention report reads one table: the live purposes' names (sorted,
    # comma-separated, "" when none is left) and when the last of them expires.
    purpose_names: str = Field(default="", max_length=200)
    last_expiry: datetime | None = Field(default=None, index=True, sa_type=UTCDateTime)
    failure: str | None = Field(default=None, sa_type=sa.Text)
    # Sealed from the spool of a live capture cut by a crash: its tail may be missing.
    recovered: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    purged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RecordingPurpose(SQLModel, table=True):
    """One purpose a recording may serve, with its own expiry.

    Only recordings being captured, stored or restricted have purposes: a purge or a
    discard removes them all (the retention report counts on it).
    """

    __tablename__ = "recording_purposes"

    recording_id: str = Field(
        primary_key=True, foreign_key="recordings.id", ondelete="CASCADE", max_length=40
    )
    purpose: str = Field(primary_key=True, max_length=40)
    expires_at: datetime = Field(index=True, sa_type=UTCDateTime)


def object_key(*, client_id: str, recording_id: str, created_at: datetime, ext: str) -> str:
    """``{client}/{YYYY}/{MM}/{DD}/{recording_id}.{ext}``: nothing personal in a key."""
    if not CLIENT_ID.match(client_id):
        raise ValueError(f"client id {client_id!r} is not a slug (a-z, 0-9, '-')")
    return f"{client_id}/{created_at:%Y/%m/%d}/{recording_id}.{ext}"


def object_tags(
    client_id: str, purposes: Mapping[str, datetime], *, legal_hold: bool = False
) -> dict[str, str]:
    """The tag set an object must carry: its client, one tag per live purpose, and
    ``legal-hold=true`` while a case holds it."""
    tags = {"client": client_id}
    tags.update({f"purpose:{name}": f"{expiry:%Y-%m-%d}" for name, expiry in purposes.items()})
    if legal_hold:
        tags["legal-hold"] = "true"
    return tags


def add_recording(
    session: Session, *, recording: Recording, purposes: Mapping[str, datetime]
) -> Recording:
    """Add a new recording row and its purposes (the caller commits)."""
    recording.purpose_names, recording.last_expiry = _summary(purposes)
    session.add(recording)
    session.flush()  # parent row first: the purposes reference it
    for name, expiry in purposes.items():
        session.add(RecordingPurpose(recording_id=recording.id, purpose=name, expires_at=expiry))
    session.flush()
    return recording


# Any fixed 64-bit number, the same in every replica.
_HOLDS_LOCK_ID = 0x63_61_6C_6C_68_6F_6C_64


def order_with_holds(session: Session, *, exclusive: bool) -> None:
    """Order this transaction with every change to legal holds (PostgreSQL).

    Placing or releasing a hold takes this lock exclusively; cataloguing a new
    recording and marking one stored take it shared. So a hold either sees the
    recording, or is seen by the transaction that tags it: the flag and the object's
    ``legal-hold`` tag cannot miss each other. SQLite needs nothing: its writers take
    turns (``BEGIN IMMEDIATE``). Take it first in the transaction, before any read.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        connection.execute(sa.text(f"SELECT {function}(:id)"), {"id": _HOLDS_LOCK_ID})


def remove_purposes(
    session: Session, recording_ids: Collection[str], names: Collection[str] | None = None
) -> None:
    """Drop these purposes (all when ``names`` is None) from each of these recordings."""
    where = [col(RecordingPurpose.recording_id).in_(recording_ids)]
    if names is not None:
        where.append(col(RecordingPurpose.purpose).in_(names))
    session.execute(sa.delete(RecordingPurpose).where(*where))
    left = purposes_of_each(session, recording_ids) if names is not None else {}
    for summary, ids in _grouped({rid: _summary(left.get(rid, {})) for rid in recording_ids}):
        purpose_names, last_expiry = summary
        session.execute(
            sa.update(Recording)
            .where(col(Recording.id).in_(ids))
            .values(purpose_names=purpose_names, last_expiry=last_expiry)
        )


def _summary(purposes: Mapping[str, datetime]) -> tuple[str, datetime | None]:
    return ",".join(sorted(purposes)), max(purposes.values(), default=None)


def _grouped(
    summaries: Mapping[str, tuple[str, datetime | None]],
) -> list[tuple[tuple[str, datetime | None], list[str]]]:
    """Recording ids by summary: a purge sets one summary on a whole batch at once."""
    groups: dict[tuple[str, datetime | None], list[str]] = {}
    for rid, summary in summaries.items():
        groups.setdefault(summary, []).append(rid)
    return list(groups.items())


def get_recording(
    session: Session, recording_id: str, *, client_id: str | None = None
) -> Recording | None:
    """The recording, or None; with ``client_id`` another client's id is None too."""
    recording = session.get(Recording, recording_id)
    if recording is None or (client_id is not None and recording.client_id != client_id):
        return None
    return recording


def purposes_of(session: Session, recording_id: str) -> dict[str, datetime]:
    """Live purposes of a recording, name → expiry."""
    return purposes_of_each(session, [recording_id])[recording_id]


def purposes_of_each(
    session: Session, recording_ids: Collection[str]
) -> dict[str, dict[str, datetime]]:
    """Live purposes of each recording, id → name → expiry, in one query."""
    found: dict[str, dict[str, datetime]] = {rid: {} for rid in recording_ids}
    rows = session.exec(
        select(RecordingPurpose).where(col(RecordingPurpose.recording_id).in_(recording_ids))
    )
    for row in rows:
        found[row.recording_id][row.purpose] = row.expires_at
    return found


def mark_purged(session: Session, recording_ids: Collection[str], *, now: datetime) -> None:
    """Move these recordings to ``purged`` in one statement; only live ones can be."""
    allowed = [s for s, after in _NEXT_STATES.items() if RecordingState.PURGED in after]
    session.execute(
        sa.update(Recording)
        .where(col(Recording.id).in_(recording_ids), col(Recording.state).in_(allowed))
        .values(state=RecordingState.PURGED, purged_at=now, updated_at=now)
    )


def transition(recording: Recording, to: RecordingState, *, now: datetime) -> None:
    """Move ``recording`` to state ``to`` or raise InvalidTransition."""
    current = RecordingState(recording.state)
    if to not in _NEXT_STATES[current]:
        raise InvalidTransition(f"recording {recording.id}: {current} cannot become {to}")
    recording.state = to
    recording.updated_at = now


def list_recordings(
    session: Session,
    *,
    client_id: str | None = None,
    states: Sequence[RecordingState] | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[Recording]:
    """Recordings in id (creation) order, after the cursor ``after``."""
    query = select(Recording).order_by(Recording.id).limit(limit)
    if client_id is not None:
        query = query.where(Recording.client_id == client_id)
    if states:
        query = query.where(Recording.state.in_(list(states)))  # type: ignore[attr-defined]
    if after is not None:
        query = query.where(Recording.id > after)
    return list(session.exec(query))

"""What every part of the retention report shares: the scope it is built in (session, time,
client) and the test for recordings an active legal hold covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from retention.holds import LegalHold, LegalHoldTarget
from storage.catalog import Recording, RecordingState

# The tables read, as Core tables: the report only reads aggregates.
_R: sa.Table = Recording.__table__  # type: ignore[attr-defined]
_H: sa.Table = LegalHold.__table__  # type: ignore[attr-defined]
_T: sa.Table = LegalHoldTarget.__table__  # type: ignore[attr-defined]
LIST_LIMIT = 100  # exception lists are capped; their totals are always exact
_LIVE = (RecordingState.STORED.value, RecordingState.RESTRICTED.value)


@dataclass(frozen=True)
class Scope:
    """The session, the time and the client (None: all) one report is built for."""

    session: Session
    now: datetime
    client_id: str | None

    def rows(self, query: sa.Executable) -> Sequence[Any]:
        return self.session.connection().execute(query).all()

    def values(self, query: sa.Executable) -> list[Any]:
        """The first column of every row."""
        return list(self.session.connection().execute(query).scalars())

    def live(self) -> list[sa.ColumnElement[bool]]:
        """Live recordings, of the client when the report is one client's."""
        return [_R.c.state.in_(_LIVE), *self.own(_R.c.client_id)]

    def own(self, column: sa.ColumnElement[object]) -> list[sa.ColumnElement[bool]]:
        return [] if self.client_id is None else [column == self.client_id]

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name


def on_hold() -> sa.ColumnElement[bool]:
    """True for a recording some active case covers: by id, by call or by client."""

    def targets(kind: str) -> sa.Select[tuple[str]]:
        return (
            sa.select(_T.c.target)
            .join(_H, _H.c.id == _T.c.hold_id)
            .where(_H.c.released_at.is_(None), _T.c.kind == kind)
        )

    return sa.or_(
        _R.c.id.in_(targets("recording")),
        _R.c.call_id.in_(targets("call")),
        _R.c.client_id.in_(targets("client")),
    )

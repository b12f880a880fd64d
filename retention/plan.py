"""Purge planning: a pure function of (recordings, their purposes, holds, as of when).

Each purpose of a recording expires on its own. When one expires its tag goes; when
none is left and nothing holds the recording, it is purged. A legal hold blocks the
purge but never keeps an expired purpose alive: holds never extend what a recording
may be used for, they only keep it from being deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RetentionState:
    """What the plan needs about one recording."""

    recording_id: str
    purposes: Mapping[str, datetime]  # live purposes and their expiry
    held: bool


@dataclass(frozen=True)
class RetentionAction:
    """What to do with one recording: withdraw expired purposes, then maybe purge."""

    recording_id: str
    expire: frozenset[str]
    remaining: frozenset[str]
    purge: bool
    rule: str  # why, for the deletion certificate


def plan(states: Iterable[RetentionState], *, as_of: datetime) -> list[RetentionAction]:
    """The actions due at ``as_of``; recordings with nothing to do are left out."""
    if as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware")
    actions = []
    for state in states:
        expired = frozenset(p for p, expiry in state.purposes.items() if expiry <= as_of)
        remaining = frozenset(state.purposes) - expired
        purge = not remaining and not state.held
        if not expired and not purge:
            continue
        if purge:
            last = max(state.purposes.values(), default=None)
            rule = (
                f"retention expired: last purpose ended {last:%Y-%m-%d}"
                if last is not None
                else "no purpose left"
            )
        elif not remaining:
            rule = "every purpose expired; kept under legal hold"
        else:
            rule = f"purposes expired: {', '.join(sorted(expired))}"
        actions.append(RetentionAction(state.recording_id, expired, remaining, purge, rule))
    return actions

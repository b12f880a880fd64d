from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retention.plan import RetentionState, plan

NOW = datetime(2026, 11, 28, tzinfo=UTC)
DAY = timedelta(days=1)


def _state(held: bool = False, **purposes: datetime) -> RetentionState:
    return RetentionState("rec_1", purposes, held)


def test_nothing_due() -> None:
    assert plan([_state(research=NOW + DAY)], as_of=NOW) == []


def test_one_purpose_expires_on_its_own() -> None:
    (action,) = plan([_state(research=NOW - DAY, improvement=NOW + DAY)], as_of=NOW)
    assert action.expire == {"research"}
    assert action.remaining == {"improvement"}
    assert not action.purge


def test_expiry_is_inclusive() -> None:
    (action,) = plan([_state(research=NOW)], as_of=NOW)
    assert action.purge


def test_last_purpose_expired_purges() -> None:
    (action,) = plan([_state(research=NOW - DAY, improvement=NOW - 2 * DAY)], as_of=NOW)
    assert action.purge
    assert action.remaining == frozenset()
    assert "2026-11-27" in action.rule


def test_legal_hold_blocks_purge_but_not_expiry() -> None:
    (action,) = plan([_state(held=True, research=NOW - DAY)], as_of=NOW)
    assert action.expire == {"research"}
    assert not action.purge
    assert "legal hold" in action.rule


def test_recording_without_purpose_is_purged() -> None:
    (action,) = plan([_state()], as_of=NOW)
    assert action.purge and action.rule == "no purpose left"


def test_naive_as_of_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        plan([], as_of=datetime(2026, 1, 1))

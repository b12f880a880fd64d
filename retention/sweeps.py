"""A purge sweep as ops ask for it: the time it runs as of is checked first.

A sweep as of a time ahead would withdraw purposes and purge recordings before they
expire, with certificates that look like ordinary retention; a sweep as of a time long
past would certify a lag it did not have. Only a dry run may look ahead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from retention.errors import InvalidRequest
from retention.purge import Purger, SweepReport

# How far before now "now" may be typed (a command line takes a moment to start).
PAST_TOLERANCE = timedelta(minutes=1)


def check_as_of(as_of: datetime, *, now: datetime, dry_run: bool) -> None:
    """Refuse an ``as_of`` a purge may not run at; a dry run may look ahead."""
    if as_of < now - PAST_TOLERANCE:
        raise InvalidRequest(
            f"--as-of {as_of:%Y-%m-%d %H:%M} is in the past; purges run as of now or later"
        )
    if as_of > now and not dry_run:
        raise InvalidRequest(
            f"--as-of {as_of:%Y-%m-%d %H:%M} is in the future: that would purge recordings "
            "before they expire; add --dry-run to see what would go"
        )


def sweep_as_of(
    purger: Purger,
    *,
    as_of: datetime,
    now: datetime,
    dry_run: bool,
    actor: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> SweepReport:
    """One sweep as of ``as_of``, refused (nothing changed) if that time is not allowed."""
    check_as_of(as_of, now=now, dry_run=dry_run)
    return purger.sweep(as_of=as_of, now=now, dry_run=dry_run, actor=actor, on_progress=on_progress)

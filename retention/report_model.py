"""The retention report as data: every section, JSON-serializable, no queries here."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

AGE_BUCKETS = ("0-30", "31-90", "91-365", ">365")
FORECAST_DAYS = 90


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Period(_Row):
    start: datetime
    end: datetime
    days: int


class PolicyRow(_Row):
    purpose: str
    legal_basis: str
    regulator_reference: str | None
    default_days: int
    max_days: int
    overrides: dict[str, int]  # client → days


class InventoryRow(_Row):
    client_id: str
    purpose: str  # "all" counts each recording once; "none" = no purpose left
    age: str
    recordings: int
    bytes: int


class ForecastWeek(_Row):
    week: int
    start: datetime
    end: datetime
    purposes_expiring: dict[str, int]
    recordings_purged: int
    recordings_held: int


class PurgeRow(_Row):
    cause: str  # retention, erasure, revocation, caller_opt_out, other
    purged: int
    on_time: int
    late: int
    early: int  # purged before its last purpose expired
    lag_unknown: int
    day_precision: int
    mean_lag_hours: float | None
    max_lag_hours: float | None


class LatePurge(_Row):
    recording_id: str
    client_id: str | None
    purged_at: datetime
    lag_hours: float


class EarlyPurge(_Row):
    recording_id: str
    client_id: str | None
    purged_at: datetime
    cause: str
    hours_before_expiry: float


class Purges(_Row):
    late_after_hours: float
    # Recordings that lost expired purposes and were kept (other purposes or a hold);
    # a purge certificate lists the purposes of what it removed.
    purposes_expired_events: int
    by_cause: list[PurgeRow]
    late: list[LatePurge]
    early: list[EarlyPurge]


class OverdueItem(_Row):
    recording_id: str
    client_id: str
    reason: str


class Overdue(_Row):
    total: int
    items: list[OverdueItem]


class HoldRow(_Row):
    id: str
    reason: str
    created_at: datetime
    until: datetime | None
    recordings: int


class Holds(_Row):
    cases: list[HoldRow]
    kept_only_by_hold: int  # live, no purpose left, held: not overdue
    kept_only_by_hold_ids: list[str]


class ClientCount(_Row):
    client_id: str
    recordings: int


class CoverageRow(_Row):
    client_id: str
    live: int
    covered: int


class Coverage(_Row):
    live: int
    covered: int
    percent: float | None  # None when nothing is live
    gaps: dict[str, int]  # reason → recordings
    by_client: list[CoverageRow]


class SubjectRow(_Row):
    kind: str
    received: int
    open: int
    partially_completed: int
    completed: int
    overdue: int


class SubjectOverdue(_Row):
    id: str
    client_id: str
    kind: str
    status: str
    due_at: datetime


class Subjects(_Row):
    by_kind: list[SubjectRow]
    overdue: list[SubjectOverdue]


class ReconciliationStatus(_Row):
    run: bool
    ok: bool | None = None
    checked_at: datetime | None = None
    objects: int = 0
    recordings: int = 0
    orphans: int = 0
    ghosts: int = 0
    orphan_keys: list[str] = []
    ghost_ids: list[str] = []


class AuditStatus(_Row):
    checked: bool
    ok: bool | None = None
    events: int | None = None
    first_bad: int | None = None
    problem: str | None = None


class WebhookStatus(_Row):
    """Webhook deliveries not done: waiting (or being retried), and dead (given up)."""

    pending: int = 0
    oldest_pending: datetime | None = None
    dead: int = 0
    last_dead: datetime | None = None


class Checks(_Row):
    """The headline: each must hold; ``None`` means not checked in this report."""

    no_overdue: bool
    full_coverage: bool
    audit_chain: bool | None
    reconciliation: bool | None
    subject_requests_on_time: bool
    webhooks_delivered: bool  # no dead webhook delivery


class RetentionReport(_Row):
    generated_at: datetime
    period: Period
    client_id: str | None
    checks: Checks
    policy: list[PolicyRow]
    inventory: list[InventoryRow]
    forecast: list[ForecastWeek]
    purges: Purges
    overdue: Overdue
    holds: Holds
    restrictions: list[ClientCount]
    coverage: Coverage
    subject_requests: Subjects
    reconciliation: ReconciliationStatus
    audit: AuditStatus
    webhooks: WebhookStatus

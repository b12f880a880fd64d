"""The retention report over a known catalog, on SQLite and PostgreSQL, and its renderings."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from consent.calls import CallDecision
from consent.clients import Client
from consent.registry import RetentionOverride
from retention.holds import LegalHold, LegalHoldTarget
from retention.reconcile import ReconciliationReport
from retention.report import RetentionReport, build_report, to_json
from retention.report_csv import to_csv
from retention.report_html import to_html
from retention.subjects import SubjectRequest
from storage.audit import AuditLog
from storage.catalog import Recording, RecordingState, add_recording
from storage.db import session_scope

DAY = timedelta(days=1)
AUDIT = AuditLog(b"a" * 32)
EVIL = "<script>alert('x')</script>"


def _recording(
    session: Session,
    now: datetime,
    rid: str,
    client: str,
    *,
    age: timedelta,
    size: int,
    purposes: dict[str, timedelta] | None = None,
    state: RecordingState = RecordingState.STORED,
    decision: str | None = None,
    call: str | None = None,
) -> None:
    recording = Recording(
        id=rid,
        client_id=client,
        call_id=call or f"call-{rid}",
        decision_id=decision,
        channel="upload",
        codec="opus",
        container="ogg",
        size=size,
        object_key=f"{client}/{rid}.ogg",
        state=state,
        created_at=now - age,
        updated_at=now - age,
    )
    expiries = {name: now + delta for name, delta in (purposes or {}).items()}
    add_recording(session, recording=recording, purposes=expiries)


def _decision(
    session: Session, now: datetime, did: str, client: str, *, record: bool, grant: str | None
) -> None:
    session.add(
        CallDecision(
            id=did,
            client_id=client,
            call_id=f"call-of-{did}",
            channel="upload",
            direction="inbound",
            participants="[]",
            record=record,
            reason="recorded" if record else "no_consent",
            grant_id=grant,
            rule="one_party",
            decided_at=now,
            updated_at=now,
        )
    )


def _hold(
    session: Session,
    now: datetime,
    hid: str,
    reason: str,
    target: tuple[str, str],
    *,
    until: datetime | None = None,
    released_at: datetime | None = None,
) -> None:
    session.add(
        LegalHold(id=hid, reason=reason, created_by="officer", created_at=now - DAY,
                  until=until, released_at=released_at)
    )  # fmt: skip
    session.flush()
    session.add(LegalHoldTarget(hold_id=hid, kind=target[0], target=target[1]))


def _request(
    session: Session, now: datetime, sid: str, client: str, kind: str, status: str, **at: int
) -> None:
    completed = at.get("completed")
    session.add(
        SubjectRequest(
            id=sid,
            client_id=client,
            kind=kind,
            phone_hash="0" * 64,
            status=status,
            created_by="officer",
            created_at=now - at["created"] * DAY,
            due_at=now - at["due"] * DAY,
            completed_at=None if completed is None else now - completed * DAY,
        )
    )


def _purged(session: Session, at: datetime, client: str, rid: str, rule: str, **extra: str) -> None:
    data = {"certificate": "deletion", "rule": rule, **extra}
    AUDIT.append(
        session, kind="recording.purged", actor="retention", now=at, client_id=client,
        subject=rid, data=data,
    )  # fmt: skip


def _seed(engine: Engine, now: datetime) -> None:
    """The known catalog the assertions below are computed from by hand."""
    with session_scope(engine) as s:
        for client in ("acme", "globex", "initech"):
            s.add(Client(id=client, name=client.title(), country="MA", created_at=now))
        s.flush()
        s.add(RetentionOverride(client_id="acme", purpose="research", days=200, updated_at=now))
        s.add(
            RetentionOverride(client_id="globex", purpose="optimization", days=30, updated_at=now)
        )
        for did, client, record, grant in (
            ("d1", "acme", True, "g1"), ("d2", "acme", True, None), ("d3", "acme", True, "g1"),
            ("d5", "acme", True, "g1"), ("d6", "globex", False, None), ("d9", "acme", True, "g1"),
        ):  # fmt: skip
            _decision(s, now, did, client, record=record, grant=grant)
        r = _recording
        r(s, now, "r1", "acme", age=10 * DAY, size=1000, decision="d1",
          purposes={"research": 20 * DAY, "improvement": 5 * DAY})  # fmt: skip
        r(s, now, "r2", "acme", age=45 * DAY, size=2000, decision="d2",
          purposes={"improvement": 40 * DAY})  # fmt: skip
        r(s, now, "r3", "acme", age=200 * DAY, size=3000, decision="d3",
          purposes={"research": -2 * DAY}, state=RecordingState.RESTRICTED)  # fmt: skip
        r(s, now, "r4", "globex", age=400 * DAY, size=4000)
        r(s, now, "r5", "globex", age=100 * DAY, size=5000, decision="d5")
        r(s, now, "r6", "globex", age=31 * DAY, size=6000, decision="d6", call="call-6",
          purposes={"optimization": 60 * DAY})  # fmt: skip
        r(s, now, "r7", "acme", age=300 * DAY, size=7000, state=RecordingState.PURGED)
        r(s, now, "r8", "acme", age=DAY, size=8000, state=RecordingState.RECORDING,
          purposes={"research": 10 * DAY})  # in flight: in no count yet  # fmt: skip
        r(s, now, "r9", "acme", age=DAY, size=100, decision="d9",
          purposes={"research": 90 * DAY, "improvement": 90 * DAY})  # fmt: skip
        _hold(s, now, "h1", f"{EVIL} litigation", ("recording", "r5"), until=now + 30 * DAY)
        _hold(s, now, "h2", "regulator inquiry", ("call", "call-6"))
        _hold(s, now, "h3", "released case", ("recording", "r4"), released_at=now - DAY)
        _hold(s, now, "h4", "whole client", ("client", "initech"))
        _request(s, now, "s1", "acme", "access", "completed", created=5, due=-25, completed=5)
        _request(s, now, "s2", "acme", "erasure", "partially_completed", created=40, due=10)
        _request(s, now, "s3", "globex", "restriction", "open", created=35, due=5)
        _request(s, now, "s4", "globex", "objection", "completed", created=60, due=30, completed=59)
        prefix = "retention expired: last purpose ended"
        _purged(s, now - 3 * DAY, "acme", "p-on-time", f"{prefix} 2026-11-25 (as of 2026-11-25)")
        _purged(s, now - 2 * DAY, "acme", "p-late", f"{prefix} 2026-11-20 (as of 2026-11-26)")
        _purged(s, now - DAY, "acme", "p-exact", f"{prefix} 2026-11-27 (as of 2026-11-27)",
                last_expiry="2026-11-27T06:00:00+00:00")  # fmt: skip
        _purged(s, now - 4 * DAY, "globex", "p-erased", "erasure requested by the data subject")
        _purged(s, now - 6 * DAY, "acme", "p-revoked", "consent g1 revoked with purge_existing")
        _purged(s, now - 7 * DAY, "acme", "p-bare", "no purpose left (as of 2026-11-21 12:00 UTC)")
        _purged(s, now - 40 * DAY, "acme", "p-old", f"{prefix} 2026-10-10 (as of 2026-10-19)")
        for at in (now - 3 * DAY, now - 45 * DAY):
            AUDIT.append(s, kind="recording.purposes_expired", actor="retention", now=at, data={})


@pytest.fixture
def report(engine: Engine, now: datetime) -> RetentionReport:
    _seed(engine, now)
    with Session(engine) as session:
        chain = AUDIT.verify(session)
        reconciliation = ReconciliationReport(
            checked_at=now, objects=7, recordings=7,
            orphans=["acme/x.ogg", "globex/y.ogg"], ghosts=["r4"],
        )  # fmt: skip
        return build_report(session, now=now, reconciliation=reconciliation, audit_report=chain)


def test_inventory_counts_live_recordings_by_client_purpose_and_age(
    report: RetentionReport,
) -> None:
    got = {(i.client_id, i.purpose, i.age): (i.recordings, i.bytes) for i in report.inventory}
    assert got == {
        ("acme", "all", "0-30"): (2, 1100),
        ("acme", "all", "31-90"): (1, 2000),
        ("acme", "all", "91-365"): (1, 3000),
        ("acme", "improvement", "0-30"): (2, 1100),
        ("acme", "improvement", "31-90"): (1, 2000),
        ("acme", "research", "0-30"): (2, 1100),
        ("acme", "research", "91-365"): (1, 3000),
        ("globex", "all", "31-90"): (1, 6000),  # 31 days old exactly: the second bucket
        ("globex", "all", "91-365"): (1, 5000),
        ("globex", "all", ">365"): (1, 4000),
        ("globex", "none", "91-365"): (1, 5000),
        ("globex", "none", ">365"): (1, 4000),
        ("globex", "optimization", "31-90"): (1, 6000),
    }
    assert [(p.purpose, p.default_days, p.max_days, p.overrides) for p in report.policy] == [
        ("improvement", 180, 365, {}),
        ("optimization", 90, 180, {"globex": 30}),
        ("research", 365, 730, {"acme": 200}),
    ]


def test_forecast_counts_purposes_and_last_expiries_per_week(
    report: RetentionReport, now: datetime
) -> None:
    weeks = report.forecast
    assert len(weeks) == 13 and weeks[0].start == now and weeks[-1].end == now + 90 * DAY
    busy = {
        w.week: (w.purposes_expiring, w.recordings_purged, w.recordings_held)
        for w in weeks
        if w.purposes_expiring or w.recordings_purged or w.recordings_held
    }
    assert busy == {
        0: ({"improvement": 1}, 0, 0),  # r1 keeps research: no purge yet
        2: ({"research": 1}, 1, 0),
        5: ({"improvement": 1}, 1, 0),
        8: ({"optimization": 1}, 0, 1),  # r6: its call is under a legal hold
        12: ({"improvement": 1, "research": 1}, 1, 0),  # two purposes, one recording
    }


def test_purges_are_split_by_cause_with_their_lag(report: RetentionReport) -> None:
    p = report.purges
    rows = {r.cause: r for r in p.by_cause}
    assert set(rows) == {"erasure", "retention", "revocation"}
    r = rows["retention"]
    assert (r.purged, r.on_time, r.late, r.lag_unknown, r.day_precision) == (4, 2, 1, 1, 2)
    assert r.mean_lag_hours == pytest.approx((12 + 156 + 6) / 3)
    assert r.max_lag_hours == pytest.approx(156)
    assert (rows["erasure"].purged, rows["erasure"].late, rows["erasure"].mean_lag_hours) == (
        1, 0, None,
    )  # fmt: skip
    assert [(x.recording_id, x.lag_hours) for x in p.late] == [("p-late", 156.0)]
    assert p.purposes_expired_events == 1 and p.late_after_hours == 24


def test_a_purge_before_expiry_is_early_with_its_cause(engine: Engine, now: datetime) -> None:
    """However it came about, a purge before the last purpose expired is never on time."""
    ahead = (now + 5 * DAY).isoformat()
    prefix = "retention expired: last purpose ended"
    with session_scope(engine) as s:
        s.add(Client(id="acme", name="Acme", country="MA", created_at=now))
        s.flush()
        # `callrec purge --as-of` a week ahead, before that was refused: the date is ahead.
        _purged(s, now - DAY, "acme", "p-ahead", f"{prefix} 2026-12-03 (as of 2026-12-04)",
                last_expiry=ahead, reason="retention")  # fmt: skip
        _purged(s, now - DAY, "acme", "p-ahead-old", f"{prefix} 2026-12-03 (as of 2026-12-04)")
        _purged(s, now - 2 * DAY, "acme", "p-erased", "erasure requested by the data subject",
                last_expiry=ahead, reason="erasure")  # fmt: skip
        _purged(s, now - 3 * DAY, "acme", "p-revoked", "consent g1 revoked with purge_existing",
                last_expiry=ahead, reason="revocation")  # fmt: skip
        _purged(s, now - 4 * DAY, "acme", "p-opted-out", "the caller opted out (opt-out)",
                last_expiry=ahead)  # fmt: skip
        _purged(
            s,
            now - 5 * DAY,
            "acme",
            "p-due",
            f"{prefix} 2026-11-23 (as of 2026-11-23)",
            last_expiry=(now - 5 * DAY - timedelta(hours=2)).isoformat(),
            reason="retention",
        )
    with Session(engine) as session:
        report = build_report(session, now=now)
    rows = {r.cause: (r.purged, r.on_time, r.late, r.early, r.lag_unknown)
            for r in report.purges.by_cause}  # fmt: skip
    assert rows == {
        "retention": (3, 1, 0, 2, 0),
        "erasure": (1, 0, 0, 1, 0),
        "revocation": (1, 0, 0, 1, 0),
        "caller_opt_out": (1, 0, 0, 1, 0),
    }
    retention = next(r for r in report.purges.by_cause if r.cause == "retention")
    assert retention.mean_lag_hours == retention.max_lag_hours == 2  # the early ones apart
    early = {(e.recording_id, e.cause, e.hours_before_expiry) for e in report.purges.early}
    assert early == {
        ("p-ahead", "retention", 6 * 24),
        ("p-ahead-old", "retention", 5 * 24 + 12),  # the rule's date, read as midnight
        ("p-erased", "erasure", 7 * 24),
        ("p-revoked", "revocation", 8 * 24),
        ("p-opted-out", "caller_opt_out", 9 * 24),
    }
    assert "No early purge." not in to_html(report)
    assert any(
        row[:2] == ["early_purges", "p-ahead"] for row in csv.reader(io.StringIO(to_csv(report)))
    )


def test_overdue_holds_restrictions_coverage(report: RetentionReport, now: datetime) -> None:
    assert report.overdue.total == 2
    assert [(o.recording_id, o.reason) for o in report.overdue.items] == [
        ("r3", "expired purpose still present: research (expired 2026-11-26)"),
        ("r4", "no purpose left and no legal hold"),
    ]
    assert [(h.id, h.recordings, h.until) for h in report.holds.cases] == [
        ("h1", 1, now + 30 * DAY), ("h2", 1, None), ("h4", 0, None),
    ]  # fmt: skip
    assert (report.holds.kept_only_by_hold, report.holds.kept_only_by_hold_ids) == (1, ["r5"])
    assert [(c.client_id, c.recordings) for c in report.restrictions] == [("acme", 1)]
    cov = report.coverage
    assert (cov.live, cov.covered, cov.percent) == (7, 3, 42.86)
    assert cov.gaps == {
        "decision_not_found": 1,  # r5 names another client's decision
        "decision_not_to_record": 1,
        "no_decision_id": 1,
        "no_grant_id": 1,
    }
    assert [(c.client_id, c.live, c.covered) for c in cov.by_client] == [
        ("acme", 4, 3), ("globex", 3, 0),
    ]  # fmt: skip


def test_subject_requests_reconciliation_and_checks(report: RetentionReport) -> None:
    got = {s.kind: (s.received, s.open, s.partially_completed, s.completed, s.overdue)
           for s in report.subject_requests.by_kind}  # fmt: skip
    assert got == {
        "access": (1, 0, 0, 1, 0),
        "erasure": (0, 0, 1, 0, 1),
        "restriction": (0, 1, 0, 0, 1),
        "objection": (0, 0, 0, 0, 0),
    }
    assert [s.id for s in report.subject_requests.overdue] == ["s2", "s3"]
    recon = report.reconciliation
    assert (recon.run, recon.ok, recon.orphans, recon.ghosts) == (True, False, 2, 1)
    assert report.audit.checked and report.audit.ok and report.audit.events == 9
    assert report.checks.model_dump() == {
        "no_overdue": False,
        "full_coverage": False,
        "audit_chain": True,
        "reconciliation": False,
        "subject_requests_on_time": False,
        "webhooks_delivered": True,
    }


def test_one_clients_report_shows_only_its_own(engine: Engine, now: datetime) -> None:
    _seed(engine, now)
    recon = ReconciliationReport(now, 2, 2, orphans=["acme/x.ogg", "globex/y"], ghosts=["r4"])
    with Session(engine) as session:
        report = build_report(session, now=now, client_id="acme", reconciliation=recon)
    assert {i.client_id for i in report.inventory} == {"acme"}
    assert report.overdue.total == 1 and report.holds.cases == []
    assert (report.coverage.live, report.coverage.covered, report.coverage.percent) == (4, 3, 75.0)
    assert [s.id for s in report.subject_requests.overdue] == ["s2"]
    assert {r.cause for r in report.purges.by_cause} == {"retention", "revocation"}
    assert [p.overrides for p in report.policy] == [{}, {}, {"acme": 200}]
    assert (report.reconciliation.orphan_keys, report.reconciliation.ghost_ids) == (
        ["acme/x.ogg"], [],
    )  # fmt: skip
    assert report.audit.checked is False and report.checks.audit_chain is None


def test_an_empty_catalog_reports_zeros_and_renders(engine: Engine, now: datetime) -> None:
    with Session(engine) as session:
        report = build_report(session, now=now)
    assert report.inventory == [] and report.overdue.total == 0
    assert report.coverage.percent is None and report.checks.full_coverage
    assert sum(w.recordings_purged for w in report.forecast) == 0
    assert report.reconciliation.run is False
    assert "not run" in to_html(report) and "section,key,value" in to_csv(report)


def test_json_round_trips(report: RetentionReport) -> None:
    text = to_json(report)
    assert RetentionReport.model_validate_json(text) == report
    assert json.loads(text)["overdue"]["total"] == 2


def test_csv_parses_with_every_section(report: RetentionReport) -> None:
    rows = list(csv.reader(io.StringIO(to_csv(report))))
    sections = {row[0] for row in rows if row and row[0] != "section"}
    assert sections >= {
        "summary", "policy", "inventory", "forecast", "purges", "late_purges", "overdue",
        "holds", "kept_only_by_hold", "restrictions", "consent_coverage", "consent_gaps",
        "subject_requests", "subject_requests_overdue", "reconciliation", "audit_chain",
    }  # fmt: skip
    headers = [row for row in rows if row and row[0] == "section"]
    assert ["section", "client_id", "purpose", "age", "recordings", "bytes"] in headers
    holds = [row for row in rows if row and row[0] == "holds"]
    assert holds[0][2] == f"{EVIL} litigation"  # text stays text
    assert ["summary", "check_audit_chain", "yes"] in rows


def test_html_has_every_section_escapes_and_links_nowhere(report: RetentionReport) -> None:
    page = to_html(report)
    for heading in (
        "Retention policy", "Inventory of live recordings", "Expiry forecast",
        "Purges in the period", "Overdue recordings", "Legal holds", "Restricted recordings",
        "Consent coverage", "Subject requests", "Reconciliation", "Audit chain",
    ):  # fmt: skip
        assert f"{heading}" in page, heading
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; litigation" in page
    for external in ("http://", "https://", "//", "url(", "@import", "src=", "href="):
        assert external not in page, external
    assert "@media print" in page and "<svg" in page


def test_html_escapes_a_client_id(engine: Engine, now: datetime) -> None:
    with session_scope(engine) as session:
        _recording(session, now, "x1", "<script>", age=DAY, size=1, purposes={"research": DAY})
    with Session(engine) as session:
        page = to_html(build_report(session, now=now))
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_html_renders_in_headless_chromium(report: RetentionReport, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed: apt-get install chromium (CI installs it)")
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(to_html(report), encoding="utf-8")
    subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}", "--window-size=1280,2000", page.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1280, 2000)


def test_bad_arguments_are_refused(engine: Engine, now: datetime) -> None:
    with Session(engine) as session:
        with pytest.raises(ValueError, match="timezone-aware"):
            build_report(session, now=now.replace(tzinfo=None))
        with pytest.raises(ValueError, match="period_days"):
            build_report(session, now=now, period_days=0)

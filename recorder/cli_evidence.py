"""``callrec why``: why a recording is kept, in one sentence, then the facts behind it.

The same answer as ``GET /v1/recordings/{id}/evidence`` (``retention.evidence``), read
straight from the database: it works beside a running gateway and writes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from recorder.cli_common import cli_settings, open_database, out, print_json, utc_now

if TYPE_CHECKING:
    from retention.evidence_model import RecordingEvidence

__all__ = ["why"]


def why(
    recording_id: Annotated[str, typer.Argument(help="The recording's id")],
    as_json: Annotated[
        bool, typer.Option("--json", help="The whole evidence answer, as the API gives it")
    ] = False,
) -> None:
    """Why a recording was made and is kept (or when it was purged), and who read it;
    exit 1 if the audit chain does not verify through the events cited."""
    from sqlmodel import Session

    from retention.evidence import recording_evidence

    db = open_database(cli_settings())
    with Session(db.engine) as session:
        evidence = recording_evidence(
            session, recording_id, client_id=None, audit=db.audit, now=utc_now()
        )
    if as_json:
        print_json(evidence.model_dump(mode="json"))
    else:
        out.print(evidence.kept_because, markup=False, highlight=False)
        for line in summary(evidence):
            out.print(line, markup=False, highlight=False)
    if not evidence.chain.ok:
        raise typer.Exit(1)  # the facts cannot be trusted: say so to scripts too


def summary(evidence: RecordingEvidence) -> list[str]:
    """The facts, one per line, each with the audit event it rests on."""
    lines = [
        f"recording {evidence.recording_id} of {evidence.client_id},"
        f" call {evidence.call_id}: {evidence.state}"
    ]
    decision = evidence.decision
    if decision is not None:
        lines.append(
            f"  decided   {decision.at:%Y-%m-%d %H:%M:%S} {decision.decision_id}:"
            f" {decision.reason},"
            f" rule {decision.rule} ({decision.rule_jurisdiction or 'unknown jurisdiction'})"
            f"  [event {decision.event_id}]"
        )
    grant = evidence.grant
    if grant is not None:
        notice = f"{grant.notice} {grant.notice_version or ''}".strip()
        lines.append(
            f"  grant     {grant.grant_id} v{grant.version} by {grant.granted_by},"
            f" evidence {grant.evidence!r}, notice {notice}  [event {grant.event_id}]"
        )
    caller = evidence.caller_consent
    if caller is not None:
        answer = "accepted" if caller.accepted else "declined"
        lines.append(
            f"  caller    {answer} by {caller.method} at {caller.at:%Y-%m-%d %H:%M:%S},"
            f" notice {caller.notice_version}  [event {caller.event_id}]"
        )
    if evidence.stored is not None:
        stored = evidence.stored
        lines.append(
            f"  stored    {stored.at:%Y-%m-%d %H:%M:%S} sha256 {stored.sha256}"
            f"  [event {stored.event_id}]"
        )
    for purpose in evidence.purposes:
        until = f"{purpose.expires_at:%Y-%m-%d}" if purpose.expires_at else "?"
        state = "live" if purpose.live else (purpose.ended.how if purpose.ended else "ended")
        lines.append(
            f"  purpose   {purpose.name} until {until} ({state}; {purpose.legal_basis})"
            f"  [event {purpose.ended.event_id if purpose.ended else purpose.event_id}]"
        )
    for hold in evidence.holds:
        status = f"released {hold.released.at:%Y-%m-%d}" if hold.released else "open"
        lines.append(
            f"  hold      {hold.hold_id} ({hold.reason}): {status}  [event {hold.event_id}]"
        )
    for restriction in evidence.restrictions:
        lines.append(f"  restricted by {restriction.request_id}  [event {restriction.event_id}]")
    for read in evidence.reads:
        lines.append(
            f"  read      {read.at:%Y-%m-%d %H:%M:%S} by {read.actor} via {read.route}"
            f"  [event {read.event_id}]"
        )
    if evidence.certificate is not None:
        lines.append(f"  purged    deletion certificate  [event {evidence.certificate.event_id}]")
    chain = evidence.chain
    verdict = "verifies" if chain.ok else f"BROKEN at event {chain.first_bad}: {chain.problem}"
    lines.append(f"audit chain through event {chain.checked_up_to}: {verdict}")
    return lines

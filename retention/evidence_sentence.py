"""Why a recording is kept, in one sentence, from its evidence.

A case that holds it comes first (a hold blocks purging whatever the purposes say);
then the purpose that keeps it longest; a purged recording says when, and by which
rule. The sentence is what ``callrec why`` prints first.
"""

from __future__ import annotations

from datetime import datetime

from retention.evidence_model import RecordingEvidence

__all__ = ["kept_because"]


def kept_because(evidence: RecordingEvidence, now: datetime) -> str:
    """One sentence: which purpose until when, which case holds it, or when it went."""
    certificate = evidence.certificate
    if evidence.state == "purged" or certificate is not None:
        if certificate is None:
            return "Purged; no deletion certificate was found in the audit log."
        rule = certificate.certificate.get("rule")
        because = f" ({rule})" if rule else ""
        return (
            f"Purged on {certificate.at:%Y-%m-%d %H:%M} UTC{because}; deletion certificate: "
            f"audit event {certificate.event_id}."
        )
    if evidence.state == "failed":
        return "Not kept: storing the recording failed."
    if evidence.state == "recording":
        return "Being recorded: nothing is stored yet."
    restricted = (
        " It is restricted: kept, but neither served nor processed."
        if (evidence.state == "restricted")
        else ""
    )
    open_holds = [h for h in evidence.holds if h.released is None]
    live = sorted(
        (p for p in evidence.purposes if p.live and p.expires_at is not None),
        key=lambda p: p.expires_at or now,
    )
    purposes = ", ".join(f"{p.name} until {p.expires_at:%Y-%m-%d}" for p in live)
    if open_holds:
        cases = ", ".join(f"{h.hold_id} ({h.reason})" for h in open_holds)
        word = "case" if len(open_holds) == 1 else "cases"
        after = f"; its purposes: {purposes}" if purposes else "; no purpose is left"
        return f"Kept because legal hold {word} {cases} holds it{after}.{restricted}"
    if live:
        last = live[-1]
        assert last.expires_at is not None
        if last.expires_at <= now:
            return (
                f"Kept until the next purge sweep: its last purpose, {last.name}, expired on "
                f"{last.expires_at:%Y-%m-%d}.{restricted}"
            )
        return f"Kept for {purposes}; purged after {last.expires_at:%Y-%m-%d}.{restricted}"
    return f"Kept until the next purge sweep: no purpose is left.{restricted}"

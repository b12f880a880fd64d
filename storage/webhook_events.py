"""Which audit events become webhook events, and what their payloads say.

Every domain event is written to the audit log in its own transaction, so the log is
where an event's webhook is born: the dispatcher's fan-out (``storage.webhook_fanout``)
reads it later and translates it here. The translation is data kept here, at the
bottom layer, rather than hooks registered by the packages above: a process that never
imported the module of an event would otherwise drop its webhooks without a word.

A payload carries ids, codes, hashes and dates; never a phone number, a participant's
hash or free text someone typed (a hold's reason, a revocation's reason).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

RECORDING_STORED = "recording.stored"
RECORDING_FAILED = "recording.failed"
RECORDING_PURGED = "recording.purged"
RECORDING_RESTRICTED = "recording.restricted"
SUBJECT_REQUEST_COMPLETED = "subject_request.completed"
CONSENT_REVOKED = "consent.revoked"
LEGAL_HOLD_PLACED = "legal_hold.placed"
LEGAL_HOLD_RELEASED = "legal_hold.released"

EVENT_TYPES = (
    RECORDING_STORED,
    RECORDING_FAILED,
    RECORDING_PURGED,
    RECORDING_RESTRICTED,
    SUBJECT_REQUEST_COMPLETED,
    CONSENT_REVOKED,
    LEGAL_HOLD_PLACED,
    LEGAL_HOLD_RELEASED,
)

# The fields of a deletion certificate an integrator gets: what was removed and how
# that was checked. The rule names ids and articles, never a person.
_CERTIFICATE_FIELDS = (
    "object_key",
    "sha256",
    "size",
    "rule",
    "reason",
    "purposes",
    "last_expiry",
    "versions_removed",
    "key_destroyed",
    "key_was_live",
    "check",
)
_SUBJECT_REQUEST_KINDS = ("access", "erasure", "restriction", "objection")


class Source(NamedTuple):
    """An audit event as appended, with its place in the chain."""

    seq: int
    hash: str
    kind: str
    client_id: str | None
    subject: str | None
    data: Mapping[str, Any]


class Notice(NamedTuple):
    """One webhook event for one client's endpoints."""

    client_id: str
    type: str
    data: dict[str, Any]


def _stored(event: Source) -> list[Notice]:
    data = event.data
    return _one(
        event,
        RECORDING_STORED,
        {
            "recording_id": event.subject,
            "call_id": data.get("call_id"),
            "size": data.get("size"),
            "sha256": data.get("sha256"),
            "audio_sha256": data.get("audio_sha256"),
            "purposes": data.get("purposes", {}),
        },
    )


def _failed(event: Source) -> list[Notice]:
    data = event.data
    return _one(
        event,
        RECORDING_FAILED,
        {
            "recording_id": event.subject,
            "call_id": data.get("call_id"),
            "reason": data.get("reason"),
        },
    )


def _purged(event: Source) -> list[Notice]:
    certificate = {k: event.data.get(k) for k in _CERTIFICATE_FIELDS}
    certificate["audit_event"] = {"seq": event.seq, "hash": event.hash}
    return _one(
        event, RECORDING_PURGED, {"recording_id": event.subject, "certificate": certificate}
    )


def _revoked(event: Source) -> list[Notice]:
    data = event.data
    return _one(
        event,
        CONSENT_REVOKED,
        {
            "grant_id": event.subject,
            "ledger_version": data.get("version"),
            "purge_existing": data.get("purge_existing"),
        },
    )


def _subject_request(kind: str) -> Callable[[Source], list[Notice]]:
    def translate(event: Source) -> list[Notice]:
        data = event.data
        notices = _one(
            event,
            SUBJECT_REQUEST_COMPLETED,
            {
                "subject_request_id": event.subject,
                "kind": kind,
                "status": data.get("status"),
                "recordings": list(data.get("recordings", [])),
            },
        )
        if event.client_id is not None:
            notices += [
                Notice(
                    event.client_id,
                    RECORDING_RESTRICTED,
                    {"recording_id": recording_id, "subject_request_id": event.subject},
                )
                for recording_id in data.get("restricted", [])
            ]
        return notices

    return translate


def _hold(type_: str) -> Callable[[Source], list[Notice]]:
    def translate(event: Source) -> list[Notice]:
        # A case may cover several clients' recordings: each hears of its own only.
        clients: Mapping[str, int] = event.data.get("clients") or (
            {event.client_id: event.data.get("recordings", 0)} if event.client_id else {}
        )
        return [
            Notice(client, type_, {"legal_hold_id": event.subject, "recordings": count})
            for client, count in sorted(clients.items())
        ]

    return translate


def _one(event: Source, type_: str, data: dict[str, Any]) -> list[Notice]:
    return [Notice(event.client_id, type_, data)] if event.client_id is not None else []


TRANSLATORS: Mapping[str, Callable[[Source], list[Notice]]] = {
    "recording.stored": _stored,
    # A capture discarded (opt-out, refusal, bad audio, a torn spool) ends "failed".
    "recording.discarded": _failed,
    "recording.purged": _purged,
    "consent.revoked": _revoked,
    **{f"subject_request.{k}": _subject_request(k) for k in _SUBJECT_REQUEST_KINDS},
    "legal_hold.placed": _hold(LEGAL_HOLD_PLACED),
    "legal_hold.released": _hold(LEGAL_HOLD_RELEASED),
}
# Audit kinds that may produce a webhook: the dispatcher wakes when one commits.
SOURCE_KINDS = frozenset(TRANSLATORS)


def notices_of(event: Source) -> list[Notice]:
    """The webhook events an audit event produces (none for most)."""
    translate = TRANSLATORS.get(event.kind)
    return translate(event) if translate is not None else []

"""The consent decision: may this call be recorded, for which purposes, until when.

``decide()`` is a pure function of the client's consent snapshot, the call, the rule
book and ``now``; it is called at every call setup, so it walks the client's few
grants once and allocates little. It fails closed at every step: no client, an
objection, no live or matching grant, a purpose without retention, or an all-party
jurisdiction without a way to ask the caller all mean nothing is recorded.

Precedence, first match wins: ``unknown_client``, ``client_inactive``,
``subject_objection``, ``consent_revoked`` / ``consent_expired`` / ``no_consent``,
``out_of_scope``, ``purpose_not_granted``, then the jurisdiction rule:
``announcement_required``, ``awaiting_caller_consent`` or ``recorded``.

Choosing the grant: among the live grants whose scope covers the call's direction and
channel, one grant must give every purpose asked for (purposes are never pieced
together from several grants); with no purposes asked for, the grant giving the most
recordable purposes wins. Under an all-party rule a grant with an announcement notice
comes first, since only it lets the caller be asked. Remaining ties go to the highest
version, then the latest ``valid_from``, then the smallest id, so that the same
ledger always gives the same answer.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from types import MappingProxyType

from consent.domain import (
    CallFacts,
    ClientConsent,
    Decision,
    Grant,
    Notice,
    Reason,
    Rule,
)
from consent.jurisdiction import RuleBook, RuleOutcome

__all__ = ["apply_caller_answer", "decide", "recheck", "unavailable"]

_EMPTY: MappingProxyType[str, datetime] = MappingProxyType({})


def decide(
    client: ClientConsent | None, call: CallFacts, rules: RuleBook, now: datetime
) -> Decision:
    """Decide whether ``call`` may be recorded for ``client`` at ``now`` (timezone-aware).

    Every decision carries the jurisdiction rule that applies to the call, recorded or
    not, so that a refusal can be explained too.
    """
    if now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now.isoformat()}")
    fired = rules.rule_for(call.jurisdictions)
    if client is None:
        return _refuse(Reason.UNKNOWN_CLIENT, fired)
    if not client.active:
        return _refuse(Reason.CLIENT_INACTIVE, fired)
    # A data subject's objection overrides any consent the client holds (GDPR Art. 21).
    if not client.objections.isdisjoint(call.participants):
        return _refuse(Reason.SUBJECT_OBJECTION, fired)

    rule = fired[0]
    requested = call.purposes
    recordable = client.recordable
    # Purposes asked for must all have a retention (fail closed); asking for none
    # gives nothing.
    requested_ok = requested is None or (bool(requested) and requested <= recordable)
    # Under an all-party rule only a grant with an announcement lets the platform ask
    # the caller, so such a grant is preferred over any other that would do.
    prefer_announcement = rule is Rule.ALL_PARTY
    direction, channel = call.direction, call.channel
    any_live = any_in_scope = False
    chosen: Grant | None = None
    chosen_key: tuple[bool, int, int, datetime] | None = None
    # One pass over the client's few grants: is any live, is any in scope, and which
    # one to record under (see "Choosing the grant" above).
    for grant in client.grants:
        revoked_at = grant.revoked_at
        if revoked_at is not None and revoked_at <= now:
            continue  # a revocation stops recording at once
        valid_until = grant.valid_until
        if (valid_until is not None and valid_until <= now) or grant.valid_from > now:
            continue
        any_live = True
        if direction not in grant.directions or channel not in grant.channels:
            continue
        any_in_scope = True
        if not requested_ok:
            continue
        if requested is None:
            count = len(grant.purposes & recordable)
            if not count:
                continue
        elif requested <= grant.purposes:
            count = 0  # every grant covering the request gives the same purposes
        else:
            continue
        key = (
            prefer_announcement and grant.notice is Notice.ANNOUNCEMENT,
            count,
            grant.version,
            grant.valid_from,
        )
        if (
            chosen is None
            or chosen_key is None
            or key > chosen_key
            or (key == chosen_key and grant.id < chosen.id)
        ):
            chosen, chosen_key = grant, key

    if not any_live:
        return _refuse(_why_not_live(client.grants, now), fired)
    if not any_in_scope:
        return _refuse(Reason.OUT_OF_SCOPE, fired)
    if chosen is None:
        return _refuse(Reason.PURPOSE_NOT_GRANTED, fired)
    if prefer_announcement and chosen.notice is not Notice.ANNOUNCEMENT:
        # The caller must consent too and nothing lets the platform ask under a
        # contract notice: nothing may be recorded.
        return _refuse(Reason.ANNOUNCEMENT_REQUIRED, fired, chosen)

    retention = client.retention
    purposes = chosen.purposes & recordable if requested is None else requested
    # Sorted so that the stored and returned purposes read the same on every run.
    expiries = MappingProxyType({p: now + retention[p] for p in sorted(purposes)})
    awaiting = prefer_announcement
    return Decision(
        record=True,
        reason=Reason.AWAITING_CALLER_CONSENT if awaiting else Reason.RECORDED,
        purposes=expiries,
        grant_id=chosen.id,
        grant_version=chosen.version,
        rule=rule,
        rule_jurisdiction=fired[1],
        rule_version=fired[2],
        announcement_required=awaiting or chosen.notice is Notice.ANNOUNCEMENT,
        awaiting_caller_consent=awaiting,
    )


def _refuse(reason: Reason, fired: RuleOutcome, grant: Grant | None = None) -> Decision:
    return Decision.refused(
        reason,
        rule=fired[0],
        rule_jurisdiction=fired[1],
        rule_version=fired[2],
        grant=grant,
        announcement_required=reason is Reason.ANNOUNCEMENT_REQUIRED,
    )


def _why_not_live(grants: tuple[Grant, ...], now: datetime) -> Reason:
    """Why no grant is live: a revocation says most, then an expiry, else none yet."""
    if any(g.revoked_at is not None and g.revoked_at <= now for g in grants):
        return Reason.CONSENT_REVOKED
    if any(g.valid_until is not None and g.valid_until <= now for g in grants):
        return Reason.CONSENT_EXPIRED
    return Reason.NO_CONSENT


def apply_caller_answer(decision: Decision, *, accepted: bool) -> Decision:
    """The decision once the caller has answered the notice of an all-party call.

    Accepted: recording proceeds (``recorded``). Declined: nothing is kept
    (``caller_declined``) and the purposes are dropped. Only a decision awaiting the
    caller's consent can take an answer.
    """
    if not decision.awaiting_caller_consent:
        raise ValueError(
            f"no caller answer expected: the decision is {decision.reason.value!r},"
            " not awaiting caller consent"
        )
    if accepted:
        return dataclasses.replace(
            decision, record=True, reason=Reason.RECORDED, awaiting_caller_consent=False
        )
    return dataclasses.replace(
        decision,
        record=False,
        reason=Reason.CALLER_DECLINED,
        purposes=_EMPTY,
        awaiting_caller_consent=False,
    )


def recheck(decision: Decision, grant: Grant | None, now: datetime) -> Decision:
    """A decision to record, checked again at ``now`` against the grant it was made under.

    Unchanged while that grant is live. Once it is revoked or expired the call may not
    be recorded any more (``consent_revoked`` / ``consent_expired``; a grant missing
    from the ledger gives ``no_consent``): a revocation stops recording at once, also
    for calls decided before it and not yet captured. Decisions not to record are
    returned as they are.
    """
    if not decision.record:
        return decision
    if grant is None or grant.id != decision.grant_id:
        reason = Reason.NO_CONSENT
    elif grant.revoked_at is not None and grant.revoked_at <= now:
        reason = Reason.CONSENT_REVOKED
    elif grant.valid_until is not None and grant.valid_until <= now:
        reason = Reason.CONSENT_EXPIRED
    else:
        return decision
    return dataclasses.replace(
        Decision.refused(
            reason,
            rule=decision.rule,
            rule_jurisdiction=decision.rule_jurisdiction,
            rule_version=decision.rule_version,
        ),
        # Kept, so that the call still names the grant it was decided under.
        grant_id=decision.grant_id,
        grant_version=decision.grant_version,
    )


def unavailable(rules_fallback: Rule = Rule.ALL_PARTY) -> Decision:
    """The fail-closed decision when the consent data cannot be read: record nothing."""
    return Decision.refused(Reason.CONSENT_UNAVAILABLE, rule=rules_fallback)

"""HTTP routes of calls: the call hook and the caller's answer.

The rest of call control (pause, resume, opt-out, end) is composed in
``recorder.call_control``, since an opt-out reaches retention too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, ConfigDict

from consent import calls
from consent.api_auth import (
    Integrator,
    allow,
    bearer_token,
    checked_by_route,
    principal_of,
    tenant_of,
)
from consent.api_context import ApiContext, Context
from consent.apikeys import Principal, Role
from consent.dry_run import dry_run
from consent.errors import ConsentError
from storage.audit import AuditEntry
from storage.group_commit import Work

__all__ = ["CallStatePublic", "DecisionPublic", "DryRunPublic", "decide_call", "router"]


router = APIRouter()


class DecisionPublic(BaseModel):
    """The call hook's answer; the same decision is given back for the same call."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    decision_id: str
    """The decision's id (empty when consent could not be read)."""
    call_id: str
    """The platform's call id, as asked."""
    record: bool
    """Whether the call may be recorded (once the caller accepts, if that is awaited)."""
    reason: str
    """Stable reason code: `recorded`, `awaiting_caller_consent`, `no_consent`…"""
    purposes: list[str]
    """The purposes the recording will serve."""
    expires: dict[str, datetime]
    """When each purpose expires."""
    announcement_required: bool
    """Whether the platform must play the grant's notice to the caller."""
    awaiting_caller_consent: bool
    """Whether nothing may be kept until the caller's answer is reported."""
    rule: str
    """The jurisdiction rule that applied: `one_party` or `all_party`."""
    rule_jurisdiction: str | None
    """The jurisdiction whose rule applied (none: unknown, the strictest rule)."""
    grant_id: str | None
    """The consent grant the decision rests on."""
    grant_version: int | None
    """The ledger version of that grant."""
    state: str
    """The call's state: `open`, `paused`, `ended` or `opted_out`."""
    whip_url: str | None = None
    """Where to publish the live audio (WHIP), for a `whip` call that may be recorded."""
    siprec_uri: str | None = None
    """Where to send SIPREC, for a `siprec` call that may be recorded."""
    upload_url: str | None = None
    """Where to PUT the audio afterwards, for an `upload` call that may be recorded."""


class DryRunPublic(BaseModel):
    """What the call hook would answer for a call; nothing was persisted or audited."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    call_id: str
    """The platform's call id, as asked."""
    record: bool
    """Whether the call would be recorded (once the caller accepts, if that is awaited)."""
    reason: str
    """Stable reason code: `recorded`, `awaiting_caller_consent`, `no_consent`…"""
    purposes: list[str]
    """The purposes the recording would serve."""
    expires: dict[str, datetime]
    """When each purpose would expire, for a call decided now."""
    announcement_required: bool
    """Whether the platform would have to play the grant's notice to the caller."""
    awaiting_caller_consent: bool
    """Whether nothing would be kept until the caller's answer is reported."""
    rule: str
    """The jurisdiction rule that would apply: `one_party` or `all_party`."""
    rule_jurisdiction: str | None
    """The jurisdiction whose rule would apply (none: unknown, the strictest rule)."""
    grant_id: str | None
    """The consent grant the decision would rest on."""
    grant_version: int | None
    """The ledger version of that grant."""
    decided_already: str | None
    """The decision of this call id if it was decided already: the hook would answer it
    again (checked against its grant now), not decide anew."""


class CallStatePublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    call_id: str
    """The platform's call id."""
    state: str
    """The call's state: `open`, `paused`, `ended` or `opted_out`."""


def _decision_public(context: ApiContext, row: calls.DecisionView) -> DecisionPublic:
    expires = row.purpose_expiries()
    live = row.record or row.awaiting_caller_consent
    return DecisionPublic(
        decision_id=row.id,
        call_id=row.call_id,
        record=row.record,
        reason=row.reason,
        purposes=sorted(expires),
        expires=expires,
        announcement_required=row.announcement_required,
        awaiting_caller_consent=row.awaiting_caller_consent,
        rule=row.rule,
        rule_jurisdiction=row.rule_jurisdiction,
        grant_id=row.grant_id,
        grant_version=row.grant_version,
        state=row.state,
        whip_url=f"/v1/whip/{row.id}" if live and row.channel == "whip" else None,
        siprec_uri=(
            f"sip:{row.client_id}@{context.sip_uri_host}"
            if live and row.channel == "siprec"
            else None
        ),
        upload_url=f"/v1/calls/{row.call_id}/recording"
        if live and row.channel == "upload"
        else None,
    )


CALL_HOOK_GUARD = checked_by_route(Role.INTEGRATOR)


@router.post("/calls", tags=["calls"], dependencies=[Depends(CALL_HOOK_GUARD)])
async def call_hook(
    body: calls.CallRequest,
    context: Context,
    authorization: Annotated[str | None, Header()] = None,
) -> DecisionPublic:
    """Ask, at call setup, whether this call may be recorded (fails closed)."""
    work = _hook_work(context, body, bearer_token(authorization), context.clock())
    # Committed with the other call setups waiting at the same moment.
    return _answer(context, await context.decisions.run(body, work))


def decide_call(context: ApiContext, body: calls.CallRequest, token: str) -> DecisionPublic:
    """The call hook's answer for an integrator ``token``, in a transaction of its own."""
    work = _hook_work(context, body, token, context.clock())
    return _answer(context, context.decisions.run_alone(body, work))


def _hook_work(
    context: ApiContext, body: calls.CallRequest, token: str, now: datetime
) -> Work[calls.DecisionView | ConsentError]:
    """The key check, then the decision, in one transaction (blocking: database).

    A refused key is the work's result, not an exception: an exception would roll back
    the other call setups committed with this one.
    """

    def work(
        connection: sa.Connection, events: list[AuditEntry]
    ) -> calls.DecisionView | ConsentError:
        try:
            principal = CALL_HOOK_GUARD.admit(principal_of(connection, context, token), {})
            client_id = tenant_of(principal)
        except ConsentError as refused:
            return refused
        decide = context.decisions.work(
            client_id=client_id, call=body, actor=principal.actor, now=now
        )
        return decide(connection, events)

    return work


def _answer(context: ApiContext, answer: calls.DecisionView | ConsentError) -> DecisionPublic:
    if isinstance(answer, ConsentError):
        raise answer
    return _decision_public(context, answer)


DryRunner = Annotated[Principal, Depends(allow(Role.INTEGRATOR, Role.CLIENT_ADMIN, admin=False))]


@router.post("/calls/dry-run", tags=["calls"])
def call_dry_run(body: calls.CallRequest, context: Context, principal: DryRunner) -> DryRunPublic:
    """What the call hook would answer for this call now; nothing is persisted or audited."""
    with context.read() as session:
        row = dry_run(
            session,
            client_id=tenant_of(principal),
            request=body,
            phone_key=context.phone_key,
            reader=context.consent_reader,
            now=context.clock(),
        )
    expires = row.purpose_expiries()
    return DryRunPublic(
        call_id=row.call_id,
        record=row.record,
        reason=row.reason,
        purposes=sorted(expires),
        expires=expires,
        announcement_required=row.announcement_required,
        awaiting_caller_consent=row.awaiting_caller_consent,
        rule=row.rule,
        rule_jurisdiction=row.rule_jurisdiction,
        grant_id=row.grant_id,
        grant_version=row.grant_version,
        decided_already=row.id or None,
    )


@router.post("/calls/{call_id}/caller-consent", tags=["calls"])
def caller_consent(
    call_id: str, body: calls.CallerConsentRequest, context: Context, principal: Integrator
) -> DecisionPublic:
    """Report the caller's answer to the notice; audio is kept only after `accepted`."""
    with context.write() as session:
        row = calls.answer_caller_consent(
            session,
            client_id=tenant_of(principal),
            call_id=call_id,
            request=body,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )
        return _decision_public(context, calls.DecisionView.of(row))

"""HTTP routes of calls: the call hook, the caller's answer and call control."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel

from consent import calls
from consent.api_auth import (
    Integrator,
    bearer_token,
    checked_by_route,
    principal_of,
    tenant_of,
)
from consent.api_context import ApiContext, Context
from consent.apikeys import Role
from consent.decision import unavailable
from consent.errors import ConsentError
from storage.audit import AuditEntry
from storage.errors import DatabaseUnavailable

__all__ = ["CallStatePublic", "DecisionPublic", "decide_call", "router"]

log = logging.getLogger(__name__)

router = APIRouter()


class DecisionPublic(BaseModel):
    decision_id: str
    call_id: str
    record: bool
    reason: str
    purposes: list[str]
    expires: dict[str, datetime]
    announcement_required: bool
    awaiting_caller_consent: bool
    rule: str
    rule_jurisdiction: str | None
    grant_id: str | None
    grant_version: int | None
    state: str
    whip_url: str | None = None
    siprec_uri: str | None = None
    upload_url: str | None = None


class CallStatePublic(BaseModel):
    call_id: str
    state: str


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
    work = _decision_work(context, body, bearer_token(authorization))
    try:
        # Committed with the other call setups waiting at the same moment.
        answer = await context.group_commit.run(work)
    except (sa.exc.SQLAlchemyError, DatabaseUnavailable):
        return _unavailable(body.call_id)
    return _answer(context, answer)


def decide_call(context: ApiContext, body: calls.CallRequest, token: str) -> DecisionPublic:
    """The call hook's answer for an integrator ``token``, in a transaction of its own."""
    work = _decision_work(context, body, token)
    try:
        answer = context.group_commit.run_alone(work)
    except (sa.exc.SQLAlchemyError, DatabaseUnavailable):
        return _unavailable(body.call_id)
    return _answer(context, answer)


def _decision_work(
    context: ApiContext, body: calls.CallRequest, token: str
) -> Callable[[sa.Connection, list[AuditEntry]], calls.DecisionView | ConsentError]:
    """The key check and the decision, for one transaction (blocking: database).

    A refused key is the work's result, not an exception: an exception would roll back
    the other call setups committed with this one.
    """

    def work(
        connection: sa.Connection, events: list[AuditEntry]
    ) -> calls.DecisionView | ConsentError:
        try:
            principal = CALL_HOOK_GUARD.admit(principal_of(connection, context, token), {})
        except ConsentError as refused:
            return refused
        return calls.ask(
            connection,
            client_id=tenant_of(principal),
            request=body,
            phone_key=context.phone_key,
            reader=context.consent_reader,
            actor=principal.actor,
            events=events,
            now=context.clock(),
        )

    return work


def _answer(context: ApiContext, answer: calls.DecisionView | ConsentError) -> DecisionPublic:
    if isinstance(answer, ConsentError):
        raise answer
    return _decision_public(context, answer)


def _unavailable(call_id: str) -> DecisionPublic:
    # Fail closed: consent that cannot be read is consent that was not given, and the
    # answer is a plain "do not record", never an error a platform might ignore.
    log.error("consent unavailable for call %s: answering do-not-record", call_id)
    decision = unavailable()
    return DecisionPublic(
        decision_id="",
        call_id=call_id,
        record=False,
        reason=decision.reason,
        purposes=[],
        expires={},
        announcement_required=False,
        awaiting_caller_consent=False,
        rule=decision.rule,
        rule_jurisdiction=None,
        grant_id=None,
        grant_version=None,
        state="open",
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


@router.post("/calls/{call_id}/{action}", tags=["calls"])
def call_action(
    call_id: str,
    action: Literal["pause", "resume", "opt-out", "end"],
    context: Context,
    principal: Integrator,
) -> CallStatePublic:
    """Pause (leaves silence), resume, opt out (stops and discards) or end a call."""
    with context.write() as session:
        row = calls.change_state(
            session,
            client_id=tenant_of(principal),
            call_id=call_id,
            action=action,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )
        return CallStatePublic(call_id=row.call_id, state=row.state)

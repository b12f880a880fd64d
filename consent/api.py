"""HTTP routes of the consent layer, and the one authorization dependency every route uses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Request, status
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Engine
from sqlmodel import Session

from consent import apikeys, calls, clients, ledger, registry
from consent.apikeys import ApiKeyPublic, IssuedKey, Principal, Role
from consent.clients import ClientCreate, ClientPublic
from consent.decision import unavailable
from consent.errors import (
    ConsentError,
    NotFound,
    PermissionDenied,
    StateConflict,
    Unauthenticated,
)
from consent.reader import ConsentReader
from storage.audit import AuditEntry, AuditLog
from storage.db import session_scope
from storage.errors import DatabaseUnavailable
from storage.group_commit import GroupCommit
from storage.keyring import Keyring

log = logging.getLogger(__name__)


@dataclass
class ApiContext:
    """What the routes need, built once by the app: no globals."""

    engine: Engine
    audit: AuditLog
    keyring: Keyring
    clock: Callable[[], datetime]
    admin_key: str | None = None
    sip_uri_host: str = "127.0.0.1:5080"
    # Set by the app: what a revocation with purge_existing does to existing
    # recordings (retention's job; consent cannot import it).
    on_purge_existing: Callable[[Session, ledger.ConsentEvent, str, datetime], None] | None = None
    # Per-process caches of what decisions read; see consent.reader for why they hold.
    consent_reader: ConsentReader = field(default_factory=ConsentReader)
    # Where call setups' writes are committed together; ``close()`` stops its thread.
    group_commit: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self.group_commit = GroupCommit(self.engine, self.audit, self.clock)

    def close(self) -> None:
        self.group_commit.close()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A unit of work that writes; committed when the block ends without error."""
        with session_scope(self.engine) as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    @staticmethod
    def pepper_of(keyring: Keyring) -> bytes:
        """The key that hashes API key secrets."""
        return keyring.derive("api-keys")

    # Derived once: the master key does not change while the process runs.
    @cached_property
    def key_pepper(self) -> bytes:
        return self.pepper_of(self.keyring)

    @cached_property
    def phone_key(self) -> bytes:
        return self.keyring.derive("phone-hash")


async def get_context(request: Request) -> ApiContext:
    # Async although it never waits: FastAPI runs a sync dependency in a worker thread,
    # a hop that would cost more than the look-up.
    context: ApiContext = request.app.state.api_context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


def authenticate(
    context: Context, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """The caller behind ``Authorization: Bearer <key>``."""
    token = _bearer_token(authorization)
    with context.read() as session:
        return _principal(session, context, token)


def _bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing api key: send 'Authorization: Bearer <key>'")
    return token.strip()


def _principal(session: Session | sa.Connection, context: ApiContext, token: str) -> Principal:
    return apikeys.authenticate(
        session, token, pepper=context.key_pepper, bootstrap_admin_key=context.admin_key
    )


Caller = Annotated[Principal, Depends(authenticate)]


def allow(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets through admins and the given roles (403 for the rest)."""
    allowed = frozenset({Role.ADMIN, *roles})

    def check(principal: Caller) -> Principal:
        if principal.role not in allowed:
            raise PermissionDenied(f"a {principal.role} key may not do this")
        return principal

    return check


def allow_client(*roles: Role) -> Callable[[str, Principal], Principal]:
    """Like ``allow``, for routes under ``/v1/clients/{client}``.

    A key bound to another client gets 404, exactly as for a client that does not
    exist, so that client ids do not leak.
    """
    check_role = allow(*roles)

    def check(client: str, principal: Caller) -> Principal:
        check_role(principal)
        if principal.client_id is not None and principal.client_id != client:
            raise NotFound(f"no client {client}")
        return principal

    return check


def tenant_of(principal: Principal) -> str:
    """The client a client-bound key acts for."""
    if principal.client_id is None:
        raise PermissionDenied("this route needs a key bound to a client")
    return principal.client_id


Admin = Annotated[Principal, Depends(allow())]
Integrator = Annotated[Principal, Depends(allow(Role.INTEGRATOR))]

router = APIRouter(prefix="/v1")


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


class LedgerPublic(BaseModel):
    client_id: str
    grants: list[ledger.GrantPublic]
    events: list[dict[str, Any]]


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


@router.post("/clients", status_code=status.HTTP_201_CREATED, tags=["clients"])
def create_client(body: ClientCreate, context: Context, principal: Admin) -> ClientPublic:
    """Create a client (tenant)."""
    with context.write() as session:
        client = clients.create_client(
            session, data=body, actor=principal.actor, audit=context.audit, now=context.clock()
        )
        return ClientPublic.model_validate(client, from_attributes=True)


@router.get("/clients", tags=["clients"])
def list_clients(
    context: Context, principal: Annotated[Principal, Depends(allow(Role.COMPLIANCE))]
) -> dict[str, list[ClientPublic]]:
    """List clients."""
    with context.read() as session:
        items = clients.list_clients(session)
        return {"items": [ClientPublic.model_validate(c, from_attributes=True) for c in items]}


@router.get("/clients/{client}", tags=["clients"])
def get_client(
    client: str,
    context: Context,
    principal: Annotated[Principal, Depends(allow_client(Role.COMPLIANCE, Role.CLIENT_ADMIN))],
) -> ClientPublic:
    """One client."""
    with context.read() as session:
        return ClientPublic.model_validate(
            clients.get_client(session, client), from_attributes=True
        )


@router.post("/clients/{client}/offboard", tags=["clients"])
def offboard_client(client: str, context: Context, principal: Admin) -> ClientPublic:
    """Offboard a client: its key is destroyed, its recordings become unreadable."""
    with context.write() as session:
        row = clients.offboard_client(
            session,
            client_id=client,
            actor=principal.actor,
            keyring=context.keyring,
            audit=context.audit,
            now=context.clock(),
        )
        return ClientPublic.model_validate(row, from_attributes=True)


def _issue(context: ApiContext, principal: Principal, role: Role, client: str | None) -> IssuedKey:
    with context.write() as session:
        if client is not None:
            clients.require_active(session, client)
        return apikeys.issue_key(
            session,
            role=role,
            client_id=client,
            pepper=context.key_pepper,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )


@router.post("/clients/{client}/api-keys", status_code=status.HTTP_201_CREATED, tags=["keys"])
def issue_client_key(
    client: str, body: KeyRequest, context: Context, principal: Admin
) -> IssuedKey:
    """Issue an `integrator` or `client_admin` key for a client; the key is shown once."""
    if body.role not in apikeys.CLIENT_ROLES:
        raise PermissionDenied(f"a client key is integrator or client_admin, not {body.role}")
    return _issue(context, principal, body.role, client)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, tags=["keys"])
def issue_key(body: KeyRequest, context: Context, principal: Admin) -> IssuedKey:
    """Issue a `compliance` or `admin` key; the key is shown once."""
    if body.role in apikeys.CLIENT_ROLES:
        raise PermissionDenied(
            f"a {body.role} key belongs to a client: use /v1/clients/{{client}}/api-keys"
        )
    return _issue(context, principal, body.role, None)


@router.delete("/api-keys/{key_id}", tags=["keys"])
def revoke_key(key_id: str, context: Context, principal: Admin) -> ApiKeyPublic:
    """Revoke a key: it stops working at once."""
    with context.write() as session:
        row = apikeys.revoke_key(
            session, key_id=key_id, actor=principal.actor, audit=context.audit, now=context.clock()
        )
        return ApiKeyPublic.model_validate(row, from_attributes=True)


@router.post("/clients/{client}/consents", status_code=status.HTTP_201_CREATED, tags=["consent"])
def grant_consent(
    client: str,
    body: ledger.GrantRequest,
    context: Context,
    principal: Annotated[Principal, Depends(allow_client(Role.CLIENT_ADMIN))],
) -> ledger.GrantPublic:
    """Record a client's permission to record, for the given purposes and scope."""
    now = context.clock()
    with context.write() as session:
        clients.require_active(session, client)
        event = ledger.grant(
            session,
            client_id=client,
            request=body,
            known_purposes=registry.purposes(session),
            actor=principal.actor,
            audit=context.audit,
            now=now,
        )
        return ledger.to_public(event, None, now=now)


@router.post("/clients/{client}/consents/{grant}/revoke", tags=["consent"])
def revoke_consent(
    client: str,
    grant: str,
    body: ledger.RevokeRequest,
    context: Context,
    principal: Annotated[Principal, Depends(allow_client(Role.CLIENT_ADMIN))],
) -> ledger.GrantPublic:
    """Revoke a grant: recording under it stops at once."""
    now = context.clock()
    with context.write() as session:
        event = ledger.revoke(
            session,
            client_id=client,
            grant_id=grant,
            request=body,
            actor=principal.actor,
            audit=context.audit,
            now=now,
        )
        if body.purge_existing:
            if context.on_purge_existing is None:
                raise StateConflict("purge_existing is not available here", code="unsupported")
            context.on_purge_existing(session, event, principal.actor, now)
        granted, revoked = ledger.current_grants(ledger.ledger(session, client))[event.grant_id]
        return ledger.to_public(granted, revoked, now=now)


@router.get("/clients/{client}/consents", tags=["consent"])
def consent_ledger(
    client: str,
    context: Context,
    principal: Annotated[Principal, Depends(allow_client(Role.CLIENT_ADMIN, Role.COMPLIANCE))],
) -> LedgerPublic:
    """The consent ledger: every event, and the grants derived from them."""
    now = context.clock()
    with context.read() as session:
        clients.get_client(session, client)
        events = ledger.ledger(session, client)
        grants = ledger.current_grants(events).values()
        return LedgerPublic(
            client_id=client,
            grants=[ledger.to_public(g, r, now=now) for g, r in grants],
            events=[ledger.event_public(e) for e in events],
        )


@router.put("/clients/{client}/retention", tags=["consent"])
def set_retention(
    client: str,
    body: dict[str, int],
    context: Context,
    principal: Annotated[Principal, Depends(allow_client(Role.CLIENT_ADMIN))],
) -> dict[str, int]:
    """Set the client's retention in days per purpose, within each purpose's maximum."""
    with context.write() as session:
        clients.require_active(session, client)
        return registry.set_retention(
            session,
            client_id=client,
            days=body,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )


@router.get("/purposes", tags=["consent"])
def list_purposes(context: Context, principal: Caller) -> dict[str, list[registry.PurposePublic]]:
    """The purpose registry."""
    with context.read() as session:
        return {"items": [registry.to_public(p) for p in registry.purposes(session).values()]}


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


@router.post("/calls", tags=["calls"])
async def call_hook(
    body: calls.CallRequest,
    context: Context,
    authorization: Annotated[str | None, Header()] = None,
) -> DecisionPublic:
    """Ask, at call setup, whether this call may be recorded (fails closed)."""
    work = _decision_work(context, body, _bearer_token(authorization))
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
            principal = allow(Role.INTEGRATOR)(_principal(connection, context, token))
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


__all__ = ["ApiContext", "Caller", "Context", "allow", "allow_client", "router", "tenant_of"]

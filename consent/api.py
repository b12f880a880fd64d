"""HTTP routes of the consent layer: clients, API keys, the consent ledger, retention.

Authentication lives in ``consent.api_auth``, the app context in ``consent.api_context``,
the call routes in ``consent.api_calls`` and a client's webhook endpoints in
``consent.api_webhooks``; ``router`` carries them all. Each route runs one operation
of ``consent.operations``, as ``callrec`` does; revoking a grant needs retention
(``purge_existing``), so its route is in ``retention.api``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, ConfigDict, Field

from consent import api_calls, api_webhooks, apikeys, clients, ledger, operations, registry
from consent.api_auth import Admin, Caller, allow, allow_client, tenant_of
from consent.api_context import ApiContext, Context
from consent.apikeys import ApiKeyPublic, IssuedKey, Principal, Role
from consent.clients import ClientCreate, ClientPublic
from consent.errors import PermissionDenied
from consent.operations import LedgerPublic
from consent.siprec import SiprecSettingsPublic, SiprecSettingsRequest

router = APIRouter(prefix="/v1")


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role = Field(description="The role of the key to issue")


@router.post("/clients", status_code=status.HTTP_201_CREATED, tags=["clients"])
def create_client(body: ClientCreate, context: Context, principal: Admin) -> ClientPublic:
    """Create a client (tenant)."""
    with context.write() as session:
        return operations.create_client(
            session, data=body, actor=principal.actor, audit=context.audit, now=context.clock()
        )


@router.get("/clients", tags=["clients"])
def list_clients(
    context: Context, principal: Annotated[Principal, Depends(allow(Role.COMPLIANCE))]
) -> dict[str, list[ClientPublic]]:
    """List clients."""
    with context.read() as session:
        return {"items": operations.list_clients(session)}


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
        return operations.offboard_client(
            session,
            client_id=client,
            actor=principal.actor,
            keyring=context.keyring,
            audit=context.audit,
            now=context.clock(),
        )


def _issue(context: ApiContext, principal: Principal, role: Role, client: str | None) -> IssuedKey:
    with context.write() as session:
        return operations.issue_key(
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
        return operations.revoke_key(
            session, key_id=key_id, actor=principal.actor, audit=context.audit, now=context.clock()
        )


@router.post("/clients/{client}/consents", status_code=status.HTTP_201_CREATED, tags=["consent"])
def grant_consent(
    client: str,
    body: ledger.GrantRequest,
    context: Context,
    principal: Annotated[Principal, Depends(allow_client(Role.CLIENT_ADMIN))],
) -> ledger.GrantPublic:
    """Record a client's permission to record, for the given purposes and scope."""
    with context.write() as session:
        return operations.grant_consent(
            session,
            client_id=client,
            request=body,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )


@router.get("/clients/{client}/consents", tags=["consent"])
def consent_ledger(
    client: str,
    context: Context,
    principal: Annotated[Principal, Depends(allow_client(Role.CLIENT_ADMIN, Role.COMPLIANCE))],
) -> LedgerPublic:
    """The consent ledger: every event, and the grants derived from them."""
    with context.read() as session:
        return operations.consent_ledger(session, client_id=client, now=context.clock())


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


@router.put("/clients/{client}/siprec", tags=["clients"])
def put_siprec_settings(
    client: str, body: SiprecSettingsRequest, context: Context, principal: Admin
) -> SiprecSettingsPublic:
    """Set the networks the client's SIPREC INVITEs may come from, and its default
    jurisdiction; the settings are replaced whole."""
    with context.write() as session:
        return operations.put_siprec_settings(
            session,
            client_id=client,
            request=body,
            actor=principal.actor,
            audit=context.audit,
            now=context.clock(),
        )


@router.get("/clients/{client}/siprec", tags=["clients"])
def siprec_settings(client: str, context: Context, principal: Admin) -> SiprecSettingsPublic:
    """The client's SIPREC settings; with none set, only loopback may send."""
    with context.read() as session:
        return operations.siprec_settings(session, client_id=client)


@router.get("/purposes", tags=["consent"])
def list_purposes(
    context: Context, principal: Annotated[Principal, Depends(allow(*Role))]
) -> dict[str, list[registry.PurposePublic]]:
    """The purpose registry."""
    with context.read() as session:
        return {"items": [registry.to_public(p) for p in registry.purposes(session).values()]}


router.include_router(api_calls.router)
router.include_router(api_webhooks.router)

# Re-exported: the routes of other packages import these from here.
__all__ = ["ApiContext", "Caller", "Context", "allow", "allow_client", "router", "tenant_of"]

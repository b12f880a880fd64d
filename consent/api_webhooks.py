"""HTTP routes of a client's webhook endpoints: register (the secret shown once), list, delete.

The endpoints and the outbox live in the storage layer (storage.webhooks,
storage.outbox), since every audited event may produce a webhook; a client's admin
manages its own here, as it manages its consents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, ConfigDict, Field

from consent import clients
from consent.api_auth import allow_client
from consent.api_context import Context
from consent.apikeys import Principal, Role
from consent.errors import InvalidRequest, NotFound
from storage import webhooks
from storage.webhook_events import EVENT_TYPES

router = APIRouter(tags=["webhooks"])  # under consent.api.router, at /v1

ClientAdmin = Annotated[Principal, Depends(allow_client(Role.CLIENT_ADMIN))]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=webhooks.MAX_URL_LENGTH,
        description="Where events are POSTed: http(s), never this gateway itself",
        examples=["https://crm.example.com/callrec/webhooks"],
    )
    events: list[str] = Field(
        min_length=1,
        max_length=len(EVENT_TYPES),
        description=f"Event types to receive: {', '.join(f'`{e}`' for e in EVENT_TYPES)}",
    )


class WebhookPublic(BaseModel):
    id: str = Field(description="The endpoint's id")
    client_id: str = Field(description="The client whose events it receives")
    url: str = Field(description="Where events are POSTed")
    events: list[str] = Field(description="The event types it receives")
    created_at: datetime = Field(description="When it was registered")


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="`whsec_` and the base64 signing key (Standard Webhooks); shown this once"
    )


def _public(endpoint: webhooks.Endpoint) -> WebhookPublic:
    return WebhookPublic.model_validate(endpoint, from_attributes=True)


@router.post("/clients/{client}/webhooks", status_code=status.HTTP_201_CREATED)
def create_webhook(
    client: str, body: WebhookCreate, context: Context, principal: ClientAdmin
) -> WebhookCreated:
    """Register a webhook endpoint; its signing secret is in this answer only."""
    with context.write() as session:
        clients.require_active(session, client)
        try:
            created = webhooks.create_endpoint(
                session,
                client_id=client,
                url=body.url,
                events=body.events,
                gateway=context.gateway,
                keyring=context.keyring,
                audit=context.audit,
                actor=principal.actor,
                now=context.clock(),
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc), code="invalid_webhook") from None
    return WebhookCreated(**_public(created.endpoint).model_dump(), secret=created.secret)


@router.get("/clients/{client}/webhooks")
def list_webhooks(
    client: str, context: Context, principal: ClientAdmin
) -> dict[str, list[WebhookPublic]]:
    """The client's webhook endpoints (never their secrets)."""
    with context.read() as session:
        clients.get_client(session, client)
        return {"items": [_public(e) for e in webhooks.list_endpoints(session, client_id=client)]}


@router.delete("/clients/{client}/webhooks/{webhook_id}")
def delete_webhook(
    client: str, webhook_id: str, context: Context, principal: ClientAdmin
) -> WebhookPublic:
    """Delete a webhook endpoint: its secret is destroyed, and what still waited for it dropped."""
    with context.write() as session:
        deleted = webhooks.delete_endpoint(
            session,
            client_id=client,
            endpoint_id=webhook_id,
            audit=context.audit,
            actor=principal.actor,
            now=context.clock(),
        )
    if deleted is None:
        raise NotFound(f"no webhook {webhook_id}")
    return _public(deleted)

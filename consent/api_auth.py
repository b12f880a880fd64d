"""Authentication and authorization at the HTTP edge: bearer token → Principal, role checks.

Every route takes its caller through one of these dependencies; none checks a key
or a role by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Header
from fastapi.dependencies.models import Dependant
from sqlmodel import Session

from consent import apikeys
from consent.api_context import ApiContext, Context
from consent.apikeys import Principal, Role
from consent.errors import ConsentError, NotFound, PermissionDenied, Unauthenticated

__all__ = [
    "Admin",
    "Caller",
    "ClientGuard",
    "DeferredGuard",
    "Guard",
    "Integrator",
    "RoleGuard",
    "allow",
    "allow_client",
    "authenticate",
    "bearer_token",
    "checked_by_route",
    "guards_of",
    "principal_of",
    "tenant_of",
]


def authenticate(
    context: Context, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """The caller behind ``Authorization: Bearer <key>``."""
    token = bearer_token(authorization)
    with context.read() as session:
        return principal_of(session, context, token)


def bearer_token(authorization: str | None) -> str:
    """The key in an ``Authorization`` header; Unauthenticated without one."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing api key: send 'Authorization: Bearer <key>'")
    return token.strip()


def principal_of(session: Session | sa.Connection, context: ApiContext, token: str) -> Principal:
    """The principal behind ``token``, read in the caller's transaction."""
    return apikeys.authenticate(
        session, token, pepper=context.key_pepper, bootstrap_admin_key=context.admin_key
    )


Caller = Annotated[Principal, Depends(authenticate)]


class Guard:
    """Which roles a route lets through; FastAPI calls a subclass as the route's dependency.

    ``admit`` is the check itself, for a principal already known. ``refusal`` runs the
    whole of it from the raw header, for the edge to answer 401/403/404 before it says
    anything about a body it could not parse: who may ask comes before what was asked.
    """

    def __init__(self, roles: frozenset[Role]) -> None:
        self.roles = roles

    def admit(self, principal: Principal, path_params: Mapping[str, str]) -> Principal:
        if principal.role not in self.roles:
            raise PermissionDenied(f"the {principal.role} role may not do this")
        return principal

    def refusal(
        self, context: ApiContext, authorization: str | None, path_params: Mapping[str, str]
    ) -> ConsentError | None:
        """The error this caller gets here, or None if it may go on (blocking: database)."""
        try:
            token = bearer_token(authorization)
            with context.read() as session:
                self.admit(principal_of(session, context, token), path_params)
        except ConsentError as refused:
            return refused
        return None


class RoleGuard(Guard):
    def __call__(self, principal: Caller) -> Principal:
        return self.admit(principal, {})


class ClientGuard(Guard):
    """For routes under ``/v1/clients/{client}``.

    A key bound to another client gets 404, exactly as for a client that does not
    exist, so that client ids do not leak.
    """

    def admit(self, principal: Principal, path_params: Mapping[str, str]) -> Principal:
        super().admit(principal, path_params)
        client = path_params.get("client")
        if principal.client_id is not None and principal.client_id != client:
            raise NotFound(f"no client {client}")
        return principal

    def __call__(self, client: str, principal: Caller) -> Principal:
        return self.admit(principal, {"client": client})


class DeferredGuard(Guard):
    """Names the roles of a route that checks the key itself (the call hook checks it in
    the transaction of its decision); the check here is only ``refusal``'s."""

    async def __call__(self) -> None:
        return None


def guards_of(dependant: Dependant) -> list[Guard]:
    """The guards among a route's dependencies, at any depth."""
    found = [dependant.call] if isinstance(dependant.call, Guard) else []
    for sub in dependant.dependencies:
        found += guards_of(sub)
    return found


def _roles(roles: tuple[Role, ...], admin: bool) -> frozenset[Role]:
    return frozenset({Role.ADMIN, *roles} if admin else roles)


def allow(*roles: Role, admin: bool = True) -> RoleGuard:
    """A dependency that lets through the given roles, and admins unless ``admin=False``
    (403 for the rest)."""
    return RoleGuard(_roles(roles, admin))


def allow_client(*roles: Role) -> ClientGuard:
    """Like ``allow``, for routes under ``/v1/clients/{client}``."""
    return ClientGuard(_roles(roles, True))


def checked_by_route(*roles: Role) -> DeferredGuard:
    """For a route that checks the key itself, with these roles (no admins)."""
    return DeferredGuard(frozenset(roles))


def tenant_of(principal: Principal) -> str:
    """The client a client-bound key acts for."""
    if principal.client_id is None:
        raise PermissionDenied("this route needs a key bound to a client")
    return principal.client_id


Admin = Annotated[Principal, Depends(allow())]
# The call routes act as one client's telephony platform: a key bound to that client,
# never an admin's (docs/http-api.md, Roles).
Integrator = Annotated[Principal, Depends(allow(Role.INTEGRATOR, admin=False))]

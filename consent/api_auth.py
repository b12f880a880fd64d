"""Authentication and authorization at the HTTP edge: bearer token → Principal, role checks.

Every route takes its caller through one of these dependencies; none checks a key
or a role by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Header
from sqlmodel import Session

from consent import apikeys
from consent.api_context import ApiContext, Context
from consent.apikeys import Principal, Role
from consent.errors import NotFound, PermissionDenied, Unauthenticated

__all__ = [
    "Admin",
    "Caller",
    "Integrator",
    "allow",
    "allow_client",
    "authenticate",
    "bearer_token",
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

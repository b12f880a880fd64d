"""Call control over HTTP: pause, resume, opt-out and end of a decided call.

Composed here, above the layers it joins: an opt-out changes the call's state
(consent) and purges what was already kept of the call (retention).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from consent import calls
from consent.api_auth import Integrator, tenant_of
from consent.api_calls import CallStatePublic
from consent.api_context import Context
from retention.api import Store
from retention.opt_out import opt_out
from retention.purge import Purger

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["calls"])


@router.post("/calls/{call_id}/{action}")
def call_action(
    call_id: str,
    action: Literal["pause", "resume", "opt-out", "end"],
    context: Context,
    store: Store,
    principal: Integrator,
) -> CallStatePublic:
    """Pause (leaves silence), resume, opt out (stops; what was kept of the call is
    purged) or end a call."""
    client_id, now = tenant_of(principal), context.clock()
    with context.write() as session:
        if action == "opt-out":
            purger = Purger(
                engine=context.engine, store=store, keyring=context.keyring, audit=context.audit
            )
            row = opt_out(
                session,
                client_id=client_id,
                call_id=call_id,
                purger=purger,
                actor=principal.actor,
                audit=context.audit,
                now=now,
            )
        else:
            row = calls.change_state(
                session,
                client_id=client_id,
                call_id=call_id,
                action=action,
                actor=principal.actor,
                audit=context.audit,
                now=now,
            )
        return CallStatePublic(call_id=row.call_id, state=row.state)

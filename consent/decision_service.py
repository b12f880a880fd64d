"""The consent decision as a service: every source of calls asks here.

The call hook, WHIP and SIPREC each bring the client, the call's facts (their
``channel`` names the source), who asks and ``now``; the decision is persisted and
audited with the other call setups of the moment through the group commit. No HTTP
and no API key here: each edge checks its caller itself, the call hook in the same
transaction by wrapping ``work`` in a work of its own and handing that to ``run``.

Fail closed: if the consent data cannot be read or written, the answer is "do not
record" (``consent_unavailable``), never an error a platform might take for a yes.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TypeAlias, TypeVar

import sqlalchemy as sa

from consent import calls
from consent.calls import CallRequest
from consent.decision import unavailable
from consent.decisions import CallState, DecisionView
from consent.reader import ConsentReader
from storage.audit import AuditEntry
from storage.errors import DatabaseUnavailable
from storage.group_commit import GroupCommit, Work

__all__ = ["DecisionService", "Jurisdictions", "unavailable_view"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# (caller's, callee's) jurisdiction; None: unknown, so all-party.
Jurisdictions: TypeAlias = tuple[str | None, str | None]

# What fails when the consent data cannot be read or written.
_UNAVAILABLE = (sa.exc.SQLAlchemyError, DatabaseUnavailable)


class DecisionService:
    """Decides calls for every source; one per process (its reader holds the caches)."""

    def __init__(
        self, *, group_commit: GroupCommit, reader: ConsentReader, phone_key: bytes
    ) -> None:
        self._group_commit = group_commit
        self._reader = reader
        self._phone_key = phone_key

    def work(
        self,
        *,
        client_id: str,
        call: CallRequest,
        actor: str,
        now: datetime,
        jurisdictions: Jurisdictions | None = None,
    ) -> Work[DecisionView]:
        """The decision as one work for the group commit (blocking: database).

        ``jurisdictions`` (caller's, callee's), when given, replaces the request's
        one jurisdiction for both parties (``consent.calls.ask``).
        """

        def decide(connection: sa.Connection, events: list[AuditEntry]) -> DecisionView:
            return calls.ask(
                connection,
                client_id=client_id,
                request=call,
                phone_key=self._phone_key,
                reader=self._reader,
                actor=actor,
                events=events,
                now=now,
                jurisdictions=jurisdictions,
            )

        return decide

    async def decide(
        self,
        *,
        client_id: str,
        call: CallRequest,
        actor: str,
        now: datetime,
        jurisdictions: Jurisdictions | None = None,
    ) -> DecisionView:
        """Decide ``call``, committed with the other call setups waiting at the moment."""
        work = self.work(
            client_id=client_id, call=call, actor=actor, now=now, jurisdictions=jurisdictions
        )
        return await self.run(call, work)

    def decide_alone(
        self,
        *,
        client_id: str,
        call: CallRequest,
        actor: str,
        now: datetime,
        jurisdictions: Jurisdictions | None = None,
    ) -> DecisionView:
        """Decide ``call`` in a transaction of its own, on the caller's thread."""
        work = self.work(
            client_id=client_id, call=call, actor=actor, now=now, jurisdictions=jurisdictions
        )
        return self.run_alone(call, work)

    async def run(self, call: CallRequest, work: Work[T]) -> T | DecisionView:
        """Run a work that decides ``call`` in the next group; fails closed."""
        try:
            return await self._group_commit.run(work)
        except _UNAVAILABLE:
            return unavailable_view(call)

    def run_alone(self, call: CallRequest, work: Work[T]) -> T | DecisionView:
        """Like ``run``, in a transaction of its own on the caller's thread."""
        try:
            return self._group_commit.run_alone(work)
        except _UNAVAILABLE:
            return unavailable_view(call)


def unavailable_view(call: CallRequest, client_id: str = "") -> DecisionView:
    """The answer when consent cannot be read: record nothing (nothing is persisted)."""
    # Consent that cannot be read is consent that was not given.
    log.error("consent unavailable for call %s: answering do-not-record", call.call_id)
    decision = unavailable()
    return DecisionView(
        id="",
        client_id=client_id,
        call_id=call.call_id,
        channel=call.channel,
        record=False,
        reason=decision.reason,
        purposes="{}",
        grant_id=None,
        grant_version=None,
        rule=decision.rule,
        rule_jurisdiction=None,
        announcement_required=False,
        awaiting_caller_consent=False,
        state=CallState.OPEN,
    )

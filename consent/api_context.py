"""The app context: what every route needs, built once by the app (no globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from consent.decision_service import DecisionService
from consent.reader import ConsentReader
from storage.audit import AuditLog
from storage.db import session_scope
from storage.group_commit import GroupCommit
from storage.keyring import Keyring
from storage.webhooks import Gateway

__all__ = ["ApiContext", "Context", "get_context"]


@dataclass
class ApiContext:
    """What the routes need, built once by the app: no globals."""

    engine: Engine
    audit: AuditLog
    keyring: Keyring
    clock: Callable[[], datetime]
    admin_key: str | None = None
    sip_uri_host: str = "127.0.0.1:5080"
    # Where this gateway's HTTP listens: webhooks may not point back at it.
    gateway: Gateway = field(default_factory=lambda: Gateway("127.0.0.1", 8080))
    # Per-process caches of what decisions read; see consent.reader for why they hold.
    consent_reader: ConsentReader = field(default_factory=ConsentReader)
    # Where call setups' writes are committed together; ``close()`` stops its thread.
    group_commit: GroupCommit = field(init=False)
    # The consent decision, for every source of calls (call hook, WHIP, SIPREC).
    decisions: DecisionService = field(init=False)

    def __post_init__(self) -> None:
        self.group_commit = GroupCommit(self.engine, self.audit, self.clock)
        self.decisions = DecisionService(
            group_commit=self.group_commit, reader=self.consent_reader, phone_key=self.phone_key
        )

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

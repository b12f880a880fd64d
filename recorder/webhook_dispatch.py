"""Delivers the webhook outbox: signed POSTs to each client's endpoints, retried until a day old.

The outbox has two halves. An event is durable in the audit log once its own
transaction commits, and that transaction does nothing else for webhooks. Each pass of
the dispatcher first fans out what the log gained since the last pass (storage.webhook_fanout:
one row per event and subscribed endpoint, written with the cursor's move in one
transaction), then claims due rows, sends them and records the outcomes. A dispatcher
that was down, or that dies between fan-out and delivery, loses nothing: the events
wait in the log, the rows in the outbox.

Every replica runs one dispatcher. Their fan-outs take turns on the cursor (locked on
PostgreSQL; SQLite has one writer); they share deliveries through leases on the outbox
rows (storage.outbox), so one delivery is sent by one of them at a time and a replica
that dies mid-send leaves its rows to the others when the lease ends. A delivery is
done on a 2xx answer; anything else (refused, a timeout, another status) is tried
again after the next step of ``backoff`` until the event is ``max_age`` old, and is
then dead: the retention report shows it.

The dispatcher wakes at once when an event that may carry a webhook commits on this
gateway (storage.audit_feed) and polls for the rest: events committed by other
processes, and retries falling due. Webhooks never hold up a caller: the caller's
transaction only wrote its audit event, as it always does.

Each request carries the Standard Webhooks headers: ``webhook-id`` (the delivery's id,
the same on every retry), ``webhook-timestamp`` (this attempt's Unix time, from the
wall clock: receivers refuse stale ones) and ``webhook-signature``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import h11
from sqlalchemy.engine import Engine
from sqlmodel import Session

from recorder.webhook_http import Poster, PostError
from storage import audit_feed, outbox, webhook_fanout, webhooks
from storage.audit_feed import FedEvent
from storage.db import connection_scope
from storage.errors import StorageError
from storage.keyring import Keyring
from storage.webhook_events import SOURCE_KINDS

log = logging.getLogger(__name__)

# Seconds before the 2nd, 3rd… attempt; the last step repeats until the event is too old.
DEFAULT_BACKOFF = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0)
_USER_AGENT = "callrec-webhooks/1"


class WebhookDispatcher:
    """Claims due deliveries in batches, sends a batch concurrently, records the outcomes."""

    def __init__(
        self,
        *,
        engine: Engine,
        keyring: Keyring,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        wall: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
        max_age_s: float = 86400.0,
        concurrency: int = 64,
        poll_s: float = 1.0,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
    ) -> None:
        if not backoff:
            raise ValueError("backoff needs at least one step")
        self._engine = engine
        self._keyring = keyring
        self._clock = clock
        self._wall = wall
        self._timeout_s = timeout_s
        self._max_age = timedelta(seconds=max_age_s)
        self._concurrency = concurrency
        self._poll_s = poll_s
        self._backoff = tuple(backoff)
        # A delivery's lease outlives its attempt: the request's timeout, and room to
        # record the outcome.
        self._lease = timedelta(seconds=2 * timeout_s + 30)
        self._secrets: dict[str, bytes] = {}  # endpoint id → secret (they never change)
        self._http: Poster | None = None
        self._task: asyncio.Task[None] | None = None
        self._heard: audit_feed.Watcher | None = None
        # The last batch's outcomes, recorded while the next batch goes out.
        self._settling: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._behind = False  # the last fan-out left events for the next
        self.delivered = 0
        self.failed = 0

    async def start(self) -> None:
        self._wake = asyncio.Event()
        # Redirects are not followed: a 3xx is the receiver's answer, and not a 2xx.
        self._http = Poster(
            timeout_s=self._timeout_s, max_connections=self._concurrency, user_agent=_USER_AGENT
        )
        loop, wake = asyncio.get_running_loop(), self._wake

        def heard(events: Sequence[FedEvent]) -> None:
            # In the committing thread: a webhook's event was just committed here.
            if any(e.kind in SOURCE_KINDS for e in events):
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(wake.set)

        self._unwatch()  # a second start replaces the first's (its loop may be gone)
        audit_feed.watch(self._engine, heard)
        self._heard = heard
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Stop sending; what was in flight is leased and sent again later (at least once)."""
        self._unwatch()
        if self._task is not None:
            self._task.cancel()
            if self._task.get_loop() is asyncio.get_running_loop():
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self._settled()
        except Exception:  # its rows' leases end, and they are sent again
            log.exception("webhook dispatcher: recording the last outcomes")
        if self._http is not None:
            with contextlib.suppress(RuntimeError):  # its loop is gone (see LiveCaptures.stop)
                await self._http.close()
            self._http = None

    def _unwatch(self) -> None:
        if self._heard is not None:
            audit_feed.unwatch(self._engine, self._heard)
            self._heard = None

    def wake(self) -> None:
        """Look for due deliveries now (from the event loop's thread)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                sent = await self.run_once()
                if sent < self._concurrency:
                    await self._settled()  # recorded before the loop waits
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be away: try again at the next poll
                log.exception("webhook dispatcher")
                sent = 0
            if sent >= self._concurrency or self._behind:
                continue  # a full batch, or events left to fan out: more may be due at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def run_once(self) -> int:
        """Send one batch of due deliveries; return how many were attempted."""
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._send(item, secret) for item, secret in claimed))
        await self._settled()  # one batch's outcomes at a time
        # Its rows stay leased until then: no claim takes them meanwhile.
        self._settling = asyncio.ensure_future(asyncio.to_thread(self._settle, outcomes))
        return len(claimed)

    async def _settled(self) -> None:
        """Wait until the last batch's outcomes are recorded."""
        settling, self._settling = self._settling, None
        if settling is not None:
            await settling

    def _claim(self) -> list[tuple[outbox.Claimed, bytes | None]]:
        now = self._clock()
        # Reads first: most polls find nothing, and need no write lock to say so.
        with self._engine.connect() as connection:
            behind = webhook_fanout.behind(connection)
            due = outbox.any_due(connection, now=now)
        self._behind = False
        if behind:  # one batch a pass, so that sending goes on during a long catch-up
            with connection_scope(self._engine) as connection:
                written, self._behind = webhook_fanout.fan_out(connection, now=now)
            due = due or written > 0
        if not due:
            return []
        with connection_scope(self._engine) as connection:
            claimed = outbox.claim(connection, now=now, limit=self._concurrency, lease=self._lease)
        missing = {c.endpoint_id for c in claimed} - set(self._secrets)
        if missing:
            with Session(self._engine) as session:
                for endpoint_id in missing:
                    try:
                        secret = webhooks.secret_of(session, self._keyring, endpoint_id=endpoint_id)
                    except StorageError as exc:  # the client's key is destroyed
                        log.warning("webhook endpoint %s cannot sign: %s", endpoint_id, exc)
                        continue
                    if secret is not None:
                        self._secrets[endpoint_id] = secret
        return [(c, self._secrets.get(c.endpoint_id)) for c in claimed]

    async def _send(self, item: outbox.Claimed, secret: bytes | None) -> outbox.Outcome:
        assert self._http is not None
        error: str | None
        if secret is None:
            error = "the endpoint's secret is gone (endpoint deleted or client offboarded)"
        else:
            body = item.body.encode()
            timestamp = int(self._wall())
            headers = {
                "content-type": "application/json",
                "webhook-id": item.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": outbox.signature(
                    secret, message_id=item.id, timestamp=timestamp, body=body
                ),
            }
            try:
                status = await self._http.post(item.url, body, headers)
            except TimeoutError:
                error = f"no answer within {self._timeout_s:g} s"
            except (PostError, OSError, h11.ProtocolError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                error = None if 200 <= status < 300 else f"HTTP {status}"
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            log.info("webhook %s to endpoint %s failed: %s", item.id, item.endpoint_id, error)
        return outbox.Outcome(item.id, item.attempts, item.created_at, error)

    def _settle(self, outcomes: Sequence[outbox.Outcome]) -> None:
        with connection_scope(self._engine) as connection:
            outbox.settle(
                connection,
                outcomes,
                now=self._clock(),
                backoff=self._backoff,
                max_age=self._max_age,
            )

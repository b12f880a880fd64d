"""Consent decisions per second, against a bare client look-up in the same run.

10,000 clients with 10 grants each (mixed scopes, purposes and windows, some revoked,
expired or not yet valid, a few clients with no live grant at all, some objections)
and 200,000 seeded random calls, all built before timing. Ours: look the client up
and decide(). Baseline: the same loop calling a function that only looks the client
up. Median of several interleaved runs; the target is at least 20,000 decisions/s.
"""

from __future__ import annotations

import gc
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from consent.decision import decide
from consent.domain import (
    CallFacts,
    Channel,
    ClientConsent,
    Decision,
    Direction,
    Grant,
    Notice,
    Reason,
)
from consent.jurisdiction import DEFAULT_RULES, RuleBook

CLIENTS = 10_000
GRANTS_PER_CLIENT = 10
CALLS = 200_000
RUNS = 3
TARGET = 20_000.0
SEED = 20261128
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)

PURPOSES = ("research", "improvement", "optimization")
# Mostly jurisdictions from the book, some unknown to it, some not known at all.
JURISDICTIONS = ("US-NY", "US-TX", "GB", "US-CA", "MA", "FR", "US-WA", "ZZ", None)
JURISDICTION_WEIGHTS = (30, 15, 15, 10, 10, 5, 5, 2, 8)
PHONES = 50_000

T = TypeVar("T")
Loop = Callable[[dict[str, ClientConsent], str, CallFacts, RuleBook, datetime], object]


def _subset(rng: random.Random, items: tuple[T, ...], full: float) -> frozenset[T]:
    """All of ``items`` with probability ``full``, otherwise a random non-empty part."""
    if rng.random() < full:
        return frozenset(items)
    return frozenset(rng.sample(items, rng.randint(1, len(items))))


def _grant(rng: random.Random, client_id: str, index: int, fate: str) -> Grant:
    """One grant; ``fate`` forces it revoked, expired or future for the whole client."""
    if fate == "future" or rng.random() < 0.05:
        valid_from = NOW + timedelta(days=rng.randint(1, 30))  # not yet in force
    else:
        valid_from = NOW - timedelta(days=rng.randint(1, 700))
    valid_until = None
    if fate == "expired":
        valid_from = NOW - timedelta(days=rng.randint(400, 700))
        valid_until = valid_from + timedelta(days=rng.randint(30, 399))
    elif rng.random() < 0.4:
        valid_until = valid_from + timedelta(days=rng.randint(30, 900))  # some have ended
    revoked_at = None
    if fate == "revoked" or rng.random() < 0.05:
        revoked_at = NOW - timedelta(days=rng.randint(0, 100))
    return Grant(
        id=f"{client_id}-g{index}",
        version=rng.randint(1, 5),
        purposes=_subset(rng, PURPOSES, 0.3),
        directions=_subset(rng, tuple(Direction), 0.7),
        channels=_subset(rng, tuple(Channel), 0.6),
        notice=rng.choice((Notice.ANNOUNCEMENT, Notice.CONTRACT)),
        notice_version="v1",
        valid_from=valid_from,
        valid_until=valid_until,
        revoked_at=revoked_at,
    )


def _clients(rng: random.Random, phones: list[str]) -> dict[str, ClientConsent]:
    clients: dict[str, ClientConsent] = {}
    for n in range(CLIENTS):
        client_id = f"client-{n}"
        objections = frozenset(rng.sample(phones, 5)) if rng.random() < 0.05 else frozenset()
        # A few clients whose every grant has been revoked, has run out or is to come.
        fate = rng.choices(("mixed", "revoked", "expired", "future"), (97, 1, 1, 1))[0]
        clients[client_id] = ClientConsent(
            client_id=client_id,
            active=rng.random() < 0.98,
            grants=tuple(_grant(rng, client_id, i, fate) for i in range(GRANTS_PER_CLIENT)),
            retention_days={p: rng.randint(7, 365) for p in PURPOSES},
            objections=objections,
        )
    return clients


def _calls(
    rng: random.Random, clients: dict[str, ClientConsent], phones: list[str]
) -> list[tuple[str, CallFacts]]:
    ids = list(clients)
    calls: list[tuple[str, CallFacts]] = []
    for n in range(CALLS):
        client_id = rng.choice(ids) if rng.random() < 0.99 else f"gone-{n}"
        participants = (rng.choice(phones), rng.choice(phones))
        known = clients.get(client_id)
        if known is not None and known.objections and rng.random() < 0.3:
            participants = (participants[0], next(iter(known.objections)))
        jurisdictions = tuple(rng.choices(JURISDICTIONS, JURISDICTION_WEIGHTS, k=2))
        purposes = None if rng.random() < 0.5 else _subset(rng, PURPOSES, 0.1)
        facts = CallFacts(
            call_id=f"call-{n}",
            direction=rng.choice(tuple(Direction)),
            channel=rng.choice(tuple(Channel)),
            participants=participants,
            jurisdictions=jurisdictions,
            purposes=purposes,
        )
        calls.append((client_id, facts))
    return calls


def _decide(
    clients: dict[str, ClientConsent],
    client_id: str,
    call: CallFacts,
    rules: RuleBook,
    now: datetime,
) -> Decision:
    return decide(clients.get(client_id), call, rules, now)


def _lookup_only(
    clients: dict[str, ClientConsent],
    client_id: str,
    call: CallFacts,
    rules: RuleBook,
    now: datetime,
) -> ClientConsent | None:
    return clients.get(client_id)


def _seconds(
    loop: Loop,
    clients: dict[str, ClientConsent],
    calls: list[tuple[str, CallFacts]],
    rules: RuleBook,
) -> float:
    gc.collect()
    started = time.perf_counter()
    for client_id, call in calls:
        loop(clients, client_id, call, rules, NOW)
    return time.perf_counter() - started


def run() -> dict[str, float]:
    rng = random.Random(SEED)
    phones = [hashlib.sha256(b"%d" % n).hexdigest()[:32] for n in range(PHONES)]
    clients = _clients(rng, phones)
    calls = _calls(rng, clients, phones)
    rules = RuleBook(DEFAULT_RULES)
    grants = sum(len(c.grants) for c in clients.values())

    # An untimed round first: it warms up and shows which outcomes the calls reach.
    mix = Counter(_decide(clients, cid, call, rules, NOW).reason for cid, call in calls)
    ours: list[float] = []
    base: list[float] = []
    for _ in range(RUNS):
        ours.append(_seconds(_decide, clients, calls, rules))
        base.append(_seconds(_lookup_only, clients, calls, rules))
    our_rate = CALLS / sorted(ours)[RUNS // 2]
    base_rate = CALLS / sorted(base)[RUNS // 2]
    ratio = our_rate / base_rate

    shares = ", ".join(f"{r.value} {mix[r] * 100 / CALLS:.1f}%" for r in Reason if mix[r])
    print(f"consent decide: {len(clients)} clients, {grants} grants, {CALLS} calls")
    print(f"consent decide: outcomes {shares}")
    print(f"consent decide: client look-up only {base_rate:,.0f} calls/s (baseline)")
    print(f"consent decide: decide()            {our_rate:,.0f} decisions/s")
    print(f"consent decide: ratio ours/baseline = {ratio:.3f}")
    print(f"consent decide: target >= {TARGET:,.0f} decisions/s: {our_rate / TARGET:.1f}x")
    return {
        "decisions_per_s": our_rate,
        "baseline_per_s": base_rate,
        "ratio": ratio,
        "target_per_s": TARGET,
    }


if __name__ == "__main__":
    run()

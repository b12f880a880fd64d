"""Webhooks: what a subscribed endpoint costs two real operations, each with and without one.

(c) The call hook's throughput, the goal's own words. Served as ``bench.call_hook``
serves it (the production app over a real SeaweedFS, uvicorn in a thread, the load
from a spawned process over keep-alive connections), with two clients alike but for
one thing: ``subscribed`` has an endpoint subscribed to every event type, ``quiet``
has none. Closed loop on ``CONNECTIONS`` connections, the two taking turns (order
alternating) for ``HOOK_ROUNDS`` rounds of ``HOOK_SECONDS`` after a warm-up; median
rate and server CPU per request of each. Ratio = subscribed / quiet.

(d) A recording stored, an operation that emits a webhook event (``recording.stored``):
``Vault.store`` of a small recording, the whole store path (catalog row, data key,
encrypted upload with tags to SeaweedFS, and the transaction that marks it stored and
appends the event), for each client in chunks taking turns; median over the rounds of
this process's CPU per store (boto3 included; SeaweedFS runs in its own process).

Each on a database of its own: SQLite in a temporary folder, or a PostgreSQL one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2 as httpx

from bench import call_hook
from bench.call_hook import Measure, Target
from bench.harness import bench_setup, draft, now
from storage.webhook_events import EVENT_TYPES

QUIET, SUBSCRIBED = "quiet", "subscribed"
# Never sent anywhere: nothing listens on port 9 (discard) of a documentation address.
NOWHERE = "http://192.0.2.1:9/never"
HOOK_SECONDS = 4.0
HOOK_ROUNDS = 7
STORES = 100  # per client and round
STORE_CHUNK = 10
STORE_ROUNDS = 3
STORE_BYTES = 16 * 1024


# --- (c) the call hook ---------------------------------------------------------------


async def _drive_hooks(targets: dict[str, Target]) -> dict[str, list[Measure]]:
    measures: dict[str, list[Measure]] = {name: [] for name in targets}
    for round_ in range(HOOK_ROUNDS + 1):  # round 0 warms up and is dropped
        seconds = HOOK_SECONDS if round_ else call_hook.WARMUP_SECONDS
        names = list(targets) if round_ % 2 else list(reversed(targets))
        for name in names:
            tag = f"r{round_}{name}"
            measure = await call_hook.closed_loop(targets[name], call_hook.HOOK, tag, seconds)
            if round_:
                measures[name].append(measure)
    return measures


def _load_process(targets: dict[str, Target], results: Any) -> None:
    try:
        results.put(asyncio.run(_drive_hooks(targets)))
    except Exception as exc:
        results.put(RuntimeError(f"load generator failed: {exc!r}"))
        raise


def _drive_in_child(targets: dict[str, Target]) -> dict[str, list[Measure]]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_load_process, args=(targets, results), daemon=True)
    child.start()
    budget = 2 * (HOOK_ROUNDS + 1) * len(targets) * HOOK_SECONDS + 60
    try:
        outcome: dict[str, list[Measure]] | Exception = results.get(timeout=budget)
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def hook_cost(database_url: str | None) -> dict[str, tuple[float, float]]:
    """Per client: median hook answers per second and server CPU seconds per answer."""
    admin_key = "admin-" + secrets.token_urlsafe(24)
    with (
        tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp,
        call_hook.served_app(Path(tmp), admin_key, database_url=database_url) as port,
    ):
        targets = {
            name: Target(port, call_hook.make_tenant(port, admin_key, name))
            for name in (QUIET, SUBSCRIBED)
        }
        with httpx.Client(base_url=f"http://{call_hook.HOST}:{port}", timeout=10) as http:
            http.post(
                f"/v1/clients/{SUBSCRIBED}/webhooks",
                json={"url": NOWHERE, "events": list(EVENT_TYPES)},
                headers={"Authorization": f"Bearer {admin_key}"},
            ).raise_for_status()
        measures = _drive_in_child(targets)
    failed = sum(m.failed for ms in measures.values() for m in ms)
    if failed:
        raise RuntimeError(f"{failed} hook answers were errors or did not record")
    return {
        name: (
            statistics.median(m.rate for m in ms),
            statistics.median(m.cpu_per_request for m in ms),
        )
        for name, ms in measures.items()
    }


# --- (d) a recording stored -----------------------------------------------------------


def store_cost(database_url: str | None) -> dict[str, tuple[float, float]]:
    """Per client: median wall and CPU seconds per ``Vault.store`` of a small recording."""
    from bench.webhooks import subscribe  # that module runs this one

    data = os.urandom(STORE_BYTES)
    with (
        tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp,
        bench_setup(Path(tmp), database_url=database_url) as b,
    ):
        subscribe(b.engine, b.keyring, b.audit, SUBSCRIBED, NOWHERE)

        def stores(client: str, tag: str, count: int) -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(count):
                b.vault.store(replace(draft(f"{tag}-{i}"), client_id=client), [data], now=now())
            return time.perf_counter() - wall, time.process_time() - cpu

        for client in (QUIET, SUBSCRIBED):
            stores(client, "warm", STORE_CHUNK)
        samples: dict[str, list[tuple[float, float]]] = {QUIET: [], SUBSCRIBED: []}
        for round_ in range(STORE_ROUNDS):
            totals = dict.fromkeys(samples, (0.0, 0.0))
            for chunk in range(STORES // STORE_CHUNK):
                order = [QUIET, SUBSCRIBED] if (round_ + chunk) % 2 == 0 else [SUBSCRIBED, QUIET]
                for client in order:
                    wall, cpu = stores(client, f"r{round_}c{chunk}", STORE_CHUNK)
                    totals[client] = (totals[client][0] + wall, totals[client][1] + cpu)
            for client, (wall, cpu) in totals.items():
                samples[client].append((wall / STORES, cpu / STORES))
    return {
        name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
        for name, s in samples.items()
    }


def report(
    name: str, database: Callable[[], AbstractContextManager[str | None]]
) -> dict[str, float]:
    """Measure (c) and (d), each on a fresh ``database()`` (a URL, or None for SQLite in a
    temporary folder); print them; return the figures."""
    results: dict[str, float] = {}
    with database() as url:
        hooks = hook_cost(url)
    (quiet_rate, quiet_cpu), (sub_rate, sub_cpu) = hooks[QUIET], hooks[SUBSCRIBED]
    print(
        f"  {name}: call hook, {call_hook.CONNECTIONS} connections, median of {HOOK_ROUNDS} "
        f"rounds of {HOOK_SECONDS:g} s, the two clients taking turns"
    )
    for label, (rate, cpu) in (
        ("no endpoint", hooks[QUIET]),
        ("endpoint, all types", hooks[SUBSCRIBED]),
    ):
        print(f"    {label:22s} {rate:8,.0f} req/s  server CPU {cpu * 1000:.3f} ms/request")
    print(
        f"    subscribed / no endpoint: throughput {sub_rate / quiet_rate:.3f}, "
        f"CPU per request {sub_cpu / quiet_cpu:.3f} (goal: cost <= 1.10)"
    )
    results.update(
        {
            f"{name}_hook_rps_quiet": quiet_rate,
            f"{name}_hook_rps_subscribed": sub_rate,
            f"{name}_hook_cpu_ratio": sub_cpu / quiet_cpu,
        }
    )
    with database() as url:
        stored = store_cost(url)
    (quiet_wall, quiet_cpu), (sub_wall, sub_cpu) = stored[QUIET], stored[SUBSCRIBED]
    print(
        f"  {name}: Vault.store of {STORE_BYTES // 1024} KiB (emits recording.stored), "
        f"{STORES} per client and round, median of {STORE_ROUNDS} rounds"
    )
    for label, (wall, cpu) in (
        ("no endpoint", stored[QUIET]),
        ("endpoint, all types", stored[SUBSCRIBED]),
    ):
        print(f"    {label:22s} {wall * 1e3:8.2f} ms wall  {cpu * 1e3:8.2f} ms CPU per store")
    print(
        f"    subscribed / no endpoint: wall {sub_wall / quiet_wall:.3f}, "
        f"CPU {sub_cpu / quiet_cpu:.3f}"
    )
    results[f"{name}_store_cpu_ratio"] = sub_cpu / quiet_cpu
    return results

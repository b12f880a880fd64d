"""Call-hook throughput over real HTTP against a bare endpoint of the same server.

The server is the real thing: an embedded SeaweedFS and a SQLite catalog in a temp
dir, ``StorageBackend`` and ``create_app`` as in production, served by uvicorn on
127.0.0.1 in a thread of this process. The same app gets one extra route,
``POST /bench/bare``: a sync handler taking a small pydantic body and returning a
constant, so it crosses the same uvicorn, middleware, routing and body parsing as the
hook and nothing else. Both leave the event loop once: the bare route as any sync
route does (FastAPI runs the handler in a worker thread), the hook, an async route, by
handing its database work to the group commit's writer thread. A client, its keys
and a consent grant are set up over HTTP; every hook request is a new US-NY
(one-party) call that records.

The load comes from a separate process (spawned), so on a 2-core machine the client
does not take the server's core or its GIL. It is a minimal asyncio HTTP/1.1 client
on keep-alive connections: both routes get byte-identical requests but for the path.

- Throughput: ``CONNECTIONS`` closed-loop connections for ``SECONDS`` per measure,
  bare and hook interleaved (order alternating) over ``ROUNDS`` rounds after a short
  warm-up; median of each. Ratio = hook rate / bare rate (target >= 0.7). A hook
  answer counts only if it says ``"record":true``: the hook fails closed, and a fast
  refusal must not pass for throughput. The server's process CPU time is read
  (``GET /bench/cpu``) around each measure: CPU per request is the figure that the
  other jobs sharing this machine disturb least, and the load generator's own CPU
  per request shows that it is not the bottleneck.
- Latency: an open-loop schedule of ``RATE`` requests/s for ``LATENCY_SECONDS`` on
  the hook, preceded by one at half the hook's measured throughput (the latency of a
  server that keeps up, when it cannot keep up with ``RATE``). Latency runs from the
  scheduled send time, so waiting for a free connection (queueing, when the server
  falls behind) is counted, not hidden; a request still unanswered ``DRAIN_SECONDS``
  after the schedule ends counts as infinitely late.

The uvicorn here has neither uvloop nor httptools installed (asyncio loop, h11), as
in the project's virtualenv.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import uvicorn
from pydantic import BaseModel

from bench.harness import now
from recorder.app import create_app
from storage import crypto
from storage.backend import StorageBackend
from storage.embedded_s3 import EmbeddedS3
from storage.settings import Settings

HOST = "127.0.0.1"
CONNECTIONS = 16
SECONDS = 4.0
WARMUP_SECONDS = 1.0
ROUNDS = 3
RATE = 500.0
LATENCY_SECONDS = 8.0
LATENCY_POOL = 64
DRAIN_SECONDS = 15.0
TARGET_RATIO = 0.7
BARE = "/bench/bare"
HOOK = "/v1/calls"
CPU = "/bench/cpu"


class BarePing(BaseModel):
    call_id: str


@contextmanager
def served_app(workdir: Path, admin_key: str, *, database_url: str | None = None) -> Iterator[int]:
    """The production app plus the bare route, served by uvicorn; yields the port.

    The catalog is SQLite in ``workdir`` unless ``database_url`` names another.
    """
    access, secret = "bench" + secrets.token_hex(4), secrets.token_urlsafe(24)
    with EmbeddedS3(workdir / "s3", access_key_id=access, secret_access_key=secret) as s3:
        settings = Settings(
            data_dir=workdir / "data",
            database_url=database_url or f"sqlite:///{workdir / 'callrec.db'}",
            s3_endpoint_url=s3.endpoint_url,
            s3_access_key_id=access,
            s3_secret_access_key=secret,
            s3_bucket="bench",
            master_key=crypto.format_master_key(crypto.generate_key()),
            admin_key=admin_key,
            sip_port=0,  # ephemeral: the benchmark needs no SIPREC
        )
        backend = StorageBackend(settings)
        backend.start(now=now())
        try:
            app = create_app(backend)

            @app.post(BARE)
            def bare(body: BarePing) -> dict[str, str]:
                return {"status": "ok"}

            # Async, so that reading it does not queue behind the threadpool's work.
            @app.get(CPU)
            async def cpu() -> dict[str, float]:
                return {"cpu_s": time.process_time()}

            # uvicorn binds like `callrec serve` does (host and port), so accepted sockets
            # get TCP_NODELAY from asyncio; a socket passed in with proto 0 would not, and
            # Nagle's algorithm with delayed ACKs would add ~40 ms to every answer.
            config = uvicorn.Config(
                app, host=HOST, port=0, log_level="warning", access_log=False, lifespan="on"
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            try:
                deadline = time.monotonic() + 10
                while not server.started:
                    if not thread.is_alive() or time.monotonic() > deadline:
                        raise RuntimeError("uvicorn did not start")
                    time.sleep(0.01)
                port: int = server.servers[0].sockets[0].getsockname()[1]
                yield port
            finally:
                server.should_exit = True
                thread.join(timeout=10)
        finally:
            backend.stop()


def call_body(call_id: str) -> dict[str, str]:
    return {
        "call_id": call_id,
        "direction": "inbound",
        "from": "+212612345678",
        "to": "+212522000000",
        "channel": "upload",
        "jurisdiction": "US-NY",
    }


def make_tenant(port: int, admin_key: str, client_id: str = "bench") -> str:
    """Create a client, its keys and a grant over HTTP; return the integrator key."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10) as http:
        client = {"id": client_id, "name": client_id.title(), "country": "MA"}
        http.post("/v1/clients", json=client, headers=admin).raise_for_status()
        keys = {}
        for role in ("integrator", "client_admin"):
            path = f"/v1/clients/{client_id}/api-keys"
            response = http.post(path, json={"role": role}, headers=admin)
            keys[role] = response.raise_for_status().json()["key"]
        grant = {
            "purposes": ["research", "improvement"],
            "notice": "contract",
            "granted_by": "Bench DPO",
            "evidence": "bench contract",
        }
        headers = {"Authorization": f"Bearer {keys['client_admin']}"}
        path = f"/v1/clients/{client_id}/consents"
        http.post(path, json=grant, headers=headers).raise_for_status()
        headers = {"Authorization": f"Bearer {keys['integrator']}"}
        answer = http.post(HOOK, json=call_body("bench-check"), headers=headers)
        if not answer.raise_for_status().json()["record"]:
            raise RuntimeError(f"the setup call does not record: {answer.text}")
    return str(keys["integrator"])


# --- load generator (runs in its own process) -------------------------------------


@dataclass(frozen=True)
class Target:
    port: int
    key: str

    def request(self, path: str, call_id: str) -> bytes:
        body = json.dumps(call_body(call_id)).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Authorization: Bearer {self.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


@dataclass(frozen=True)
class Measure:
    rate: float  # correct answers per second
    cpu_per_request: float  # server process CPU seconds per request
    client_cpu_per_request: float  # the load generator's own CPU seconds per request
    failed: int


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough parsing for these answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return int(head[9:12]), await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def accepted(path: str, status: int, body: bytes) -> bool:
    return status == 200 and (path != HOOK or b'"record":true' in body)


async def server_cpu(connection: Connection, port: int) -> float:
    """CPU seconds the server process has used so far (all its threads)."""
    request = f"GET {CPU} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    _, body = await connection.exchange(request)
    return float(json.loads(body)["cpu_s"])


async def closed_loop(target: Target, path: str, tag: str, seconds: float) -> Measure:
    """Requests/s answered correctly over ``CONNECTIONS`` busy connections."""
    connections = [await Connection.open(target.port) for _ in range(CONNECTIONS)]
    counts = [0, 0]  # ok, failed
    cpu_before = await server_cpu(connections[0], target.port)
    client_before = time.process_time()

    async def worker(index: int, connection: Connection, deadline: float) -> None:
        sent = 0
        while time.perf_counter() < deadline:
            status, body = await connection.exchange(target.request(path, f"{tag}-{index}-{sent}"))
            counts[0 if accepted(path, status, body) else 1] += 1
            sent += 1

    started = time.perf_counter()
    workers = [worker(i, c, started + seconds) for i, c in enumerate(connections)]
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    cpu = await server_cpu(connections[0], target.port) - cpu_before
    for connection in connections:
        await connection.close()
    done = max(1, sum(counts))
    return Measure(counts[0] / elapsed, cpu / done, client_cpu / done, counts[1])


async def open_loop(target: Target, tag: str, rate: float) -> dict[str, float]:
    """The hook at a fixed ``rate``, regardless of answers; latency from schedule."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(LATENCY_POOL):
        pool.put_nowait(await Connection.open(target.port))
    latencies: list[float] = []
    failed = 0
    total = int(rate * LATENCY_SECONDS)
    start = time.perf_counter() + 0.05

    async def one(index: int, scheduled: float) -> None:
        nonlocal failed
        connection = await pool.get()
        try:
            status, body = await connection.exchange(target.request(HOOK, f"{tag}-{index}"))
        except (OSError, asyncio.IncompleteReadError):
            failed += 1
            return
        finally:
            pool.put_nowait(connection)
        latencies.append(time.perf_counter() - scheduled)
        failed += not accepted(HOOK, status, body)

    tasks = []
    late = 0.0
    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(late, -delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - start
    # Requests still unanswered when the drain ends count as infinitely late.
    ordered = sorted(latencies) + [float("inf")] * (total - len(latencies))
    while not pool.empty():
        await pool.get_nowait().close()
    return {
        "p50_s": ordered[len(ordered) // 2],
        "p99_s": ordered[int(len(ordered) * 0.99)],
        "achieved_rps": len(latencies) / elapsed,
        "unanswered": float(len(pending)),
        "failed": float(failed),
        "max_send_lag_s": late,
        "rate": rate,
    }


async def drive(target: Target) -> dict[str, Any]:
    measures: dict[str, list[Measure]] = {BARE: [], HOOK: []}
    for round_ in range(ROUNDS + 1):  # round 0 warms both routes up and is dropped
        seconds = SECONDS if round_ else WARMUP_SECONDS
        order = (BARE, HOOK) if round_ % 2 else (HOOK, BARE)
        for path in order:
            measure = await closed_loop(target, path, f"r{round_}{path[-4:]}", seconds)
            if round_:
                measures[path].append(measure)
    # First at half the hook's measured capacity (what an unhurried server answers in),
    # then at the target rate; in that order, so no backlog spills into the first.
    half = statistics.median(m.rate for m in measures[HOOK]) / 2
    latencies = [await open_loop(target, "half", half), await open_loop(target, "lat", RATE)]
    return {"bare": measures[BARE], "hook": measures[HOOK], "latency": latencies}


def load_process(target: Target, results: Any) -> None:
    try:
        results.put(asyncio.run(drive(target)))
    except Exception as exc:
        # Tell the parent at once instead of letting it wait out its whole budget.
        results.put(RuntimeError(f"load generator failed: {exc!r}"))
        raise


def drive_in_child(target: Target) -> dict[str, Any]:
    """Run the load from a spawned process (its own core and GIL); bounded in time."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=load_process, args=(target, results), daemon=True)
    child.start()
    budget = 2 * (ROUNDS * 2 * SECONDS + 2 * LATENCY_SECONDS) + 2 * DRAIN_SECONDS + 30
    try:
        outcome: dict[str, Any] | Exception = results.get(timeout=budget)
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds != float("inf") else "unanswered"


def run() -> dict[str, float]:
    admin_key = "admin-" + secrets.token_urlsafe(24)
    with (
        tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp,
        served_app(Path(tmp), admin_key) as port,
    ):
        outcome = drive_in_child(Target(port, make_tenant(port, admin_key)))
    figures: dict[str, tuple[float, float]] = {}
    print(f"call hook: {CONNECTIONS} keep-alive connections, {ROUNDS} rounds of {SECONDS:.0f} s")
    for name, key in (("bare endpoint  ", "bare"), ("POST /v1/calls ", "hook")):
        measures: list[Measure] = outcome[key]
        rate = statistics.median(m.rate for m in measures)
        cpu = statistics.median(m.cpu_per_request for m in measures)
        client = statistics.median(m.client_cpu_per_request for m in measures)
        figures[key] = rate, cpu
        rounds = ", ".join(f"{m.rate:,.0f}" for m in measures)
        print(
            f"call hook: {name} median {rate:,.0f} req/s ({rounds}); CPU per request: "
            f"server {cpu * 1000:.2f} ms, load generator {client * 1000:.2f} ms"
        )
        failed = sum(m.failed for m in measures)
        if failed:
            print(f"call hook: {name} {failed} answers were errors or did not record (not counted)")
    (bare, bare_cpu), (hook, hook_cpu) = figures["bare"], figures["hook"]
    ratio = hook / bare
    print(f"call hook: ratio hook/bare = {ratio:.2f} (target >= {TARGET_RATIO:.2f})")
    print(f"call hook: CPU ratio bare/hook = {bare_cpu / hook_cpu:.2f} (less sensitive to noise)")
    for latency in outcome["latency"]:
        rate, achieved = latency["rate"], latency["achieved_rps"]
        print(
            f"call hook at {rate:.0f} req/s open loop for {LATENCY_SECONDS:.0f} s: "
            f"p50 {milliseconds(latency['p50_s'])}, p99 {milliseconds(latency['p99_s'])}, "
            f"achieved {achieved:,.0f} req/s (sends at most "
            f"{latency['max_send_lag_s'] * 1000:.1f} ms behind schedule)"
        )
        if achieved < 0.95 * rate or latency["unanswered"] or latency["failed"]:
            print(
                f"call hook: the server did NOT sustain {rate:.0f} req/s "
                f"({latency['unanswered']:.0f} unanswered {DRAIN_SECONDS:.0f} s after the "
                f"schedule, {latency['failed']:.0f} failed): latency is mostly queueing"
            )
    half, latency = outcome["latency"]
    return {
        "bare_rps": bare,
        "hook_rps": hook,
        "ratio": ratio,
        "bare_cpu_ms": bare_cpu * 1000,
        "hook_cpu_ms": hook_cpu * 1000,
        "p50_ms": latency["p50_s"] * 1000,
        "p99_ms": latency["p99_s"] * 1000,
        "achieved_rps": latency["achieved_rps"],
        "half_rate_p50_ms": half["p50_s"] * 1000,
        "half_rate_p99_ms": half["p99_s"] * 1000,
    }


if __name__ == "__main__":
    run()

"""The HTTP application: composes every package's routes into one FastAPI app."""

from __future__ import annotations

import errno
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from consent import api as consent_api
from consent.api_auth import guards_of
from consent.api_context import ApiContext
from recorder import call_control, ice, recordings, whip
from recorder.errors import install_error_handlers
from recorder.live import LiveCaptures, LiveLimits
from recorder.metrics import DomainMetrics, LiveCollector
from recorder.openapi import install_openapi
from recorder.siprec.rtp import PortPool
from recorder.siprec.server import SiprecServer
from recorder.webhook_dispatch import WebhookDispatcher
from retention import api as retention_api
from retention import api_audit, api_evidence, api_packs
from storage.backend import StorageBackend
from storage.errors import ConfigError, StorageError
from storage.scratch import clear_leftovers
from storage.signing import signing_key
from storage.webhooks import Gateway


def create_app(
    backend: StorageBackend, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> FastAPI:
    """Build the app around a started storage backend."""
    settings = backend.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What exists now lives as long as the app. Frozen, it is out of the cyclic
        # collector's sight, whose full passes over it held call setups up for tens of
        # milliseconds (the p99 at 500 calls/s went from ~40 ms to ~7 ms). Garbage
        # frozen with it would be kept as long (and, unfrozen at shutdown, lands in the
        # oldest generation, collected late): collect it first.
        gc.collect()
        gc.freeze()
        await app.state.live.start()
        await app.state.webhooks.start()
        # A host may run the lifespan again while the first one lives (a second test
        # client on the same app): one SIP listener per app, stopped by the one that began it.
        siprec_here = not app.state.siprec.listening
        try:
            if siprec_here:
                await _start_siprec(app, settings.sip_host, settings.sip_port)
        except BaseException:
            await app.state.webhooks.stop()
            await app.state.live.stop()
            await run_in_threadpool(app.state.api_context.close)
            raise
        try:
            yield
        finally:
            gc.unfreeze()
            await app.state.webhooks.stop()
            # No new SIPREC call; the live ones are ended and stored before the gateway goes.
            if siprec_here:
                await app.state.siprec.stop()
            await app.state.live.stop()
            # Commits what call setups already submitted, then stops the writer thread.
            await run_in_threadpool(app.state.api_context.close)

    app = FastAPI(
        title="callrec",
        summary="Call-recording consent and retention pipeline",
        version="0.1.0",
        lifespan=lifespan,
        # Served by install_openapi from bundled assets: no CDN.
        docs_url=None,
        redoc_url=None,
    )
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    app.state.api_context = ApiContext(
        engine=backend.engine,
        audit=backend.audit,
        keyring=backend.keyring,
        clock=clock,
        admin_key=admin_key,
        sip_uri_host=f"{settings.sip_host}:{settings.sip_port}",
        gateway=Gateway(settings.http_host, settings.http_port),
    )
    # Read (or made) now: a CALLREC_SIGNING_KEY that cannot be used stops the start.
    app.state.signing_key = signing_key(settings)
    app.state.vault = backend.vault
    app.state.store = backend.store
    app.state.upload_max_bytes = settings.upload_max_bytes
    app.state.upload_max_duration_s = settings.upload_max_duration_s
    app.state.scratch_dir = settings.data_dir / "tmp"
    app.state.scratch_dir.mkdir(parents=True, exist_ok=True)
    clear_leftovers(app.state.scratch_dir)  # what a crash of an older version left there
    app.state.live = LiveCaptures(
        vault=backend.vault,
        engine=backend.engine,
        audit=backend.audit,
        clock=clock,
        limits=LiveLimits(
            max_sessions=settings.live_max_sessions,
            max_duration_s=settings.live_max_duration_s,
            media_timeout_s=settings.live_media_timeout_s,
        ),
    )
    app.state.webhooks = WebhookDispatcher(
        engine=backend.engine,
        keyring=backend.keyring,
        clock=clock,
        timeout_s=settings.webhook_timeout_s,
        max_age_s=settings.webhook_max_age_s,
        concurrency=settings.webhook_concurrency,
    )
    app.state.siprec = SiprecServer(
        live=app.state.live,
        decisions=app.state.api_context.decisions,
        engine=backend.engine,
        audit=backend.audit,
        clock=clock,
        media_host=settings.sip_host,
        ports=PortPool(*settings.rtp_port_range),
    )
    if settings.ice_addresses is not None:
        ice.use_ice_addresses(settings.ice_addresses)
    install_error_handlers(app)
    whip.install_cors(app)
    _install_metrics(app, backend, clock)
    app.include_router(consent_api.router)
    app.include_router(call_control.router)
    app.include_router(recordings.router)
    app.include_router(retention_api.router)
    app.include_router(api_audit.router)
    app.include_router(api_evidence.router)
    app.include_router(api_packs.router)
    app.include_router(whip.router)

    # Module-level endpoints, the app's parts reached through the request: FastAPI caches
    # what it learns about each endpoint for the life of the process, so an endpoint
    # closing over this app's backend would keep the backend (and a test's every app).
    app.state.backend = backend
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["ops"])
    app.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        tags=["ops"],
        responses={503: {"description": "not ready"}},
    )

    install_openapi(app, roles_of=roles_of)
    return app


def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database and S3 both answer."""
    backend: StorageBackend = request.app.state.backend
    try:
        await run_in_threadpool(backend.check_ready)
    except StorageError as exc:
        return JSONResponse({"error": "not_ready", "detail": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok", "s3": "ok"})


def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


async def _start_siprec(app: FastAPI, host: str, port: int) -> None:
    """SIPREC on ``host:port`` (UDP and TCP); the call hook then names the port taken."""
    try:
        await app.state.siprec.start(host, port)
    except OSError as exc:
        reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ConfigError(
            f"cannot listen on {host}:{port} (CALLREC_SIP_HOST/CALLREC_SIP_PORT): {reason}"
        ) from None
    shown = f"[{host}]" if ":" in host else host
    app.state.api_context.sip_uri_host = f"{shown}:{app.state.siprec.port}"


def roles_of(dependant: Dependant) -> set[str]:
    """The roles a route's guards let through (for the OpenAPI document)."""
    return {role.value for guard in guards_of(dependant) for role in guard.roles}


def _install_metrics(app: FastAPI, backend: StorageBackend, clock: Callable[[], datetime]) -> None:
    registry = CollectorRegistry()
    DomainMetrics(registry, backend, clock)
    registry.register(LiveCollector(app.state.live))
    audit = backend.audit
    Gauge(
        "callrec_audit_chain_ok",
        "1 while the audit chain's head matched its anchor at the last check, else 0.",
        registry=registry,
    ).set_function(lambda: 0.0 if audit.broken else 1.0)
    requests = Counter(
        "callrec_http_requests",
        "HTTP requests by route and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "callrec_http_request_duration_seconds",
        "HTTP request latency by route.",
        ["method", "route"],
        registry=registry,
    )

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        latency.labels(request.method, route).observe(time.perf_counter() - started)
        requests.labels(request.method, route, str(response.status_code)).inc()
        return response

    app.state.metrics = registry
    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["ops"], response_class=Response)

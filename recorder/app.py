"""The HTTP application: composes every package's routes into one FastAPI app."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from recorder.errors import install_error_handlers
from storage.backend import StorageBackend
from storage.errors import StorageError


def create_app(backend: StorageBackend) -> FastAPI:
    """Build the app around a started storage backend."""
    app = FastAPI(
        title="callrec",
        summary="Call-recording consent and retention pipeline",
        version="0.1.0",
    )
    app.state.backend = backend
    install_error_handlers(app)
    _install_metrics(app)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Readiness: the database and S3 both answer."""
        try:
            await run_in_threadpool(backend.check_ready)
        except StorageError as exc:
            return JSONResponse({"error": "not_ready", "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready", "database": "ok", "s3": "ok"})

    return app


def _install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
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

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

"""The one place where errors become HTTP answers: ``{"error": code, "detail": …}``.

Each package raises from its own tree (``storage.errors``, ``consent.errors``,
``retention.errors``, ``recorder._exceptions``); ``_STATUS`` gives each class its status.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from consent import errors as consent_errors
from consent.api_auth import guards_of
from consent.errors import ConsentError
from recorder import _exceptions as recorder_errors
from retention import errors as retention_errors
from storage import errors as storage_errors

log = logging.getLogger(__name__)

# Most specific first: the first class that matches decides.
_STATUS: list[tuple[type[Exception], int]] = [
    (consent_errors.NotFound, 404),
    (consent_errors.AlreadyExists, 409),
    (consent_errors.Unauthenticated, 401),
    (consent_errors.PermissionDenied, 403),
    (consent_errors.InvalidRequest, 422),
    (consent_errors.PayloadTooLarge, 413),
    (consent_errors.UnsupportedMedia, 415),
    (consent_errors.StateConflict, 409),
    (retention_errors.NotFound, 404),
    (retention_errors.InvalidRequest, 422),
    (retention_errors.StateConflict, 409),
    (recorder_errors.UnsupportedAudio, 415),
    (recorder_errors.InvalidAudio, 422),
    (recorder_errors.AudioTooLong, 413),
    (recorder_errors.AudioError, 422),
    (recorder_errors.CaptureBusy, 503),
    (recorder_errors.PortsExhausted, 503),
    (recorder_errors.UnknownSession, 404),
    (recorder_errors.NoTrickle, 405),
    (storage_errors.ObjectNotFound, 404),
    (storage_errors.KeyDestroyed, 410),
    (storage_errors.InvalidTransition, 409),
    (storage_errors.RecordingExists, 409),
    (storage_errors.StoreUnavailable, 503),
    (storage_errors.DatabaseUnavailable, 503),
    (storage_errors.CallrecError, 500),
]


def status_of(error: type[Exception]) -> int:
    """The HTTP status of an error class: the first entry of ``_STATUS`` it falls under."""
    return next(status for cls, status in _STATUS if issubclass(error, cls))


def error_body(code: str, detail: object) -> dict[str, object]:
    return {"error": code, "detail": detail}


# Starlette's own answers, under the codes callrec uses.
_HTTP_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}


def _answer(exc: storage_errors.CallrecError) -> JSONResponse:
    status = status_of(type(exc))
    if status >= 500:
        log.error("%s: %s", exc.code, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else dict(exc.headers)
    return JSONResponse(error_body(exc.code, str(exc)), status_code=status, headers=headers)


async def _refusal(request: Request) -> ConsentError | None:
    """What the route's guard says of the caller, asked before any word on the body.

    FastAPI parses a JSON body before it runs a route's dependencies; a body it cannot
    parse would otherwise tell a caller with no right to the route how to shape one.
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if not isinstance(dependant, Dependant):
        return None
    for guard in guards_of(dependant):
        refused = await run_in_threadpool(
            guard.refusal,
            request.app.state.api_context,
            request.headers.get("authorization"),
            request.path_params,
        )
        if refused is not None:
            return refused
    return None


def install_error_handlers(app: FastAPI) -> None:
    """Translate every error into JSON; never a stack trace on the wire."""

    @app.exception_handler(storage_errors.CallrecError)
    async def _callrec(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, storage_errors.CallrecError)
        return _answer(exc)

    @app.exception_handler(sa.exc.DBAPIError)
    async def _database(_request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            # A statement the database refused (a value out of range…) is our bug,
            # not an outage: saying "unavailable" would send the caller to retry.
            log.exception("database refused a statement")
            return JSONResponse(error_body("internal_error", "unexpected error"), status_code=500)
        log.error("database error: %s", str(exc).splitlines()[0])
        body = error_body("database_unavailable", "the database cannot be reached")
        return JSONResponse(body, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        refused = await _refusal(request)
        if refused is not None:
            return _answer(refused)
        detail = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in exc.errors()
        ]
        return JSONResponse(error_body("invalid_request", detail), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # the body could not be parsed at all
            refused = await _refusal(request)
            if refused is not None:
                return _answer(refused)
        code = _HTTP_CODES.get(exc.status_code)
        if code is None:
            code = exc.detail.lower().replace(" ", "_") if isinstance(exc.detail, str) else "error"
        return JSONResponse(
            error_body(code, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _exc: Exception) -> JSONResponse:
        # The client's own doing (a dropped link, a cancelled upload): nothing was kept.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        # Nobody reads it; 499 (client closed request) only tells the access log and metrics.
        return JSONResponse(error_body("client_disconnected", "client left"), status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(error_body("internal_error", "unexpected error"), status_code=500)

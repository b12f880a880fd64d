"""The OpenAPI document as the gateway really answers, and ``/docs`` served with no internet.

The document is post-processed in one pass over ``app.routes``, so a route added to any
router gets the same treatment without saying so:

- a route that reads ``Authorization`` is marked with the bearer scheme (and its roles,
  where its guard names them), and the header leaves the parameter list;
- every error status the route can answer is documented with the one error shape
  ``{"error": code, "detail": …}``, in place of FastAPI's own validation schema;
- a status a route declares itself (``responses={409: …}``) gets the same shape.

What a route can answer follows from what it takes: a key (401, 403), ids in the path,
the query or the body (404), input to validate (422), a JSON body (400 when it cannot
be parsed), a raw body (413, 415), a write (409); every ``/v1`` route needs the
database (503).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import BaseRoute
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

BEARER = "bearer"
ERROR = "Error"
PROBLEM = "ValidationProblem"

_REASONS = {
    400: "The body cannot be parsed (not JSON, not UTF-8).",
    401: "No API key, or a key that is unknown or revoked.",
    403: "The key's role may not do this.",
    404: "No such id, or one that belongs to another client (the same answer for both).",
    409: "Not possible in the current state, or the id is taken.",
    410: "The data was destroyed (the client was offboarded).",
    413: "The body is over the configured limit.",
    415: "A content type callrec does not take.",
    422: "Well-formed but not acceptable: `detail` says what.",
    503: "The database or S3 cannot be reached, or the audit chain is broken "
    "(`audit_chain_broken`: nothing can be audited, so nothing is done).",
}
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_SCHEMAS: dict[str, dict[str, Any]] = {
    ERROR: {
        "title": ERROR,
        "type": "object",
        "description": "Every error callrec answers.",
        "required": ["error", "detail"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "string",
                "description": "Stable error code (`not_found`, `forbidden`, `invalid_request`…).",
                "examples": ["not_found"],
            },
            "detail": {
                "description": "What went wrong: a sentence, or one problem per bad field.",
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"$ref": f"#/components/schemas/{PROBLEM}"}},
                ],
            },
        },
    },
    PROBLEM: {
        "title": PROBLEM,
        "type": "object",
        "required": ["loc", "msg"],
        "additionalProperties": False,
        "properties": {
            "loc": {
                "type": "array",
                "description": "Where: `body`, `query`, `path` or `header`, then the field.",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"type": "string", "description": "What is wrong with it."},
        },
    },
}
# Documented nowhere once every 422 carries the error shape above.
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI, *, roles_of: Callable[[Dependant], Iterable[str]]) -> None:
    """Make ``app.openapi()`` tell the truth, and serve ``/docs`` from callrec itself.

    ``roles_of`` names the roles a route's dependencies let through (empty: not known).
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            describe(schema, api_routes(app.routes), roles_of)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    _serve_docs(app)


def api_routes(routes: Iterable[BaseRoute]) -> list[RouteContext]:
    """Every API route as served, routers included (with their prefixes and dependencies)."""
    return [c for c in iter_route_contexts(list(routes)) if isinstance(c.original_route, APIRoute)]


def describe(
    schema: dict[str, Any],
    routes: Iterable[RouteContext],
    roles_of: Callable[[Dependant], Iterable[str]],
) -> None:
    """Post-process a generated document in place (see the module docstring)."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <key>`.",
    }
    schemas = components.setdefault("schemas", {})
    schemas.update(_SCHEMAS)
    for route in routes:
        if not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = schema["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _describe_operation(operation, route, method, roles_of)
    for name in _FASTAPI_SCHEMAS:
        schemas.pop(name, None)


def _describe_operation(
    operation: dict[str, Any],
    route: RouteContext,
    method: str,
    roles_of: Callable[[Dependant], Iterable[str]],
) -> None:
    tree = list(walk(route.dependant))
    keyed = any(p.alias.lower() == "authorization" for d in tree for p in d.header_params)
    if keyed:  # the scheme says it; the header is no parameter to fill in
        operation["security"] = [{BEARER: []}]
        params = [
            p
            for p in operation.get("parameters", [])
            if not (p["in"] == "header" and p["name"].lower() == "authorization")
        ]
        if params:
            operation["parameters"] = params
        else:
            operation.pop("parameters", None)
        roles = sorted(roles_of(route.dependant))
        if roles:
            operation["x-roles"] = roles
            operation["description"] = _with_roles(operation.get("description"), roles)
    statuses = _statuses(route, operation, method, tree, keyed)
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if 422 not in statuses:  # FastAPI adds one for any parameter, the key's header too
        responses.pop("422", None)
    for code in sorted(statuses):
        entry = responses.setdefault(str(code), {})
        if code == 422 or not entry.get("content"):
            entry["content"] = {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR}"}}
            }
        if code in _REASONS and entry.get("description") in (None, "", "Validation Error"):
            entry["description"] = _REASONS[code]
    for entry in responses.values():
        for media in entry.get("content", {}).values():
            if not media:  # a media type declared with no schema is raw bytes
                media["schema"] = {"type": "string", "format": "binary"}


def _statuses(
    route: RouteContext,
    operation: dict[str, Any],
    method: str,
    tree: list[Dependant],
    keyed: bool,
) -> set[int]:
    """The error statuses a route can answer, from what it takes (module docstring)."""
    api = (route.path_format or "").startswith("/v1/")
    json_body = any(d.body_params for d in tree)
    body = operation.get("requestBody", {}).get("content", {})
    statuses = {401, 403} if keyed else set()
    if body or any(d.path_params or d.query_params for d in tree):
        statuses |= {404, 422}
    if json_body:
        statuses.add(400)
    elif body:  # a raw body, read by the route itself
        statuses |= {413, 415}
    if api and method in _WRITES:
        statuses.add(409)
    if api:
        statuses.add(503)
    declared = {int(code) for code in route.responses if str(code).isdigit()}
    return statuses | {code for code in declared if code >= 400}


def walk(dependant: Dependant) -> Iterator[Dependant]:
    """A route's dependant and every dependency below it, depth first."""
    yield dependant
    for sub in dependant.dependencies:
        yield from walk(sub)


def _with_roles(description: str | None, roles: list[str]) -> str:
    line = "Roles: " + ", ".join(f"`{r}`" for r in roles) + "."
    return f"{description}\n\n{line}" if description else line


_ASSETS = "/docs/assets"


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI from the bundled assets: ``/docs`` needs nothing from the internet."""
    app.mount(_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    # A module-level endpoint: one closing over the app would be kept by FastAPI's
    # per-endpoint caches, and the app with it (see recorder.app).
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)


def docs(request: Request) -> HTMLResponse:
    """Swagger UI on the app's OpenAPI document."""
    app: FastAPI = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} API",
        swagger_js_url=f"{_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{_ASSETS}/favicon-32x32.png",
        # No validator badge: it would send the document to a public service.
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )

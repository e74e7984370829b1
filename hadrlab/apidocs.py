"""What every course API shares in its OpenAPI document: the error body, /metrics, bodies.

Each service validates its requests by hand, so that a refused request gets a message that
says exactly what to send. Its OpenAPI document (``/openapi.json``, browsable at ``/docs``)
declares the same contract with pydantic models: the request bodies (through
:func:`json_body`, FastAPI's ``openapi_extra`` way of documenting a body that the route
reads itself), the path and query parameters with their constraints, and every status a
route can answer with its model. ``tests/integration/test_openapi_contracts.py`` runs
schemathesis against each running service to check that the document and the answers agree.

    @app.post("/predict", responses={**errors(422, 413, 503)}, openapi_extra=json_body(Body))
    @app.get("/metrics", response_class=PrometheusText, responses=METRICS)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match
from pydantic import BaseModel, Field, TypeAdapter

__all__ = [
    "ErrorBody",
    "PrometheusText",
    "METRICS",
    "PROMETHEUS_MEDIA_TYPE",
    "errors",
    "json_body",
    "json_schema",
    "allow_header",
]

PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4"

_STATUS_TEXT = {
    400: "The body is not readable JSON text (e.g. not UTF-8).",
    401: "Missing or wrong bearer token.",
    404: "No such resource; the message names what exists.",
    409: "The request conflicts with the current state.",
    413: "The batch is larger than this service accepts.",
    422: "The request is malformed; the message says what to send instead.",
    500: "A server-side failure (e.g. damaged storage); the message says what broke.",
    503: "Not able to answer now (not ready, dependency down, or an injected fault).",
}


class ErrorBody(BaseModel):
    """The body of every error answer: one sentence on what went wrong and what to do."""

    detail: str = Field(description="What went wrong, and what to send or do instead.")


class PrometheusText(PlainTextResponse):
    """A /metrics answer: Prometheus text exposition format, version 0.0.4."""

    media_type = PROMETHEUS_MEDIA_TYPE


# The 200 of every /metrics route: text, not JSON.
METRICS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format (version 0.0.4): # HELP and # TYPE "
                       "lines, then one sample per line.",
        "content": {PROMETHEUS_MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


def errors(*statuses: int, model: type[BaseModel] = ErrorBody, **described: str) -> dict:
    """Return FastAPI ``responses`` entries for these error statuses, each with its model.

    ``described`` overrides a description: ``errors(404, s404="No such model.")``.
    """
    return {
        status: {"model": model, "description": described.get(f"s{status}", _STATUS_TEXT[status])}
        for status in statuses
    }


def json_schema(annotation: Any) -> dict:
    """The JSON schema of a pydantic model or type, with its definitions inlined.

    Inlined because the schema is placed inside an operation of the OpenAPI document, where
    pydantic's ``#/$defs/...`` references would not resolve.
    """
    schema = TypeAdapter(annotation).json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**inline(defs[ref.rsplit("/", 1)[1]]), **inline(rest)}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def json_body(annotation: Any, *, description: str = "", example: Any = None) -> dict:
    """``openapi_extra`` that declares a required JSON request body of this model or type."""
    media: dict[str, Any] = {"schema": json_schema(annotation)}
    if example is not None:
        media["example"] = example
    body: dict[str, Any] = {"required": True, "content": {"application/json": media}}
    if description:
        body["description"] = description
    return {"requestBody": body}


def allow_header(app: FastAPI) -> None:
    """FastAPI's own errors, made to say what to do: 404, 405 and an unreadable body (400).

    A 405 lists every method the path supports in ``Allow``: Starlette builds it from the
    first route whose path matches, so a path served by two routes (GET and POST
    /models/{name}/versions) would list one of them only. A body that is not text (bytes
    that are not UTF-8) gets a 400 that says to send JSON, and an unknown path a 404 that
    lists the paths there are.
    """
    default = app.exception_handlers.get(HTTPException)

    async def handler(request: Request, exc: Exception):
        if isinstance(exc, HTTPException) and exc.status_code == 400:
            return JSONResponse(
                {"detail": f"The request body could not be read ({exc.detail}): send JSON "
                           "text, UTF-8 encoded, with Content-Type: application/json."},
                status_code=400,
            )
        if isinstance(exc, HTTPException) and exc.status_code == 404 and exc.detail == "Not Found":
            paths = sorted({route.path for route in app.router.routes
                            if request.method in (getattr(route, "methods", None) or ())})
            return JSONResponse({"detail": f"No {request.method} {request.url.path} here; try {paths}."},
                                status_code=404)
        if not isinstance(exc, HTTPException) or exc.status_code != 405:
            return await default(request, exc)
        methods: set[str] = set()
        for route in app.router.routes:
            match, _ = route.matches(request.scope)
            if match in (Match.FULL, Match.PARTIAL):
                methods |= set(getattr(route, "methods", None) or ())
        allowed = ", ".join(sorted(methods))
        return JSONResponse(
            {"detail": f"{request.method} is not allowed on {request.url.path}; use {allowed}."},
            status_code=405, headers={"Allow": allowed},
        )

    app.add_exception_handler(HTTPException, handler)

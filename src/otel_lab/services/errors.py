"""The services' one error model: handlers raise, :func:`handle_service_error` answers.

Every error a service answers is a :class:`ServiceError` (or is translated into one, see
``services.base``) and becomes the same JSON body (``http_protocol.error_body``, which
uvicorn's own answers use too)::

    {"detail": "...", "error_type": "...", "request_id": "...", ...context}

``context`` holds what a caller needs to act on this error (``step`` and ``service`` for a
failed chain call, ``attempts`` for the weather upstream). A 5xx marks the request's span
failed and counts ``errors_total{error_type}`` here, once; a 4xx is the client's doing and
neither (the span is not failed when the service did nothing wrong).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse

from otel_lab.http_protocol import error_body, error_type_for
from otel_lab.jsontypes import JSONObject, JSONValue
from otel_lab.request_body import too_large
from otel_lab.routing import allowed_methods
from otel_lab.telemetry import metrics as prom
from otel_lab.telemetry.context import request_id_var


class ServiceError(Exception):
    """An error answered as JSON with ``status_code``; ``error_type`` names it in the body,
    on the span and in ``errors_total``.

    Subclasses fix the status and the default type; ``context`` keyword arguments join the
    body.
    ``counted``: the error was already counted where it happened (a failed downstream call
    counts itself), so the handler only marks the request's span.
    """

    status_code: int = 500
    error_type: str = "internal_error"
    counted: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        **context: JSONValue,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if error_type is not None:
            self.error_type = error_type
        self.headers = dict(headers or {})
        self.context = context

    def body(self) -> JSONObject:
        return {**error_body(self.detail, self.error_type, request_id_var.get()), **self.context}


class InvalidInputError(ServiceError):
    """Input that passed the schema but cannot be served (422)."""

    status_code = 422
    error_type = "invalid_input"


class NotFoundError(ServiceError):
    status_code = 404
    error_type = "not_found"


class ConflictError(ServiceError):
    status_code = 409
    error_type = "conflict"


class IdempotencyKeyReusedError(ServiceError):
    """An ``Idempotency-Key`` already used for a different request (422).

    draft-ietf-httpapi-idempotency-key-header-07, section 2.7 (Error Scenarios): a key reused
    with a different payload SHOULD get a 422 (section 2.4: the server compares a
    fingerprint of the request). Replaying the first result instead would tell the client
    its second, different request was done. Raised by the service that stored the key; the
    services in front of it pass it on as it is (``services.downstream``): the client's
    mistake, not a failed dependency.
    """

    status_code = 422
    error_type = "idempotency_key_reused"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    error_type = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(too_large(limit))


class DependencyUnavailableError(ServiceError):
    """A process this service needs (database, cache, another service) cannot be used (503).

    ``error_type`` is ``<dependency>_unavailable``, so the counter and the span name it.
    """

    status_code = 503

    def __init__(
        self,
        dependency: str,
        detail: str,
        *,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        **context: JSONValue,
    ) -> None:
        if error_type is None:
            error_type = f"{dependency.replace('-', '_')}_unavailable"
        super().__init__(detail, error_type=error_type, headers=headers, **context)
        self.dependency = dependency


class DependencyTimeoutError(ServiceError):
    """A dependency did not answer within its deadline (504)."""

    status_code = 504
    error_type = "upstream_timeout"


class UpstreamError(ServiceError):
    """A dependency answered, but with a failure or nonsense (502)."""

    status_code = 502
    error_type = "upstream_error"


def with_retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header for ``seconds`` (whole seconds, at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def mark_failed(span: trace.Span, exc: BaseException, error_type: str) -> None:
    """The one way a span is marked failed: the exception, ERROR status, ``error.type``."""
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, error_type))
    span.set_attribute("error.type", error_type)


def record_error(exc: BaseException, error_type: str, *, count: bool = True) -> None:
    """Mark the current span failed with the exception (and count it)."""
    mark_failed(trace.get_current_span(), exc, error_type)
    if count:
        prom.ERRORS.labels(error_type).inc()


def error_json(error: ServiceError, cause: BaseException | None = None) -> JSONResponse:
    """The response for ``error``; a 5xx also marks the span and counts, once, here.

    ``cause``: the exception to record on the span when ``error`` stands for another one
    (a driver's error translated into a 503).
    """
    if error.status_code >= 500:
        record_error(cause or error, error.error_type, count=not error.counted)
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


async def handle_service_error(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler every service installs (``services.base.create_service``)."""
    assert isinstance(exc, ServiceError)
    return error_json(exc)


# Starlette's and FastAPI's own HTTPExceptions, by the names the error classes use.
_HTTP_ERROR_TYPES = {
    NotFoundError.status_code: NotFoundError.error_type,
    PayloadTooLargeError.status_code: PayloadTooLargeError.error_type,
}


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own errors (no route: 404, wrong method: 405, a body that
    cannot be read: 400 or 413) in the same shape."""
    status_code: int = getattr(exc, "status_code", 500)
    error_type = _HTTP_ERROR_TYPES.get(status_code) or error_type_for(status_code)
    detail = getattr(exc, "detail", HTTPStatus(status_code).phrase)
    body = error_body(detail, error_type, request_id_var.get())
    headers = dict(getattr(exc, "headers", None) or {})
    if status_code == HTTPStatus.METHOD_NOT_ALLOWED and (allow := allowed_methods(request.scope)):
        headers["Allow"] = allow
    return JSONResponse(body, status_code=status_code, headers=headers)


# --------------------------------------------------------------------------- OpenAPI


class ErrorBody(BaseModel):
    """The JSON body of a service's errors: what went wrong, its type and the request's
    ID, and what the caller needs to act on it (step, service, ...) besides."""

    model_config = ConfigDict(extra="allow", title="Error")

    detail: str
    error_type: str
    request_id: str | None


_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_VALIDATION_REF = {"$ref": "#/components/schemas/HTTPValidationError"}
# What any route of a service can answer besides its own errors, and when.
_BODY_TOO_LARGE = "Request body too large (PayloadTooLargeError)"
_NOT_FOUND = "No such item, or no such path"
_UNAVAILABLE = "A dependency (named in error_type) is unavailable, or its circuit is open"
_OUT_OF_TIME = "A dependency did not answer within the request's deadline"
_INVALID = "Invalid input: a field error (FastAPI's detail list) or a value refused (Error)"


def document_errors(app: FastAPI, *, dependencies: bool) -> None:
    """``/openapi.json`` names the errors the routes answer, each with the shared shape
    (``Error``; a 422 is that or FastAPI's validation list), in one place for every service:

    - what a route declares (``responses={409: {"description": ...}}``), given the shape;
    - what follows from its signature: 422 for parameters or a body, 413 for a body, 404
      for a path with an item in it;
    - ``dependencies``: 503 and 504 on every route but the operational ones, since each
      reaches the database, the cache or another service under the request's deadline.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # cached by FastAPI: changed in place once
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = ErrorBody.model_json_schema()
        invalid: dict[str, Any] = {"anyOf": [_VALIDATION_REF, _ERROR_REF]}
        if "HTTPValidationError" not in components:  # no route has parameters or a body
            invalid = _ERROR_REF
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                _add_errors(path, operation, dependencies, invalid)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_errors(
    path: str, operation: dict[str, Any], dependencies: bool, invalid: dict[str, Any]
) -> None:
    responses: dict[str, Any] = operation["responses"]
    if "requestBody" in operation:
        responses.setdefault("413", {"description": _BODY_TOO_LARGE})
    if "{" in path:
        responses.setdefault("404", {"description": _NOT_FOUND})
    if dependencies and "operations" not in operation.get("tags", ()):
        responses.setdefault("503", {"description": _UNAVAILABLE})
        responses.setdefault("504", {"description": _OUT_OF_TIME})
    if "422" in responses and "content" in responses["422"]:  # FastAPI's: a field error
        responses["422"] = {"description": _INVALID}
    for code, response in responses.items():
        if code[:1] in ("4", "5") and "content" not in response:
            shape = invalid if code == "422" else _ERROR_REF
            response["content"] = {"application/json": {"schema": shape}}

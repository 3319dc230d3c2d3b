"""``POST /process`` (the service chain): user validation and profile enrichment here, then order
creation and pricing in order-service, which writes the audit log in audit-service; three
services, real HTTP, one trace.

The user context travels as baggage (``user.id``, ``action``), set here once the user is
known; every chain service copies those entries onto its spans. Name and email stay out of
baggage and spans unless ``TELEMETRY_RECORD_PII=true``.

Which users exist: the ten demo users 1001-1010 are seeded by migration 0002, so the chain's
examples work on a fresh start. A request that names a user by ``user_email`` alone (no
``user_id``) gets that user, created on first sight with ``user_name``; an unknown
``user_id`` is a 404 from the ``user_validation`` step.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from opentelemetry import context, trace
from opentelemetry.trace import Status, StatusCode
from sqlalchemy import Row

from otel_lab.registry import CHAIN
from otel_lab.services.base import error_response
from otel_lab.services.downstream import (
    DownstreamError,
    chain_baggage,
    idempotency_key,
    outbound_headers,
)
from otel_lab.services.users.repository import ProfileReader
from otel_lab.services.users.schemas import ProcessRequest
from otel_lab.settings import get_settings

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("otel_lab.users.chain")
router = APIRouter(tags=["chain"])


class StepError(Exception):
    """A chain step refused the request; answered as ``{"detail", "step"}``."""

    def __init__(self, status_code: int, detail: str, step: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.step = step


async def _validate_user(users: ProfileReader, body: ProcessRequest) -> Row:
    """Find the user by id (404 if unknown), or by email (created on first sight)."""
    record_pii = get_settings().record_pii
    with tracer.start_as_current_span(
        "user_validation", attributes={"operation.type": "validation"}
    ) as span:
        if body.user_id is not None:
            span.set_attribute("user.id", str(body.user_id))
            user = await users.get(body.user_id)
            if user is None:
                span.add_event("user.not_found")
                span.set_attribute("user.validated", False)
                raise StepError(404, f"user {body.user_id} not found", "user_validation")
            if body.user_email is not None and body.user_email != user.email:
                # The stored profile wins; the mismatch is worth knowing, the values are not.
                span.add_event("user.email_mismatch")
        else:
            assert body.user_email is not None  # the schema guarantees one of the two
            user = await users.get_by_email(body.user_email)
            if user is None:
                user = await _create_on_first_sight(users, body)
                span.add_event("user.created_on_first_sight", {"user.id": str(user.id)})
        span.set_attribute("user.id", str(user.id))
        span.set_attribute("user.validated", True)
        if record_pii:
            span.set_attribute("user.name", user.name)
            span.set_attribute("user.email", user.email)
        return user


async def _create_on_first_sight(users: ProfileReader, body: ProcessRequest) -> Row:
    assert body.user_email is not None
    name = body.user_name or body.user_email.split("@", 1)[0]
    user = await users.add(name, body.user_email)
    if user is None:  # created by a concurrent request meanwhile
        user = await users.get_by_email(body.user_email)
        if user is None:
            raise RuntimeError("user vanished between insert and read")  # deleted meanwhile
    return user


async def _enrich_profile(users: ProfileReader, user: Row) -> dict[str, Any]:
    """What the chain knows about the user beyond the row: todo counts, membership age."""
    with tracer.start_as_current_span(
        "profile_enrichment",
        attributes={
            "operation.type": "enrichment",
            "user.id": str(user.id),
            "user.tier": user.tier,
        },
    ) as span:
        todo_count, open_todos = await users.todo_counts(user.id)
        member_days = max(0, (datetime.now(UTC) - user.created_at).days)
        span.set_attributes(
            {
                "user.todo_count": todo_count,
                "user.open_todo_count": open_todos,
                "user.member_days": member_days,
            }
        )
        return {
            "id": user.id,
            "name": user.name,
            "email": user.email,
            "tier": user.tier,
            "todo_count": todo_count,
            "open_todo_count": open_todos,
            "member_since": user.created_at.isoformat(),
        }


@router.post("/process")
async def process(
    body: ProcessRequest,
    request: Request,
    idempotency_key_header: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    """Run the chain and answer with the trace id and a summary of every step."""
    started = time.perf_counter()
    settings = get_settings()
    server_span = trace.get_current_span()
    trace_id = format(server_span.get_span_context().trace_id, "032x")
    server_span.set_attribute("action", body.action)
    if body.simulate_failure and not settings.simulated_failures:
        return error_response(
            422, "simulate_failure is disabled (CHAIN_SIMULATED_FAILURES=false)", step="request"
        )
    key = idempotency_key(idempotency_key_header)

    try:
        async with request.app.state.autocommit.connect() as connection:
            users = ProfileReader(connection)
            user = await _validate_user(users, body)
            profile = await _enrich_profile(users, user)
    except StepError as exc:
        return error_response(exc.status_code, exc.detail, step=exc.step)
    server_span.set_attribute("user.id", str(user.id))

    payload: dict[str, Any] = {"user_id": user.id, "action": body.action, "user_tier": user.tier}
    if body.simulate_failure:
        payload["simulate_failure"] = body.simulate_failure
    token = context.attach(
        chain_baggage(user.id, body.action, name=user.name, email=user.email, settings=settings)
    )
    try:
        response = await request.app.state.orders.request(
            "POST",
            "/process",
            step="order_creation",
            idempotent=True,  # order-service honours the Idempotency-Key
            raise_for_status=True,
            json=payload,
            headers=outbound_headers(key),
        )
    except DownstreamError as exc:
        # The request fails because of the step: the server span says so (the error itself
        # was counted once, where the call failed).
        server_span.record_exception(exc)
        server_span.set_status(Status(StatusCode.ERROR, exc.error_type))
        server_span.set_attribute("error.type", exc.error_type)
        logger.warning(
            "chain_failed",
            extra={"step": exc.step, "downstream": exc.service, "error": str(exc),
                   "user_id": user.id, "action": body.action},
        )  # fmt: skip
        return exc.response()
    finally:
        context.detach(token)

    result = response.json()
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    audit = result.get("audit", {})
    if audit.get("status") == "deferred":
        server_span.add_event("audit.deferred", {"reason": str(audit.get("reason", ""))[:200]})
    logger.info(
        "chain_completed",
        extra={"user_id": user.id, "action": body.action, "order_id": result["order"]["id"],
               "audit_status": audit.get("status"), "elapsed_ms": elapsed_ms},
    )  # fmt: skip
    return JSONResponse(
        {
            "trace_id": trace_id,
            "status": "completed",
            "user": profile,
            "order": result["order"],
            "audit": audit,
            "chain": list(CHAIN),
            "idempotency_key": key,
            "duration_ms": elapsed_ms,
        }
    )

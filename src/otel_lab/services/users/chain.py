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
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from opentelemetry import context, trace

from otel_lab.jsontypes import JSONObject
from otel_lab.registry import CHAIN
from otel_lab.services.deps import AutocommitDep, SettingsDep, TelemetryDep, lifespan_state
from otel_lab.services.downstream import (
    Downstream,
    DownstreamError,
    SimulationDisabledError,
    call_next_hop,
    chain_baggage,
    idempotency_key,
)
from otel_lab.services.errors import NotFoundError
from otel_lab.services.users.repository import UserRepository, UserRow
from otel_lab.services.users.schemas import ChainProfile, ChainResponse, ProcessRequest

logger = logging.getLogger(__name__)
SCOPE = "otel_lab.users.chain"
router = APIRouter(tags=["chain"])


OrderServiceDep = Annotated[Downstream, Depends(lifespan_state("orders"))]


async def _validate_user(
    tracer: trace.Tracer, users: UserRepository, body: ProcessRequest, record_pii: bool
) -> UserRow:
    """Find the user by id (404 if unknown), or by email (created on first sight)."""
    with tracer.start_as_current_span(
        "user_validation", attributes={"operation.type": "validation"}
    ) as span:
        if body.user_id is not None:
            span.set_attribute("user.id", str(body.user_id))
            user = await users.get(body.user_id)
            if user is None:
                span.add_event("user.not_found")
                span.set_attribute("user.validated", False)
                raise NotFoundError(f"user {body.user_id} not found", step="user_validation")
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


async def _create_on_first_sight(users: UserRepository, body: ProcessRequest) -> UserRow:
    assert body.user_email is not None
    name = body.user_name or body.user_email.split("@", 1)[0]
    user = await users.add(name, body.user_email)
    if user is None:  # created by a concurrent request meanwhile
        user = await users.get_by_email(body.user_email)
        if user is None:
            raise RuntimeError("user vanished between insert and read")  # deleted meanwhile
    return user


async def _enrich_profile(
    tracer: trace.Tracer, users: UserRepository, user: UserRow
) -> ChainProfile:
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
        return ChainProfile(
            id=user.id,
            name=user.name,
            email=user.email,
            tier=user.tier,
            todo_count=todo_count,
            open_todo_count=open_todos,
            member_since=user.created_at.isoformat(),
        )


@router.post(
    "/process",
    responses={
        404: {"description": "Unknown user_id (step user_validation)"},
        422: {
            "description": "Invalid input, simulate_failure while simulations are off, or an "
            "Idempotency-Key used for a different request (found by order-service or "
            "audit-service)"
        },
        502: {"description": "order-service failed (step order_creation)"},
        503: {"description": "order-service unreachable, or its circuit is open"},
        504: {"description": "order-service did not answer in time"},
    },
)
async def process(
    body: ProcessRequest,
    autocommit: AutocommitDep,
    orders: OrderServiceDep,
    settings: SettingsDep,
    telemetry: TelemetryDep,
    idempotency_key_header: str | None = Header(None, alias="Idempotency-Key"),
) -> ChainResponse:
    """Run the chain and answer with the trace id and a summary of every step."""
    started = time.perf_counter()
    server_span = trace.get_current_span()
    trace_id = format(server_span.get_span_context().trace_id, "032x")
    server_span.set_attribute("action", body.action)
    if body.simulate_failure and not settings.simulated_failures:
        raise SimulationDisabledError()
    key = idempotency_key(idempotency_key_header)

    async with autocommit.connect() as connection:
        tracer = telemetry.tracer(SCOPE)
        users = UserRepository(connection, telemetry)
        user = await _validate_user(tracer, users, body, settings.record_pii)
        profile = await _enrich_profile(tracer, users, user)
    server_span.set_attribute("user.id", str(user.id))

    payload: JSONObject = {"user_id": user.id, "action": body.action, "user_tier": user.tier}
    if body.simulate_failure:
        payload["simulate_failure"] = body.simulate_failure
    token = context.attach(
        chain_baggage(user.id, body.action, name=user.name, email=user.email, settings=settings)
    )
    try:
        response = await call_next_hop(orders, "order_creation", payload, key)
    except DownstreamError as exc:
        # The request fails because of the step; the handler marks the server span (the
        # error itself was counted once, where the call failed).
        logger.warning(
            "chain_failed",
            extra={"step": exc.step, "downstream": exc.service, "error": str(exc),
                   "user_id": user.id, "action": body.action},
        )  # fmt: skip
        raise
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
    return ChainResponse(
        trace_id=trace_id,
        status="completed",
        user=profile,
        order=result["order"],
        audit=audit,
        chain=list(CHAIN),
        idempotency_key=key,
        duration_ms=elapsed_ms,
    )

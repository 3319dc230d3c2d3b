"""``POST /process`` (the chain's middle: order creation and pricing, then the audit log)
and the orders themselves (``GET /orders``, ``GET /orders/{id}``). Routes -> ``service`` ->
``repository``.

Recovery: a retried call with the same ``Idempotency-Key`` gets the order the first attempt
wrote. When audit-service cannot be reached (or refuses), the order still completes: the
audit is *deferred* (``orders.audit_status``), answered as such, and shown as an
``audit.deferred`` span event; the next call with the same key tries the audit again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response
from opentelemetry import trace

from otel_lab.services.deps import AutocommitDep, SettingsDep, TelemetryDep, lifespan_state
from otel_lab.services.downstream import Downstream, SimulationDisabledError, idempotency_key
from otel_lab.services.errors import NotFoundError
from otel_lab.services.orders import repository, service
from otel_lab.services.orders.schemas import OrderOut, OrderProcessRequest, OrderProcessResponse
from otel_lab.services.params import IdFilter, Limit, Offset, path_id, set_total

router = APIRouter(tags=["orders"])

OrderId = Annotated[int, path_id("The order's id")]


AuditServiceDep = Annotated[Downstream, Depends(lifespan_state("audit"))]


@router.post(
    "/process",
    responses={
        422: {
            "description": "Invalid input, simulate_failure while simulations are off, or an "
            "Idempotency-Key used for a different request"
        },
        500: {"description": "The simulated order failure (simulate_failure: order)"},
        503: {
            "description": "A dependency is unavailable, or the simulated transient failure's "
            "first attempt"
        },
    },
)
async def process(
    body: OrderProcessRequest,
    autocommit: AutocommitDep,
    audit_service: AuditServiceDep,
    settings: SettingsDep,
    telemetry: TelemetryDep,
    idempotency_key_header: str | None = Header(None, alias="Idempotency-Key"),
) -> OrderProcessResponse:
    """Create and price the order, then have it audited; answer the order and the audit."""
    if body.simulate_failure and not settings.simulated_failures:
        raise SimulationDisabledError()
    key = idempotency_key(idempotency_key_header)
    # Autocommit: each statement is its own transaction; none is held open across the call
    # to audit-service.
    async with autocommit.connect() as connection:
        order, items, replayed = await service.create_order(connection, body, key, telemetry)
        audit = await service.write_audit(audit_service, connection, order, body, key)
    return OrderProcessResponse(
        order=service.order_out(order, items), audit=audit, replayed=replayed
    )


@router.get("/orders")
async def list_orders(
    autocommit: AutocommitDep,
    response: Response,
    user_id: IdFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[OrderOut]:
    """Newest first; the total is in ``X-Total-Count``."""
    async with autocommit.connect() as connection:
        orders, total = await repository.list_orders(
            connection, user_id=user_id, limit=limit, offset=offset
        )
    set_total(response, total)
    return [service.order_out(order, items) for order, items in orders]


@router.get("/orders/{order_id}", responses={404: {"description": "No such order"}})
async def get_order(order_id: OrderId, autocommit: AutocommitDep) -> OrderOut:
    async with autocommit.connect() as connection:
        found = await repository.get_order(connection, order_id)
    if found is None:
        raise NotFoundError(f"order {order_id} not found")
    trace.get_current_span().set_attribute("order.id", order_id)
    return service.order_out(*found)

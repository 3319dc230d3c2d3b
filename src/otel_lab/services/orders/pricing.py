"""Order pricing: a small catalog, tier discounts and tax, with item-level spans.

Each line is priced in its own ``price_item`` span carrying the item's attributes
(``order.item.sku``, ``.quantity``, ``.unit_price``, ``.line_total``), under one ``pricing``
span with the order's totals: a trace shows what was charged and why.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from opentelemetry import trace

SCOPE = "otel_lab.orders.pricing"

CURRENCY = "USD"
CENT = Decimal("0.01")
TAX_RATE = Decimal("0.08")
TIER_DISCOUNT = {"standard": Decimal("0"), "premium": Decimal("0.10"), "gold": Decimal("0.15")}
# sku -> (name, unit price)
CATALOG: dict[str, tuple[str, Decimal]] = {
    "SKU-BOOK": ("Observability Engineering (book)", Decimal("39.99")),
    "SKU-MUG": ("Trace mug", Decimal("12.50")),
    "SKU-TSHIRT": ("Span T-shirt", Decimal("24.00")),
    "SKU-STICKERS": ("Sticker pack", Decimal("4.99")),
    "SKU-HOODIE": ("Metrics hoodie", Decimal("54.00")),
}


@dataclass(frozen=True)
class Line:
    sku: str
    name: str
    quantity: int
    unit_price: Decimal
    line_total: Decimal


@dataclass(frozen=True)
class PricedOrder:
    lines: tuple[Line, ...]
    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal
    currency: str = CURRENCY


def default_items(user_id: int, action: str) -> list[tuple[str, int]]:
    """The chain's requests name no items: derive 1-3 distinct ones from user and action.

    Stable (a seeded generator, not ``hash()``), so the same request prices the same.
    """
    return list(_derived_items(user_id, action))


@lru_cache(maxsize=1024)
def _derived_items(user_id: int, action: str) -> tuple[tuple[str, int], ...]:
    """Cached: seeding a generator per request was 2 % of order-service's CPU under the
    chain, whose requests repeat a few users and actions."""
    rng = random.Random(zlib.crc32(f"{user_id}:{action}".encode()))
    skus = rng.sample(sorted(CATALOG), rng.randint(1, 3))
    return tuple((sku, rng.randint(1, 3)) for sku in skus)


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def price_order(items: list[tuple[str, int]], tier: str, tracer: trace.Tracer) -> PricedOrder:
    """Price every line in its own span, then discount by tier and add tax."""
    with tracer.start_as_current_span(
        "pricing", attributes={"operation.type": "business_logic", "user.tier": tier}
    ) as span:
        lines = []
        for index, (sku, quantity) in enumerate(items):
            name, unit_price = CATALOG[sku]
            with tracer.start_as_current_span(
                "price_item",
                attributes={
                    "order.item.index": index,
                    "order.item.sku": sku,
                    "order.item.name": name,
                    "order.item.quantity": quantity,
                    "order.item.unit_price": float(unit_price),
                },
            ) as item_span:
                line_total = _money(unit_price * quantity)
                item_span.set_attribute("order.item.line_total", float(line_total))
                lines.append(Line(sku, name, quantity, unit_price, line_total))
        subtotal = sum((line.line_total for line in lines), Decimal("0"))
        discount_rate = TIER_DISCOUNT.get(tier, Decimal("0"))
        discount = _money(subtotal * discount_rate)
        tax = _money((subtotal - discount) * TAX_RATE)
        total = subtotal - discount + tax
        span.set_attributes(
            {
                "order.item_count": len(lines),
                "order.subtotal": float(subtotal),
                "order.discount_rate": float(discount_rate),
                "order.discount": float(discount),
                "order.tax": float(tax),
                "order.total": float(total),
                "order.currency": CURRENCY,
            }
        )
        return PricedOrder(tuple(lines), subtotal, discount, tax, total)

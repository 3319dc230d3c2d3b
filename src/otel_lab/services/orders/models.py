"""Tables owned by order-service: ``orders`` and their ``order_items``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import DateTime, ForeignKey, Identity, Integer, Numeric, String, func
from sqlalchemy.orm import Mapped, mapped_column

from otel_lab.db import Base

Money = Numeric(12, 2)


class Order(Base):
    __tablename__ = "orders"
    # Read server-made values (ids, timestamps) back with RETURNING: no lazy load later.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    # No foreign key to users: the table belongs to another service.
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="created", server_default="created")
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    subtotal: Mapped[Decimal] = mapped_column(Money)
    discount: Mapped[Decimal] = mapped_column(Money)
    tax: Mapped[Decimal] = mapped_column(Money)
    total: Mapped[Decimal] = mapped_column(Money)
    item_count: Mapped[int] = mapped_column(Integer)
    # recorded | deferred (audit-service was unavailable; the order completed anyway)
    audit_status: Mapped[str] = mapped_column(
        String(20), default="pending", server_default="pending"
    )
    # A retried chain call carries the same key and gets the same order back.
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    # Which request the key was first used for (services/persistence.py): another request
    # with the key is a 422. None in rows older than migration 0003.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    trace_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class OrderItem(Base):
    __tablename__ = "order_items"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    sku: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal] = mapped_column(Money)
    line_total: Mapped[Decimal] = mapped_column(Money)

"""orders and audit_logs keep a fingerprint of the request that first used their key

A retried chain call with the same ``Idempotency-Key`` replays what the first one wrote; a
different request with that key is a 422 (``services/persistence.py``). The column is
nullable and left empty in the rows already written: those replay as they always did.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("orders", "audit_logs")


def upgrade() -> None:
    # Nullable, no default: PostgreSQL adds the column without rewriting the table.
    for table in TABLES:
        op.add_column(table, sa.Column("request_fingerprint", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "request_fingerprint")

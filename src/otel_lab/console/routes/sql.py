"""``/api/sql``: one read-only statement at a time, time-limited and row-capped."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from otel_lab.console import sqlconsole
from otel_lab.console.routes.common import Blank, ConsoleJSON, OptionsDep, StoreDep, error

router = APIRouter(prefix="/api/sql", tags=["sql"])

RowLimit = Annotated[int | None, Query(ge=1, le=sqlconsole.MAX_ROWS_LIMIT), Blank]


class SqlRequest(BaseModel):
    sql: str
    limit: int | None = Field(None, ge=1, le=sqlconsole.MAX_ROWS_LIMIT)


def _run(store: StoreDep, options: OptionsDep, sql: str, limit: int | None) -> ConsoleJSON:
    try:
        result = sqlconsole.run_sql(
            store.path, sql, max_rows=limit or options.sql_max_rows, timeout=options.sql_timeout
        )
    except sqlconsole.SqlError as exc:
        return error(400, str(exc))
    return ConsoleJSON(result)


@router.get("")
def sql_get(
    store: StoreDep, options: OptionsDep, q: str = "", limit: RowLimit = None
) -> ConsoleJSON:
    """Run one read-only statement (time-limited, row-capped); BLOBs come back as hex."""
    return _run(store, options, q, limit)


@router.post("")
def sql_post(store: StoreDep, options: OptionsDep, body: SqlRequest) -> ConsoleJSON:
    return _run(store, options, body.sql, body.limit)


@router.get("/schema")
def sql_schema(store: StoreDep, options: OptionsDep) -> ConsoleJSON:
    return ConsoleJSON(
        {
            "tables": sqlconsole.schema(store.path),
            "examples": [{"title": t, "sql": s} for t, s in sqlconsole.EXAMPLES],
            "timeout_seconds": options.sql_timeout,
            "max_rows": options.sql_max_rows,
        }
    )

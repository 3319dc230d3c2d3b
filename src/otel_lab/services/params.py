"""Request parameters every service reads the same way: row ids and pages.

Every id is a PostgreSQL ``integer``; a larger number is a 422 at the edge, never a 500 from
the database. Lists take ``limit``/``offset`` and answer the total in ``X-Total-Count``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Response, params
from pydantic import Field

MAX_ID = 2**31 - 1  # PostgreSQL integer

# A row id in a request body.
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
# A row id that filters a list (``?user_id=``).
IdFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size (1-100)")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Rows to skip")]


def path_id(description: str) -> params.Path:
    """A path parameter that is a row id, e.g. ``Annotated[int, path_id("The user's id")]``."""
    parameter: params.Path = Path(ge=1, le=MAX_ID, description=description)
    return parameter


def set_total(response: Response, total: int) -> None:
    """The number of rows the whole list has, of which the answer is one page."""
    response.headers["X-Total-Count"] = str(total)

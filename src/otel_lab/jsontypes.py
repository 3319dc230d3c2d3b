"""JSON as parsed or about to be encoded: what request and response bodies, JSONB columns,
stored attributes and OTLP/JSON documents hold, so code that builds or reads them says so
instead of ``Any``.

Containers inside a value are read-only (``Sequence``, ``Mapping``), so a ``list[str]`` or a
``dict[str, int]`` is a JSON value as it is; ``JSONObject`` and ``JSONArray`` are documents
being built. (``bytes`` type-checks as a sequence of ints: encode it first.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

JSONScalar: TypeAlias = str | int | float | bool | None
JSONValue: TypeAlias = JSONScalar | Sequence["JSONValue"] | Mapping[str, "JSONValue"]
JSONObject: TypeAlias = dict[str, JSONValue]
JSONArray: TypeAlias = list[JSONValue]

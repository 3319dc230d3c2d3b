"""The weather upstream's answer to ``GET /v1/current``: what it serves, and what the api's
weather client accepts (anything else is an invalid upstream response)."""

from __future__ import annotations

from pydantic import BaseModel


class Observation(BaseModel):
    city: str
    temperature_c: float
    feels_like_c: float
    humidity_pct: int
    wind_kph: float
    conditions: str

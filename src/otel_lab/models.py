"""Every service's tables, registered on one metadata for Alembic."""

from __future__ import annotations

import importlib

# Each service owns its tables in its own models module.
MODEL_MODULES = (
    "otel_lab.items",  # the api writes items, the worker enriches them
    "otel_lab.services.users.models",
    "otel_lab.services.orders.models",
    "otel_lab.services.audit.models",
)


def import_all_models() -> None:
    for module in MODEL_MODULES:
        importlib.import_module(module)

"""Alembic migrations: ``python -m alembic -c src/otel_lab/migrations/alembic.ini upgrade head``."""

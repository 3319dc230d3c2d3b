# syntax=docker/dockerfile:1.7
#
# One image for every Otel Lab process: gateway, api, user/order/audit services, the Celery
# worker and the migration job differ only in their command (see deploy/compose and deploy/k8s).
#
#   docker build -t otel-lab .                 # runtime image (default, last stage)
#   docker build --target dev -t otel-lab:dev . # dev image: dev deps, no project code, hot reload
#
# Why it looks like this:
# - uv installs exactly what uv.lock says (`--frozen`): the image and CI resolve nothing.
# - Dependencies are installed in their own layer before the source is copied, so editing code
#   rebuilds in seconds; a BuildKit cache mount keeps uv's download cache between builds.
# - The virtualenv is built in a throw-away stage; the runtime stage has no uv, no compiler,
#   no build cache, and runs as an unprivileged user (uid 10001) with a read-only-friendly layout.
# - The project is installed editable from /app/src so that `src/otel_lab/migrations/alembic.ini`
#   (used by the migrate job) resolves at the same path in the image as in the repository.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
# UVICORN_HTTP is uvicorn's --http: the services' protocol (otel_lab.registry.HTTP_PROTOCOL,
# JSON 400s for requests it cannot parse), for every uvicorn command of compose and Kubernetes.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    UVICORN_HTTP=otel_lab.http_protocol:JsonErrorsProtocol
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app && chown app:app /app
WORKDIR /app

# ---------------------------------------------------------------------------------------------
# Shared uv settings for the stages that install.
FROM base AS uv-base
COPY --from=uv /uv /uvx /usr/local/bin/
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_FROZEN=1

# ---------------------------------------------------------------------------------------------
# Runtime dependencies only, then the project itself.
FROM uv-base AS builder
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# ---------------------------------------------------------------------------------------------
# Development image: dependencies including the dev group, but not the project: the source is
# bind-mounted at /app/src by deploy/compose/docker-compose.dev.yml and found through
# PYTHONPATH, and uvicorn runs with --reload. Only the virtualenv changes owner: the bind
# mounts under /app (uv.lock, pyproject.toml) are read-only, so `chown -R /app` fails there.
FROM uv-base AS dev
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-install-project \
 && chown -R app:app "$UV_PROJECT_ENVIRONMENT"
ENV PYTHONPATH=/app/src
USER app
EXPOSE 8000
CMD ["uvicorn", "--factory", "otel_lab.services.api.app:create_app", "--host", "0.0.0.0", "--port", "8000", \
     "--reload", "--reload-dir", "/app/src"]

# ---------------------------------------------------------------------------------------------
# Runtime image (default target).
FROM base AS runtime
COPY --from=builder --chown=app:app /app /app
USER app
EXPOSE 8000
# No HEALTHCHECK here: the same image runs HTTP services, the worker and the one-shot migrate
# job, so compose and Kubernetes define the right probe for each.
CMD ["uvicorn", "--factory", "otel_lab.services.api.app:create_app", "--host", "0.0.0.0", "--port", "8000"]

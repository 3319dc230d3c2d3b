"""An offline weather API on loopback, so ``GET /weather/{city}`` works without internet.

Run it with ``uvicorn --factory otel_lab.services.weather_upstream.app:create_app``; under
``INSTRUMENTATION_MODE=zero-code`` wrap that command with :mod:`.launch`.
"""

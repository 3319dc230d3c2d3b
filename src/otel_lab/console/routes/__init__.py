"""The console's HTTP API, one router per area; :func:`otel_lab.console.api.create_app`
puts them together. Shared parameter types and dependencies are in :mod:`.common`."""

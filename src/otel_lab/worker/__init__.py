"""The Celery worker: work that is better done off the request path."""

"""The HTTP services, each a FastAPI app built by ``services.base.create_service``."""

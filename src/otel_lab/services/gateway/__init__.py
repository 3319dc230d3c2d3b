"""The gateway: the single front door that routes every public path to its service."""

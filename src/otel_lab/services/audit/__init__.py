"""audit-service: the audit trail; ``POST /process`` ends the chain (seed 002)."""

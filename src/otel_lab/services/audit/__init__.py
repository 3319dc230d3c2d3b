"""audit-service: the audit trail; ``POST /process`` ends the service chain."""

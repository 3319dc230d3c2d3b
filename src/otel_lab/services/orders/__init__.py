"""order-service: orders and pricing; ``POST /process`` continues the chain (seed 002)."""

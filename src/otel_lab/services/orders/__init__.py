"""order-service: orders and pricing; ``POST /process`` continues the service chain."""

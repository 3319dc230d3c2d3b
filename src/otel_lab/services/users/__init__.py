"""user-service: users and todos, and `POST /process`, the start of the service chain."""

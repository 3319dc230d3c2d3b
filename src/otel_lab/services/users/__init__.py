"""user-service: users and todos (seed 004), and `POST /process`, the chain's start (002)."""

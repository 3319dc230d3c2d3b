"""Locust, for those who prefer it: the same mix as ``otel-lab load``, through the gateway.

    .venv/bin/locust -f scripts/locustfile.py --host http://127.0.0.1:8080

Run it as its own process: importing locust patches the standard library (gevent).
"""

from __future__ import annotations

import random

from locust import HttpUser, between, task

CITIES = ("london", "paris", "tokyo", "new-york", "sydney", "berlin")


class OtelLabUser(HttpUser):
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.items: list[int] = []

    @task(3)
    def create_item(self) -> None:
        response = self.client.post("/items", json={"name": f"locust {random.randrange(10**6)}"})
        if response.status_code == 201:
            self.items = [*self.items[-99:], response.json()["id"]]

    @task(6)
    def read_item(self) -> None:
        if self.items:
            self.client.get(f"/items/{random.choice(self.items)}", name="/items/{id}")

    @task(3)
    def analyze(self) -> None:
        self.client.post("/analyze", json={"a": random.uniform(-9, 9), "b": random.uniform(-9, 9)})

    @task(3)
    def chain(self) -> None:
        self.client.post(
            "/api/v1/process", json={"user_id": random.randint(1001, 1010), "action": "locust"}
        )

    @task(2)
    def weather(self) -> None:
        self.client.get(f"/weather/{random.choice(CITIES)}", name="/weather/{city}")

    @task(1)
    def showcase(self) -> None:
        for path in ("/hello", "/db-operation", "/complex-operation"):
            self.client.get(path)

    @task(1)
    def error_simulation(self) -> None:
        with self.client.get("/error-simulation", catch_response=True) as response:
            if response.status_code in (200, 500):  # failures are the point of this endpoint
                response.success()

"""``worker_queue_depth``: how many tasks wait in the broker, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from otel_lab.queue import DEFAULT_QUEUE


class QueueDepthCollector(Collector):
    def __init__(self, client: redis.Redis, queues: tuple[str, ...] = (DEFAULT_QUEUE,)) -> None:
        self.client = client
        self.queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "worker_queue_depth", "Tasks waiting in the broker queue.", labels=["queue"]
        )
        for queue in self.queues:
            try:
                family.add_metric([queue], self.client.llen(queue))
            except redis.RedisError:
                continue  # no sample rather than a wrong one; the cache alert covers the outage
        yield family


_registered: list[QueueDepthCollector] = []


def register_queue_depth(client: redis.Redis) -> None:
    """Register once per process (the lifespan may run again in tests)."""
    if _registered:
        _registered[0].client = client
        return
    collector = QueueDepthCollector(client)
    REGISTRY.register(collector)
    _registered.append(collector)

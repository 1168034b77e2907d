"""The consumer's Prometheus metrics (its own /metrics, PREDMESH_CONSUMER_METRICS_ADDR)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ConsumerMetrics:
    """Counters by outcome, window sizes, latencies and connection state; labels are bounded (status names)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.consumed = Counter("predmesh_consumer_consumed", "Jobs delivered to this consumer (incl. redeliveries)",
                                registry=registry)
        self.redelivered = Counter("predmesh_consumer_redelivered", "Deliveries flagged redelivered by the broker",
                                   registry=registry)
        self.acked = Counter("predmesh_consumer_acked", "Jobs acked after their result was confirmed",
                             registry=registry)
        self.rejected = Counter("predmesh_consumer_rejected", "Jobs dead-lettered, by reason",
                                ["reason"], registry=registry)
        self.retried = Counter("predmesh_consumer_retried", "Jobs held for a retry after a transient failure, "
                               "by gRPC status", ["code"], registry=registry)
        self.unroutable = Counter("predmesh_consumer_unroutable", "Results or dead letters the broker returned "
                                  "(mandatory, no queue bound; not direct reply-to)", registry=registry)
        self.publish_nacked = Counter("predmesh_consumer_publish_nacked", "Publishes the broker nacked (rescored)",
                                      registry=registry)
        self.window = Histogram("predmesh_consumer_window_jobs", "Jobs scored together in one window",
                                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=registry)
        self.job_seconds = Histogram("predmesh_consumer_job_seconds", "Delivery to ack, per job",
                                     buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
                                     registry=registry)
        self.end_to_end = Histogram("predmesh_consumer_end_to_end_seconds", "Publish (x-predmesh-published-at-ms "
                                    "header, else the AMQP timestamp property) to ack, per job",
                                    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300),
                                    registry=registry)
        self.connected = Gauge("predmesh_consumer_connected", "1 while connected to the broker and consuming",
                               registry=registry)
        self.reconnects = Counter("predmesh_consumer_reconnects", "Broker sessions lost and reopened",
                                  registry=registry)
        self.held = Gauge("predmesh_consumer_held", "Jobs held unacked for a retry", registry=registry)
        self.held_oldest = Gauge("predmesh_consumer_held_oldest_seconds", "Age of the oldest job held for a retry "
                                 "(since its first transient failure; 0 when none is held)", registry=registry)
        self.dead_letters = Gauge("predmesh_consumer_dlq_depth", "Messages in the dead-letter queue (polled)",
                                  registry=registry)

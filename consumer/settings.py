"""Consumer settings, read once from PREDMESH_* variables by the entry point and passed down."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from predmesh.env import ConfigError, Env, redact
from predmesh.logs import LEVELS

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
MAX_CONNECTIONS = 64  # PREDMESH_CONSUMER_CONNECTIONS: each is a gRPC channel opened (and spread) at start


def check_amqp_url(url: str) -> str:
    """The URL if it names a broker (amqp:// or amqps://, a host, a numeric port if any); ConfigError otherwise.
    Another scheme (http://…) was taken for a broker and retried for ever as 'Name or service not known'."""
    where = f"PREDMESH_AMQP_URL {redact(url)}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"{where}: scheme must be amqp:// or amqps:// (amqp://user:pass@host:5672/%2F)")
    if not parts.hostname:
        raise ConfigError(f"{where} names no host (amqp://user:pass@host:5672/%2F)")
    return url


@dataclass(frozen=True)
class AmqpSettings:
    """Broker connection and topology; shared by the consumer and `predmesh publish`."""

    url: str = DEFAULT_AMQP_URL
    prefix: str = "predmesh"             # <prefix>.predict, <prefix>.predict.dead, <prefix>.dlx, <prefix>.results
    delivery_limit: int = 10             # quorum queue x-delivery-limit: a job that keeps killing consumers
    heartbeat_s: int = 30
    blocked_timeout_s: float = 300.0     # connection.blocked (broker alarm) longer than this closes the connection
    reconnect_max_s: float = 30.0        # cap of the jittered reconnect backoff

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AmqpSettings:
        env = Env(environ)
        return cls(url=check_amqp_url(env.str("AMQP_URL", cls.url)), prefix=env.str("AMQP_PREFIX", cls.prefix),
                   delivery_limit=env.int("AMQP_DELIVERY_LIMIT", cls.delivery_limit, minimum=1),
                   heartbeat_s=env.int("AMQP_HEARTBEAT_S", cls.heartbeat_s, minimum=0),
                   blocked_timeout_s=env.float("AMQP_BLOCKED_TIMEOUT_S", cls.blocked_timeout_s, positive=True),
                   reconnect_max_s=env.float("AMQP_RECONNECT_MAX_S", cls.reconnect_max_s, positive=True))


@dataclass(frozen=True)
class ConsumerSettings:
    """Everything `predmesh consume` needs; see the README's configuration table."""

    amqp: AmqpSettings = AmqpSettings()
    target: str = "127.0.0.1:50051"      # inference server (or gateway) gRPC address
    metrics_addr: str = "127.0.0.1:9102"
    prefetch: int = 64                   # unacked jobs per consumer = the most a window holds
    windows_in_flight: int = 2           # windows scored at once (one's RPC and fsync overlap the next's)
    connections: int = 2                 # gRPC connections, spread over the server's processes (predmesh.spread)
    rpc_timeout_s: float = 10.0
    max_body_bytes: int = 1024 * 1024    # larger jobs are dead-lettered
    max_call_rows: int = 500             # rows per PredictBatch call (keep <= the server's PREDMESH_MAX_BATCH_ROWS)
    retry_max_s: float = 10.0            # cap of the jittered backoff between retries of a transient failure
    hold_max_s: float = 600.0            # a job held (retried) longer than this is dead-lettered with its last error
    grace_s: float = 30.0                # on SIGTERM: time to finish in-flight jobs before giving them back
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ConsumerSettings:
        env = Env(environ)
        return cls(
            amqp=AmqpSettings.from_env(environ),
            target=env.str("SERVER_ADDR", "") or env.str("GRPC_ADDR", cls.target),
            metrics_addr=env.addr("CONSUMER_METRICS_ADDR", cls.metrics_addr, optional=True),
            prefetch=env.int("CONSUMER_PREFETCH", cls.prefetch, minimum=1),
            windows_in_flight=env.int("CONSUMER_WINDOWS", cls.windows_in_flight, minimum=1),
            connections=env.int("CONSUMER_CONNECTIONS", cls.connections, minimum=1, maximum=MAX_CONNECTIONS),
            rpc_timeout_s=env.float("CONSUMER_RPC_TIMEOUT_S", cls.rpc_timeout_s, positive=True),
            max_body_bytes=env.int("CONSUMER_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1),
            max_call_rows=env.int("CONSUMER_MAX_CALL_ROWS", cls.max_call_rows, minimum=1),
            retry_max_s=env.float("CONSUMER_RETRY_MAX_S", cls.retry_max_s, positive=True),
            hold_max_s=env.float("CONSUMER_HOLD_MAX_S", cls.hold_max_s, positive=True),
            log_level=env.choice("LOG_LEVEL", cls.log_level, LEVELS),
            grace_s=env.float("CONSUMER_GRACE_S", cls.grace_s, minimum=0))

"""Server settings, read once from PREDMESH_* variables by the entry point and passed down."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from predmesh.env import ConfigError, Env


@dataclass(frozen=True)
class ServerSettings:
    """Everything the inference server needs to start; see the README's configuration table."""

    grpc_addr: str = "127.0.0.1:50051"
    metrics_addr: str = "127.0.0.1:9101"
    model_store: Path = Path("var/models")
    signing_key: bytes | None = None
    admin_token: str | None = None
    readonly_token: str | None = None
    max_batch_rows: int = 1000
    max_message_bytes: int = 1024 * 1024
    batch_max_size: int = 64
    batch_max_delay_ms: float = 1.0  # only under load: a batch waits this long to fill (never when idle)
    range_tolerance: float = 10.0
    workers: int = 64
    max_concurrent_rpcs: int = 512
    drain_seconds: float = 1.0
    grace_seconds: float = 10.0
    runtime: str = "sklearn"  # "native": verified fast predict_proba kernels where available (inference/kernels.py)
    processes: int = 1  # >1: that many server processes share the gRPC port (SO_REUSEPORT), see inference/workers.py
    pin_workers: bool = True  # several processes: each one's threads kept on one CPU of the allowed set
    drift: bool = True  # track live data drift against each version's training distribution (inference/drift.py)
    drift_window_s: float = 600.0  # the sliding window drift is computed over
    reload_poll_seconds: float = 1.0  # multi-process: how often each process checks the serving pointers
    fault_delay_ms: float = 0.0  # test hook: delay every Predict (cancellable), see tests/integration
    tls_cert: Path | None = None       # PEM certificate chain: serve gRPC over TLS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # PEM CA bundle: require and verify client certificates (mTLS)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServerSettings:
        env = Env(environ)
        key = env.secret("MODEL_SIGNING_KEY")
        return cls(
            grpc_addr=env.str("GRPC_ADDR", cls.grpc_addr),
            metrics_addr=env.str("METRICS_ADDR", cls.metrics_addr),
            model_store=env.path("MODEL_STORE", str(cls.model_store)),
            signing_key=key.encode() if key else None,
            admin_token=env.secret("ADMIN_TOKEN"),
            readonly_token=env.secret("READONLY_TOKEN"),
            max_batch_rows=env.int("MAX_BATCH_ROWS", cls.max_batch_rows, minimum=1),
            max_message_bytes=env.int("MAX_MESSAGE_BYTES", cls.max_message_bytes, minimum=1024),
            batch_max_size=env.int("BATCH_MAX_SIZE", cls.batch_max_size, minimum=1),
            batch_max_delay_ms=env.float("BATCH_MAX_DELAY_MS", cls.batch_max_delay_ms),
            range_tolerance=env.float("RANGE_TOLERANCE", cls.range_tolerance),
            workers=env.int("WORKERS", cls.workers, minimum=2),
            max_concurrent_rpcs=env.int("MAX_CONCURRENT_RPCS", cls.max_concurrent_rpcs, minimum=1),
            drain_seconds=env.float("DRAIN_SECONDS", cls.drain_seconds),
            grace_seconds=env.float("GRACE_SECONDS", cls.grace_seconds),
            runtime=_runtime(env.str("RUNTIME", cls.runtime)),
            processes=env.int("PROCESSES", cls.processes, minimum=1),
            pin_workers=env.bool("PIN_WORKERS", cls.pin_workers),
            reload_poll_seconds=env.float("RELOAD_POLL_SECONDS", cls.reload_poll_seconds),
            drift=env.bool("DRIFT", cls.drift),
            drift_window_s=_positive("DRIFT_WINDOW_S", env.float("DRIFT_WINDOW_S", cls.drift_window_s)),
            fault_delay_ms=env.float("FAULT_DELAY_MS", cls.fault_delay_ms),
            tls_cert=Path(env.str("TLS_CERT", "")) if env.str("TLS_CERT", "") else None,
            tls_key=Path(env.str("TLS_KEY", "")) if env.str("TLS_KEY", "") else None,
            tls_client_ca=Path(env.str("TLS_CLIENT_CA", "")) if env.str("TLS_CLIENT_CA", "") else None,
        )


def _runtime(value: str) -> str:
    if value not in ("sklearn", "native"):
        raise ConfigError(f"PREDMESH_RUNTIME={value!r} must be 'sklearn' or 'native'")
    return value


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"PREDMESH_{name}={value!r} must be a positive number of seconds")
    return value

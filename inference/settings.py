"""Settings of `python -m inference`, read once from PREDMESH_* variables by the entry point and passed down."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from database.settings import DatabaseSettings
from predmesh.env import DEFAULT_GRPC_ADDR, ConfigError, Env, split_addr
from predmesh.logs import LEVELS

RUNTIMES = ("native", "sklearn")
PERSISTENCE_MODES = ("off", "async", "durable")


def allowed_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerSettings:
    """Everything the inference server needs to start; see the README's configuration table.

    The field defaults describe one in-process server (tests build it directly); from_env holds the defaults of
    the entry point, where PREDMESH_PROCESSES is `auto` (one process per allowed CPU)."""

    grpc_addr: str = DEFAULT_GRPC_ADDR
    metrics_addr: str = "127.0.0.1:9101"
    model_store: Path = Path("var/models")
    signing_key: bytes | None = None
    admin_token: str | None = None
    readonly_token: str | None = None
    writer_token: str | None = None  # may write monitoring data (feedback, batch runs); the admin token may too
    open_writes: bool = False  # anyone may write monitoring data (announced at start); off: a token is needed
    max_batch_rows: int = 1000
    max_message_bytes: int = 1024 * 1024
    batch_max_size: int = 64
    batch_max_delay_ms: float = 1.0  # only under load: a batch waits this long to fill (never when idle)
    range_tolerance: float = 10.0
    workers: int = 64
    max_concurrent_rpcs: int = 512
    # streaming calls (PredictStream, reflection, health Watch) hold a handler thread each for as long as they are
    # open: at most this many at once (0: half of workers, at most 16), so unary calls always keep the others
    max_streams: int = 0
    stream_idle_seconds: float = 30.0  # a stream with no message either way this long is ended (0: never)
    drain_seconds: float = 1.0
    grace_seconds: float = 10.0
    # "native": verified fast predict_proba kernels where they reproduce scikit-learn (inference/models/kernels.py),
    # scikit-learn otherwise; "sklearn": always scikit-learn's own predict_proba.
    runtime: str = "native"
    processes: int = 1  # >1: that many processes share the gRPC port (SO_REUSEPORT), see inference/process/workers.py
    pin_workers: bool = True  # several processes: each one's threads kept on one CPU of the allowed set
    drift: bool = True  # track live data drift against each version's training distribution (inference/models/drift.py)
    drift_window_s: float = 600.0  # the sliding window drift is computed over
    reload_poll_seconds: float = 1.0  # multi-process: how often each process checks the serving pointers
    tls_cert: Path | None = None       # PEM certificate chain: serve gRPC over TLS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # PEM CA bundle: require and verify client certificates (mTLS)
    log_level: str = "INFO"
    idempotency_cache: int = 200_000  # recent answers (rows) kept per process for retries of their request_id

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServerSettings:
        env = Env(environ)
        key = env.secret("MODEL_SIGNING_KEY")
        grpc_addr = env.addr("GRPC_ADDR", cls.grpc_addr)

        def path(name: str) -> Path | None:
            raw = env.str(name, "")
            return Path(raw) if raw else None

        tokens = _distinct(admin=env.secret("ADMIN_TOKEN"), readonly=env.secret("READONLY_TOKEN"),
                           writer=env.secret("WRITER_TOKEN"))
        return cls(
            grpc_addr=grpc_addr,
            metrics_addr=env.addr("METRICS_ADDR", cls.metrics_addr, optional=True),
            model_store=env.path("MODEL_STORE", str(cls.model_store)),
            signing_key=key.encode() if key else None,
            admin_token=tokens["admin"],
            readonly_token=tokens["readonly"],
            writer_token=tokens["writer"],
            open_writes=env.bool("OPEN_WRITES", cls.open_writes),
            max_batch_rows=env.int("MAX_BATCH_ROWS", cls.max_batch_rows, minimum=1),
            max_message_bytes=env.int("MAX_MESSAGE_BYTES", cls.max_message_bytes, minimum=1024),
            batch_max_size=env.int("BATCH_MAX_SIZE", cls.batch_max_size, minimum=1),
            batch_max_delay_ms=env.float("BATCH_MAX_DELAY_MS", cls.batch_max_delay_ms, minimum=0),
            range_tolerance=_tolerance(env.float("RANGE_TOLERANCE", cls.range_tolerance)),
            workers=env.int("WORKERS", cls.workers, minimum=2),
            max_concurrent_rpcs=env.int("MAX_CONCURRENT_RPCS", cls.max_concurrent_rpcs, minimum=1),
            max_streams=_stream_share(env.int("MAX_STREAMS", 0, minimum=0), env.int("WORKERS", cls.workers, minimum=2)),
            stream_idle_seconds=env.float("STREAM_IDLE_SECONDS", cls.stream_idle_seconds, minimum=0),
            drain_seconds=env.float("DRAIN_SECONDS", cls.drain_seconds, minimum=0),
            grace_seconds=env.float("GRACE_SECONDS", cls.grace_seconds, minimum=0),
            runtime=env.choice("RUNTIME", cls.runtime, RUNTIMES),
            processes=_processes(env, grpc_addr),
            pin_workers=env.bool("PIN_WORKERS", cls.pin_workers),
            reload_poll_seconds=env.float("RELOAD_POLL_SECONDS", cls.reload_poll_seconds, positive=True),
            drift=env.bool("DRIFT", cls.drift),
            drift_window_s=env.float("DRIFT_WINDOW_S", cls.drift_window_s, positive=True),
            **_tls_files(path("TLS_CERT"), path("TLS_KEY"), path("TLS_CLIENT_CA")),
            log_level=env.choice("LOG_LEVEL", cls.log_level, LEVELS),
            idempotency_cache=env.int("IDEMPOTENCY_CACHE", cls.idempotency_cache, minimum=0),
        )


def _tls_files(cert: Path | None, key: Path | None, client_ca: Path | None) -> dict[str, Path | None]:
    """PREDMESH_TLS_CERT/KEY/CLIENT_CA: cert and key together, a client CA only with them, every file readable."""
    if bool(cert) != bool(key):
        given, missing = ("TLS_CERT", "TLS_KEY") if cert else ("TLS_KEY", "TLS_CERT")
        raise ConfigError(f"PREDMESH_{given} is set without PREDMESH_{missing}: set both (or neither, for plaintext)")
    if client_ca and not cert:
        raise ConfigError("PREDMESH_TLS_CLIENT_CA needs PREDMESH_TLS_CERT and PREDMESH_TLS_KEY (mTLS is TLS first)")
    for name, file in (("TLS_CERT", cert), ("TLS_KEY", key), ("TLS_CLIENT_CA", client_ca)):
        if file is None:
            continue
        try:
            with file.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"PREDMESH_{name}: cannot read {file}: {exc.strerror}") from None
    return {"tls_cert": cert, "tls_key": key, "tls_client_ca": client_ca}


def _distinct(**tokens: str | None) -> dict[str, str | None]:
    """Each role its own token: one value for two roles would give the lower role the higher one's rights."""
    seen: dict[str, str] = {}
    for role, token in tokens.items():
        if token and token in seen:
            raise ConfigError(f"PREDMESH_{role.upper()}_TOKEN is the same as PREDMESH_{seen[token].upper()}_TOKEN: "
                              "give each role its own token")
        if token:
            seen[token] = role
    return tokens


def _tolerance(value: float) -> float:
    if not (math.isfinite(value) and value >= 0):  # NaN would switch the check off silently, inf never refuse
        raise ConfigError(f"PREDMESH_RANGE_TOLERANCE={value!r} must be a finite number >= 0 (training spans; 0: off)")
    return value


def stream_share(max_streams: int, workers: int) -> int:
    """The handler threads streaming calls may hold together: max_streams, or (0) half of workers, at most 16."""
    return max_streams or max(1, min(16, workers // 2))


def _stream_share(max_streams: int, workers: int) -> int:
    if max_streams >= workers:
        raise ConfigError(f"PREDMESH_MAX_STREAMS={max_streams} must be below PREDMESH_WORKERS={workers}: each open "
                          "stream holds a handler thread, and unary calls need some left")
    return stream_share(max_streams, workers)


def _share(name: str, value: float) -> float:
    if not 0 <= value <= 10:  # also refuses NaN
        raise ConfigError(f"PREDMESH_{name}={value!r} must be a share of the table between 0 (off) and 10")
    return value


def _processes(env: Env, grpc_addr: str) -> int:
    """PREDMESH_PROCESSES: `auto` (default) = one per allowed CPU; a port of 0 (any free port) cannot be shared by
    several processes, so `auto` means one there."""
    raw = env.str("PROCESSES", "auto").strip().lower()
    if raw == "auto":
        return 1 if split_addr(grpc_addr)[1] == 0 else allowed_cpus()
    try:
        return env.int("PROCESSES", 1, minimum=1)
    except ConfigError:
        raise ConfigError(f"PREDMESH_PROCESSES={raw!r}: use auto (one per CPU) or a number >= 1") from None


@dataclass(frozen=True)
class PersistenceSettings:
    """PREDMESH_DATABASE_URL, PREDMESH_PERSISTENCE and the spool; see the README's configuration table."""

    database_url: str = DatabaseSettings.url
    mode: str = "durable"
    spool_dir: Path = Path("var/spool")
    spool_max_bytes: int = 256 * 1024 * 1024
    auto_migrate: bool = True
    write_batch: int = 500
    flush_ms: float = 200.0  # larger batches cost the serving threads less GIL time per row
    db_writers: int = 2  # a backlog (memory or spool replay) is inserted this many batches at once, one connection each
    batch_run_stale_s: float = 180.0  # a RUNNING batch attempt that recorded nothing this long is abandoned
    analytics_max_s: float = 10.0  # the most one analytics call's SQL may take, whatever the client's deadline
    analyze_share: float = 0.1  # PostgreSQL: ANALYZE predictions once rows changed since the last exceed this share
    # how often each replica reads the fleet's desired state (the version of each model every replica serves)
    desired_state_poll_seconds: float = 2.0
    # how often each replica reads the feedback quality of every version (kept by database.aggregates) into its gauges
    quality_refresh_seconds: float = 5.0
    spool_drain_seconds: float = 10.0  # on stop: how long to keep storing spooled records before leaving them
    retention_days: int = 0  # the server's maintenance removes predictions older than this (0: keeps them all)
    maintenance_interval_s: float = 3600.0  # how often it runs (partitions ahead, retention)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PersistenceSettings:
        env = Env(environ)
        return cls(
            database_url=DatabaseSettings.from_env(environ).url,
            mode=env.choice("PERSISTENCE", cls.mode, PERSISTENCE_MODES),
            spool_dir=env.path("SPOOL_DIR", str(cls.spool_dir)),
            spool_max_bytes=env.int("SPOOL_MAX_BYTES", cls.spool_max_bytes, minimum=4096),
            auto_migrate=env.bool("AUTO_MIGRATE", cls.auto_migrate),
            write_batch=env.int("DB_WRITE_BATCH", cls.write_batch, minimum=1),
            flush_ms=env.float("DB_FLUSH_MS", cls.flush_ms, minimum=0),
            db_writers=env.int("DB_WRITERS", cls.db_writers, minimum=1),
            batch_run_stale_s=env.float("BATCH_RUN_STALE_S", cls.batch_run_stale_s, positive=True),
            analytics_max_s=env.float("ANALYTICS_MAX_SECONDS", cls.analytics_max_s, positive=True),
            analyze_share=_share("ANALYZE_SHARE", env.float("ANALYZE_SHARE", cls.analyze_share)),
            desired_state_poll_seconds=env.float("DESIRED_STATE_POLL_SECONDS", cls.desired_state_poll_seconds,
                                                 positive=True),
            quality_refresh_seconds=env.float("QUALITY_REFRESH_SECONDS", cls.quality_refresh_seconds, positive=True),
            spool_drain_seconds=env.float("SPOOL_DRAIN_SECONDS", cls.spool_drain_seconds, minimum=0),
            retention_days=DatabaseSettings.from_env(environ).retention_days,
        )


@dataclass(frozen=True)
class Settings:
    """All settings of `python -m inference`, read once at start."""

    server: ServerSettings
    persistence: PersistenceSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return cls(ServerSettings.from_env(environ), PersistenceSettings.from_env(environ))


__all__ = ["ConfigError", "PersistenceSettings", "ServerSettings", "Settings", "allowed_cpus"]

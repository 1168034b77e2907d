"""The batch pipeline's settings: PREDMESH_* variables read once by the entry point into a frozen object."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from predmesh.env import ConfigError, Env


def host_port(name: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{name}={value!r} is not host:port")
    return host, int(port)


@dataclass(frozen=True)
class BatchSettings:
    server: str = "127.0.0.1:50051"  # the inference server (or the gateway's native gRPC listener)
    batch_dir: Path = Path("var/batch")  # day outputs: <dir>/nightly/<model>/<date>/
    model: str = "iris"  # nightly default model
    rows: int = 10_000  # nightly default synthetic rows per day
    chunk_rows: int = 1000  # rows per PredictBatch call (at most the server's PREDMESH_MAX_BATCH_ROWS)
    inflight: int = 4  # chunks in flight at once
    channels: int = 2  # connections to the server (SO_REUSEPORT spreads connections over server processes)
    timeout_s: float = 30.0  # deadline of each call
    feedback_wait_s: float = 30.0  # how long Report retries feedback for predictions not stored yet
    luigid: str = "127.0.0.1:8082"  # central scheduler (`predmesh batch scheduler`)
    luigid_dir: Path = Path("var/luigi")  # luigid's state file and logs
    log_level: str = "INFO"
    fault_delay_ms: int = 0  # test hook: sleep this long after each scored chunk

    @property
    def luigid_host_port(self) -> tuple[str, int]:
        return host_port("PREDMESH_LUIGID_ADDR", self.luigid)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BatchSettings:
        env = Env(environ)
        settings = cls(
            server=env.str("SERVER_ADDR", "") or env.str("GRPC_ADDR", cls.server),
            batch_dir=env.path("BATCH_DIR", str(cls.batch_dir)),
            model=env.str("BATCH_MODEL", cls.model), rows=env.int("BATCH_ROWS", cls.rows, minimum=1),
            chunk_rows=env.int("BATCH_CHUNK_ROWS", cls.chunk_rows, minimum=1),
            inflight=env.int("BATCH_INFLIGHT", cls.inflight, minimum=1),
            channels=env.int("BATCH_CHANNELS", cls.channels, minimum=1),
            timeout_s=env.float("BATCH_TIMEOUT_S", cls.timeout_s),
            feedback_wait_s=env.float("BATCH_FEEDBACK_WAIT_S", cls.feedback_wait_s),
            luigid=env.str("LUIGID_ADDR", cls.luigid), luigid_dir=env.path("LUIGID_DIR", str(cls.luigid_dir)),
            log_level=env.str("LOG_LEVEL", cls.log_level).upper(),
            fault_delay_ms=env.int("BATCH_FAULT_DELAY_MS", 0, minimum=0))
        settings.luigid_host_port  # noqa: B018 -- validate now, not at first use
        if settings.timeout_s <= 0:
            raise ConfigError(f"PREDMESH_BATCH_TIMEOUT_S={settings.timeout_s} must be > 0")
        return settings

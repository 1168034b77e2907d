"""Gateway settings, read once from PREDMESH_GATEWAY_* variables by the entry point and passed down."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from predmesh.env import DEFAULT_GRPC_ADDR, ConfigError, Env, split_addr
from predmesh.logs import LEVELS

__all__ = ["GatewaySettings", "TlsFiles", "split_addr"]
ENVOY_LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "critical", "off")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for one side of a TLS hop; ca set on a server side means client certificates are required."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the Envoy gateway needs; see the README's configuration table."""

    public_addr: str = "127.0.0.1:8080"
    admin_addr: str = "127.0.0.1:8081"            # ModelAdminService REST; empty: no admin listener
    envoy_admin_addr: str = "127.0.0.1:9901"      # Envoy's own admin/stats interface
    stats_addr: str = ""                          # a listener exposing only GET /stats/prometheus and /ready; "": none
    upstreams: tuple[str, ...] = (DEFAULT_GRPC_ADDR,)
    work_dir: Path = Path("var/gateway")
    route_timeout_s: float = 5.0
    max_grpc_timeout_s: float = 30.0
    max_body_bytes: int = 64 * 1024
    max_batch_rows: int = 1000                    # the server's PREDMESH_MAX_BATCH_ROWS, stated in the OpenAPI document
    rate_limit_rps: int = 2000                    # local rate limit per listener; 0: off
    max_requests: int = 1024                      # circuit breaker: concurrent upstream requests
    max_pending: int = 1024
    max_connections: int = 1024
    max_streams_per_connection: int = 100         # concurrent HTTP/2 streams one client connection may open
    retries: int = 2
    hc_interval_ms: int = 500
    hc_unhealthy_threshold: int = 2
    concurrency: int = 1
    log_level: str = "warn"
    tls: TlsFiles = TlsFiles()                   # client → gateway (cert/key; ca: require client certificates)
    upstream_tls: TlsFiles = TlsFiles()          # gateway → replicas (ca: verify; cert/key: mTLS client cert)
    upstream_server_name: str = "localhost"
    cors_origins: tuple[str, ...] = ()          # browser origins allowed to call the public REST API; (): no CORS
    docs: bool = True                            # GET /docs: Swagger UI rendering /openapi.json
    launcher_log_level: str = "INFO"             # this launcher's own log (PREDMESH_LOG_LEVEL); Envoy: log_level

    @property
    def scheme(self) -> str:
        return "https" if self.tls.cert else "http"

    @property
    def public_url(self) -> str:
        return f"{self.scheme}://{self.public_addr}"

    @property
    def admin_url(self) -> str:
        return f"{self.scheme}://{self.admin_addr}" if self.admin_addr else ""

    def validate(self) -> GatewaySettings:
        for addr in (self.public_addr, self.envoy_admin_addr, *self.upstreams,
                     *([self.admin_addr] if self.admin_addr else []), *([self.stats_addr] if self.stats_addr else [])):
            split_addr(addr)
        if not self.upstreams:
            raise ConfigError("PREDMESH_GATEWAY_UPSTREAMS is empty: name at least one inference replica")
        if bool(self.tls.cert) != bool(self.tls.key):
            raise ConfigError("PREDMESH_GATEWAY_TLS_CERT and PREDMESH_GATEWAY_TLS_KEY go together")
        if self.tls.ca and not self.tls.cert:
            raise ConfigError("PREDMESH_GATEWAY_TLS_CLIENT_CA needs PREDMESH_GATEWAY_TLS_CERT/KEY")
        if bool(self.upstream_tls.cert) != bool(self.upstream_tls.key):
            raise ConfigError("PREDMESH_GATEWAY_UPSTREAM_TLS_CERT and _KEY go together")
        if self.upstream_tls.cert and not self.upstream_tls.ca:
            raise ConfigError("upstream mTLS needs PREDMESH_GATEWAY_UPSTREAM_TLS_CA to verify the replicas")
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ConfigError(f"PREDMESH_GATEWAY_CORS_ORIGINS: {origin!r} is not an origin "
                                  "(scheme://host[:port], no path) or *")
        for f in (self.tls.cert, self.tls.key, self.tls.ca, self.upstream_tls.cert, self.upstream_tls.key,
                  self.upstream_tls.ca):
            if f is not None and not f.is_file():
                raise ConfigError(f"TLS file {f} does not exist")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewaySettings:
        env = Env(environ, prefix="PREDMESH_GATEWAY_")
        common = Env(environ)
        # one replica on the inference server's address (PREDMESH_GRPC_ADDR, same default as the server's)
        # unless PREDMESH_GATEWAY_UPSTREAMS names them
        default_upstream = common.addr("GRPC_ADDR", DEFAULT_GRPC_ADDR)

        def path(name: str) -> Path | None:
            raw = env.str(name, "")
            return Path(raw).resolve() if raw else None

        upstreams = tuple(a.strip() for a in env.str("UPSTREAMS", default_upstream).split(",") if a.strip())
        for upstream in upstreams:
            try:
                split_addr(upstream)
            except ConfigError as exc:
                raise ConfigError(f"PREDMESH_GATEWAY_UPSTREAMS: {exc} (a comma-separated list)") from None
        return cls(
            # each address named by its variable when it is malformed (validate() alone could not say which)
            public_addr=env.addr("ADDR", cls.public_addr),
            admin_addr=env.addr("ADMIN_ADDR", cls.admin_addr, optional=True),
            envoy_admin_addr=env.addr("ENVOY_ADMIN_ADDR", cls.envoy_admin_addr),
            stats_addr=env.addr("STATS_ADDR", cls.stats_addr, optional=True),
            upstreams=upstreams,
            work_dir=env.path("DIR", str(cls.work_dir)),
            route_timeout_s=env.float("TIMEOUT_S", cls.route_timeout_s, positive=True),
            max_grpc_timeout_s=env.float("MAX_GRPC_TIMEOUT_S", cls.max_grpc_timeout_s, positive=True),
            max_body_bytes=env.int("MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024),
            max_batch_rows=common.int("MAX_BATCH_ROWS", cls.max_batch_rows, minimum=1),
            rate_limit_rps=env.int("RATE_LIMIT_RPS", cls.rate_limit_rps, minimum=0),
            max_requests=env.int("MAX_REQUESTS", cls.max_requests, minimum=1),
            max_pending=env.int("MAX_PENDING", cls.max_pending, minimum=1),
            max_connections=env.int("MAX_CONNECTIONS", cls.max_connections, minimum=1),
            max_streams_per_connection=env.int("MAX_STREAMS_PER_CONNECTION", cls.max_streams_per_connection,
                                               minimum=1),
            retries=env.int("RETRIES", cls.retries, minimum=0),
            hc_interval_ms=env.int("HC_INTERVAL_MS", cls.hc_interval_ms, minimum=50),
            hc_unhealthy_threshold=env.int("HC_UNHEALTHY_THRESHOLD", cls.hc_unhealthy_threshold, minimum=1),
            concurrency=env.int("CONCURRENCY", cls.concurrency, minimum=1),
            log_level=env.choice("LOG_LEVEL", cls.log_level, ENVOY_LOG_LEVELS),
            tls=TlsFiles(path("TLS_CERT"), path("TLS_KEY"), path("TLS_CLIENT_CA")),
            upstream_tls=TlsFiles(path("UPSTREAM_TLS_CERT"), path("UPSTREAM_TLS_KEY"), path("UPSTREAM_TLS_CA")),
            upstream_server_name=env.str("UPSTREAM_SERVER_NAME", cls.upstream_server_name),
            cors_origins=tuple(o.strip().rstrip("/") for o in env.str("CORS_ORIGINS", "").split(",") if o.strip()),
            docs=env.bool("DOCS", cls.docs),
            launcher_log_level=common.choice("LOG_LEVEL", cls.launcher_log_level, LEVELS),
        ).validate()

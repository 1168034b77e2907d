"""Dashboard settings, read once from PREDMESH_* variables by the entry point and passed down."""
from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from predmesh.env import ConfigError, Env, split_addr
from predmesh.logs import LEVELS


@dataclass(frozen=True)
class UiSettings:
    """Everything the dashboard needs; see the README's "Dashboard" section. It holds no admin token; the writer
    token (PREDMESH_WRITER_TOKEN) it sends with feedback stays in the dashboard's process, never in a page."""

    addr: str = "127.0.0.1:5006"                 # where the dashboard listens (loopback by default)
    server: str = "127.0.0.1:50051"              # the predmesh gRPC server (or gateway) the SDK talks to
    admin_server: str = ""                       # where admin calls go when not `server` (e.g. a gateway's admin port)
    allowed_origins: tuple[str, ...] = ()        # websocket Origins allowed (host[:port]); empty: the UI's own address
    password: str | None = field(default=None, repr=False)       # basic auth password; None: no login
    cookie_secret: str = field(default="", repr=False)           # signs login cookies; random per process if unset
    writer_token: str | None = field(default=None, repr=False)   # sent with feedback; None: feedback is refused
    refresh_s: float = 2.0                       # live refresh / retry period of every open page
    timeout_s: float = 3.0                       # deadline of each call to the server
    title: str = "predmesh"
    log_level: str = "INFO"

    @property
    def host(self) -> str:
        return _split(self.addr)[0]

    @property
    def port(self) -> int:
        return _split(self.addr)[1]

    @property
    def websocket_origins(self) -> list[str]:
        """Origins Bokeh accepts for the websocket upgrade: the configured ones, else this address (and localhost)."""
        if self.allowed_origins:
            return list(self.allowed_origins)
        if self.host in ("127.0.0.1", "localhost"):
            return [f"127.0.0.1:{self.port}", f"localhost:{self.port}"]
        return [f"{self.host}:{self.port}"]

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, addr: str | None = None,
                 origins: Sequence[str] = ()) -> UiSettings:
        env = Env(environ)
        server = env.str("SERVER_ADDR", "") or env.str("GRPC_ADDR", cls.server)
        configured = tuple(o.strip() for o in env.str("UI_ALLOWED_ORIGINS", "").split(",") if o.strip())
        settings = cls(
            addr=addr or env.str("UI_ADDR", cls.addr),
            server=server,
            admin_server=env.str("UI_ADMIN_ADDR", ""),
            allowed_origins=_origins(tuple(origins), "--allow-websocket-origin") or _origins(
                configured, "PREDMESH_UI_ALLOWED_ORIGINS"),
            password=env.secret("UI_PASSWORD"),
            cookie_secret=env.secret("UI_COOKIE_SECRET") or secrets.token_urlsafe(32),
            writer_token=env.secret("WRITER_TOKEN"),
            refresh_s=env.float("UI_REFRESH_S", cls.refresh_s, positive=True),
            timeout_s=env.float("UI_TIMEOUT_S", cls.timeout_s, positive=True),
            log_level=env.choice("LOG_LEVEL", cls.log_level, LEVELS),
        )
        _split(settings.addr, "--addr" if addr else "PREDMESH_UI_ADDR")
        return settings


def _origins(origins: tuple[str, ...], where: str) -> tuple[str, ...]:
    """Each origin as Bokeh takes it: host, host:port or *. A browser-style origin (https://dash.example.org, as
    PREDMESH_GATEWAY_CORS_ORIGINS takes) went to Bokeh as it was and the dashboard died in a traceback."""
    for origin in origins:
        host, colon, port = origin.partition(":")
        if origin != "*" and (not host or "/" in origin or (colon and not port.isdigit())):
            raise ConfigError(f"{where}: {origin!r} is not host[:port] (no scheme or path: e.g. dash.example.org or "
                              "dash.example.org:443)")
    return origins


def _split(addr: str, where: str = "PREDMESH_UI_ADDR") -> tuple[str, int]:
    try:
        return split_addr(addr)
    except ConfigError:
        raise ConfigError(f"{where}={addr!r} must be host:port, e.g. 127.0.0.1:5006") from None

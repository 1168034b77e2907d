"""The batch pipeline's settings: a luigi.Config (section [BatchSettings] of luigi.cfg), over which the entry point
writes the PREDMESH_* variables that are set (from_env); tasks read it as BatchSettings()."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import luigi
import luigi.configuration

from predmesh.env import DEFAULT_GRPC_ADDR, ConfigError, Env, split_addr

SECTION = "BatchSettings"
# option of [BatchSettings] → the variable that overrides it (PREDMESH_SERVER_ADDR, else PREDMESH_GRPC_ADDR)
VARIABLES = {
    "server": "PREDMESH_SERVER_ADDR", "batch_dir": "PREDMESH_BATCH_DIR", "model": "PREDMESH_BATCH_MODEL",
    "rows": "PREDMESH_BATCH_ROWS", "chunk_rows": "PREDMESH_BATCH_CHUNK_ROWS", "inflight": "PREDMESH_BATCH_INFLIGHT",
    "channels": "PREDMESH_BATCH_CHANNELS", "timeout_s": "PREDMESH_BATCH_TIMEOUT_S",
    "feedback_wait_s": "PREDMESH_BATCH_FEEDBACK_WAIT_S", "luigid": "PREDMESH_LUIGID_ADDR",
    "luigid_dir": "PREDMESH_LUIGID_DIR", "log_level": "PREDMESH_LOG_LEVEL",
    "retries": "PREDMESH_BATCH_RETRIES", "retry_backoff_s": "PREDMESH_BATCH_RETRY_BACKOFF_S",
    "retry_max_s": "PREDMESH_BATCH_RETRY_MAX_S", "task_retries": "PREDMESH_BATCH_TASK_RETRIES",
    "task_retry_delay_s": "PREDMESH_BATCH_TASK_RETRY_DELAY_S",
    "feedback_timeout_s": "PREDMESH_BATCH_FEEDBACK_TIMEOUT_S", "feedback_page": "PREDMESH_BATCH_FEEDBACK_PAGE",
    "wait_stored_s": "PREDMESH_BATCH_WAIT_STORED_S", "luigid_history": "PREDMESH_LUIGID_HISTORY_DB",
    "heartbeat_s": "PREDMESH_BATCH_HEARTBEAT_S",
}
_written: set[str] = set()  # the options from_env last wrote over luigi's configuration


class BatchSettings(luigi.Config):
    """Where the server and the outputs are, and how hard to drive the server."""

    server = luigi.Parameter(default=DEFAULT_GRPC_ADDR,
                             description="the inference server (or the gateway's native gRPC listener)")
    batch_dir = luigi.PathParameter(default=Path("var/batch"),
                                    description="day outputs: <dir>/nightly/<model>/<date>/")
    model = luigi.Parameter(default="iris", description="nightly default model")
    rows = luigi.IntParameter(default=10_000, description="nightly default synthetic rows per day")
    chunk_rows = luigi.IntParameter(
        default=1000, description="rows per PredictBatch call (at most the server's PREDMESH_MAX_BATCH_ROWS)")
    inflight = luigi.IntParameter(default=4, description="chunks in flight at once")
    channels = luigi.IntParameter(
        default=2, description="connections to the server (SO_REUSEPORT spreads them over server processes)")
    timeout_s = luigi.FloatParameter(default=30.0, description="deadline of each call")
    feedback_wait_s = luigi.FloatParameter(
        default=30.0, description="how long Report retries feedback for predictions not stored yet")
    luigid = luigi.Parameter(default="127.0.0.1:8082", description="central scheduler (`predmesh batch scheduler`)")
    luigid_dir = luigi.PathParameter(default=Path("var/luigi"), description="luigid's state file and logs")
    log_level = luigi.Parameter(default="INFO")
    retries = luigi.IntParameter(
        default=4, description="retries of a call the server failed with UNAVAILABLE, DEADLINE_EXCEEDED or "
                               "RESOURCE_EXHAUSTED (0 = none), with exponential backoff and full jitter")
    retry_backoff_s = luigi.FloatParameter(default=0.5, description="the first retry's backoff (doubles each time)")
    retry_max_s = luigi.FloatParameter(default=10.0, description="the longest backoff between two retries")
    task_retries = luigi.IntParameter(
        default=0, description="times luigi runs a failed nightly task again (the worker waits for them)")
    task_retry_delay_s = luigi.FloatParameter(
        default=60.0, description="seconds before a failed task runs again (local scheduler; luigid: its "
                                  "[scheduler] retry_delay)")
    feedback_timeout_s = luigi.FloatParameter(default=60.0, description="deadline of each Report feedback call")
    feedback_page = luigi.IntParameter(default=500, description="labels per SubmitFeedbackBatch call (<= 1000)")
    wait_stored_s = luigi.FloatParameter(
        default=300.0, description="how long `score --wait-stored` waits for the rows to be queryable")
    heartbeat_s = luigi.FloatParameter(
        default=30.0, description="how often a running attempt records that its process is alive (the server marks "
                                  "one silent for PREDMESH_BATCH_RUN_STALE_S abandoned)")
    luigid_history = luigi.Parameter(
        default="", description="luigid's task history database URL (default: SQLite in luigid_dir)")
    # PREDMESH_WRITER_TOKEN (or _FILE): sent with RecordBatchRun and SubmitFeedbackBatch (servers refuse anonymous
    # writes); never shown to the scheduler
    writer_token = luigi.Parameter(default="", visibility=luigi.parameter.ParameterVisibility.PRIVATE,
                                   significant=False, description="the writer token (PREDMESH_WRITER_TOKEN[_FILE])")

    @property
    def luigid_host_port(self) -> tuple[str, int]:
        try:
            return split_addr(self.luigid)
        except ConfigError as exc:
            raise ConfigError(f"{_where('luigid')}: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BatchSettings:
        """Write every PREDMESH_* variable of VARIABLES that is set over [BatchSettings] (luigi.cfg, else the
        defaults) and return the result; ConfigError names the variable or option of an unusable value."""
        params = dict(cls.get_params())
        values: dict[str, str] = {}
        parsed = {}
        for option, variable in VARIABLES.items():
            raw = environ.get(variable, "").strip()
            if option == "server":
                raw = raw or environ.get("PREDMESH_GRPC_ADDR", "").strip()
            if not raw:
                continue
            values[option] = raw.upper() if option == "log_level" else raw
            try:
                parsed[option] = params[option].parse(values[option])
            except ValueError:
                raise ConfigError(f"{variable}={raw!r} is not {_KIND.get(type(params[option]), 'valid')}") from None
        token = Env(environ).secret("WRITER_TOKEN")
        if token:
            values["writer_token"] = parsed["writer_token"] = token
        _forget_written()
        try:
            settings = cls(**parsed)
        except ValueError as exc:  # a value in luigi.cfg luigi cannot parse
            raise ConfigError(f"luigi configuration [{SECTION}]: {exc}") from None
        settings.check()
        _write(values)  # only once valid: from here on, BatchSettings() in any task is these settings
        return settings

    def check(self) -> None:
        """ConfigError for a value the pipeline cannot work with, wherever it came from."""
        for option in ("rows", "chunk_rows", "inflight", "channels", "feedback_page"):
            if getattr(self, option) < 1:
                raise ConfigError(f"{_where(option)}={getattr(self, option)} must be >= 1")
        if self.feedback_page > 1000:
            raise ConfigError(f"{_where('feedback_page')}={self.feedback_page} must be <= 1000 (the server's limit)")
        for option in ("retries", "task_retries"):
            if getattr(self, option) < 0:
                raise ConfigError(f"{_where(option)}={getattr(self, option)} must be >= 0")
        for option in ("timeout_s", "feedback_timeout_s", "retry_backoff_s", "retry_max_s", "wait_stored_s",
                       "task_retry_delay_s", "heartbeat_s"):
            value = getattr(self, option)
            if not value > 0 or value == float("inf"):
                raise ConfigError(f"{_where(option)}={value} must be a finite number > 0")
        self.luigid_host_port  # noqa: B018 -- validate now, not at first use


_KIND = {luigi.IntParameter: "an integer", luigi.FloatParameter: "a number"}


def _where(option: str) -> str:
    return f"{VARIABLES[option]} ([{SECTION}] {option})"


def _forget_written() -> None:
    """Take the options an earlier from_env wrote back to what the configuration files say (a process reads its
    environment once; tests read several)."""
    if _written:
        config = luigi.configuration.get_config()
        for option in _written:
            config.remove_option(SECTION, option)
        config.reload()
        _written.clear()


def _write(values: dict[str, str]) -> None:
    config = luigi.configuration.get_config()
    for option, value in values.items():
        config.set(SECTION, option, value.replace("%", "%%"))  # literal: no %-interpolation of the value
    _written.update(values)

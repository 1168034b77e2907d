"""Settings read once per entry point: defaults (one process per CPU, the verified native runtime), refusals with
one clear message, and --help's variable lists taken from the readers themselves."""
from __future__ import annotations

import os

import pytest

from consumer.settings import AmqpSettings, ConsumerSettings
from database.settings import DatabaseSettings
from gateway.settings import GatewaySettings
from inference.settings import PersistenceSettings, ServerSettings, Settings, allowed_cpus
from predmesh.env import ConfigError, variables_read
from ui.settings import UiSettings


def test_defaults_are_the_fast_configuration():
    s = ServerSettings.from_env({})
    assert s.processes == len(os.sched_getaffinity(0)) == allowed_cpus()
    assert s.runtime == "native"
    assert ServerSettings.from_env({"PREDMESH_RUNTIME": "sklearn"}).runtime == "sklearn"  # the switch
    assert ServerSettings.from_env({"PREDMESH_PROCESSES": "auto"}).processes == allowed_cpus()
    assert ServerSettings.from_env({"PREDMESH_PROCESSES": "3"}).processes == 3
    # any free port (0) cannot be shared by several processes: auto means one there
    assert ServerSettings.from_env({"PREDMESH_GRPC_ADDR": "127.0.0.1:0"}).processes == 1


@pytest.mark.parametrize("env, message", [
    ({"PREDMESH_PROCESSES": "two"}, "PREDMESH_PROCESSES='two': use auto"),
    ({"PREDMESH_PROCESSES": "0"}, "PREDMESH_PROCESSES='0': use auto"),
    ({"PREDMESH_GRPC_ADDR": "nohost"}, "PREDMESH_GRPC_ADDR: address 'nohost' must be host:port"),
    ({"PREDMESH_METRICS_ADDR": "127.0.0.1:99999"}, "PREDMESH_METRICS_ADDR"),
    ({"PREDMESH_RUNTIME": "fast"}, "PREDMESH_RUNTIME='fast': use one of native, sklearn"),
    ({"PREDMESH_LOG_LEVEL": "loud"}, "PREDMESH_LOG_LEVEL"),
    ({"PREDMESH_DATABASE_URL": "mysql://u@h/db"}, "scheme must be postgresql:// or sqlite:///"),
    ({"PREDMESH_DATABASE_URL": "postgresql://u@h:port/db"}, "database URL"),
    ({"PREDMESH_DATABASE_URL": "postgresql://u@h/"}, "names no database"),
    ({"PREDMESH_PERSISTENCE": "sometimes"}, "PREDMESH_PERSISTENCE='sometimes'"),
    ({"PREDMESH_RANGE_TOLERANCE": "nan"}, "PREDMESH_RANGE_TOLERANCE=nan must be a finite number >= 0"),
    ({"PREDMESH_RANGE_TOLERANCE": "-1"}, "PREDMESH_RANGE_TOLERANCE=-1.0 must be a finite number >= 0"),
    ({"PREDMESH_RANGE_TOLERANCE": "inf"}, "PREDMESH_RANGE_TOLERANCE=inf must be a finite number >= 0"),
])
def test_bad_values_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        Settings.from_env(env)


def test_persistence_and_database_settings_share_the_url():
    url = "postgresql://u:secret@127.0.0.1:5432/db"
    assert PersistenceSettings.from_env({"PREDMESH_DATABASE_URL": url}).database_url == url
    assert DatabaseSettings.from_env({"PREDMESH_DATABASE_URL": url}).url == url
    assert PersistenceSettings.from_env({}).database_url == DatabaseSettings.from_env({}).url
    assert PersistenceSettings.from_env({"PREDMESH_PERSISTENCE": "ASYNC"}).mode == "async"


def test_quality_refresh_interval():
    """Every replica reads the fleet's feedback quality into its gauges this often: a few seconds by default."""
    assert PersistenceSettings.from_env({}).quality_refresh_seconds == 5.0
    assert PersistenceSettings.from_env({"PREDMESH_QUALITY_REFRESH_SECONDS": "0.5"}).quality_refresh_seconds == 0.5
    for bad in ("0", "-1", "inf", "nan"):
        with pytest.raises(ConfigError, match="PREDMESH_QUALITY_REFRESH_SECONDS"):
            PersistenceSettings.from_env({"PREDMESH_QUALITY_REFRESH_SECONDS": bad})


def test_gateway_cors_docs_and_log_levels():
    s = GatewaySettings.from_env({"PREDMESH_GATEWAY_CORS_ORIGINS": "https://app.example, http://localhost:3000/"})
    assert s.cors_origins == ("https://app.example", "http://localhost:3000")
    assert GatewaySettings.from_env({}).cors_origins == () and GatewaySettings.from_env({}).docs
    with pytest.raises(ConfigError, match="is not an origin"):
        GatewaySettings.from_env({"PREDMESH_GATEWAY_CORS_ORIGINS": "app.example"})
    with pytest.raises(ConfigError, match="PREDMESH_GATEWAY_LOG_LEVEL"):
        GatewaySettings.from_env({"PREDMESH_GATEWAY_LOG_LEVEL": "loud"})
    assert GatewaySettings.from_env({"PREDMESH_LOG_LEVEL": "debug"}).launcher_log_level == "DEBUG"


def test_variables_read_come_from_the_readers():
    names = variables_read(ServerSettings.from_env, PersistenceSettings.from_env)
    assert {"PREDMESH_GRPC_ADDR", "PREDMESH_PROCESSES", "PREDMESH_RUNTIME", "PREDMESH_ADMIN_TOKEN[_FILE]",
            "PREDMESH_DATABASE_URL[_FILE]", "PREDMESH_SPOOL_DIR", "PREDMESH_LOG_LEVEL"} <= set(names)
    assert len(names) == len(set(names))
    gateway = variables_read(GatewaySettings.from_env)
    assert {"PREDMESH_GATEWAY_CORS_ORIGINS", "PREDMESH_GATEWAY_DOCS", "PREDMESH_GRPC_ADDR"} <= set(gateway)


def test_writer_token_and_open_writes(tmp_path):
    """Writes of monitoring data: off for anonymous callers unless PREDMESH_OPEN_WRITES; the writer token also from
    a file; one value for two roles is refused (the lower role would get the higher one's rights)."""
    s = ServerSettings.from_env({})
    assert (s.writer_token, s.open_writes) == (None, False)
    (tmp_path / "w").write_text("from-a-file\n")
    s = ServerSettings.from_env({"PREDMESH_WRITER_TOKEN_FILE": str(tmp_path / "w"), "PREDMESH_OPEN_WRITES": "1"})
    assert (s.writer_token, s.open_writes) == ("from-a-file", True)
    for a, b in (("ADMIN", "WRITER"), ("READONLY", "WRITER"), ("ADMIN", "READONLY")):
        with pytest.raises(ConfigError, match="give each role its own token"):
            ServerSettings.from_env({f"PREDMESH_{a}_TOKEN": "same", f"PREDMESH_{b}_TOKEN": "same"})
    with pytest.raises(ConfigError, match="PREDMESH_OPEN_WRITES"):
        ServerSettings.from_env({"PREDMESH_OPEN_WRITES": "maybe"})


def test_streams_get_a_bounded_share_of_the_handler_threads():
    assert ServerSettings.from_env({}).max_streams == 16  # half of the 64 workers, at most 16
    assert ServerSettings.from_env({"PREDMESH_WORKERS": "8"}).max_streams == 4
    assert ServerSettings.from_env({"PREDMESH_MAX_STREAMS": "40"}).max_streams == 40
    assert ServerSettings.from_env({}).stream_idle_seconds == 30
    assert ServerSettings.from_env({"PREDMESH_STREAM_IDLE_SECONDS": "0"}).stream_idle_seconds == 0  # off
    with pytest.raises(ConfigError, match="PREDMESH_MAX_STREAMS=64 must be below PREDMESH_WORKERS=64"):
        ServerSettings.from_env({"PREDMESH_MAX_STREAMS": "64"})
    with pytest.raises(ConfigError, match="PREDMESH_STREAM_IDLE_SECONDS"):
        ServerSettings.from_env({"PREDMESH_STREAM_IDLE_SECONDS": "-1"})
    gateway = GatewaySettings.from_env({"PREDMESH_GATEWAY_MAX_STREAMS_PER_CONNECTION": "7"})
    assert gateway.max_streams_per_connection == 7


def test_an_empty_signing_key_file_stops_the_start(tmp_path):
    # read as "no key" before: unsigned and forged manifests loaded without a word
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="PREDMESH_MODEL_SIGNING_KEY_FILE"):
        ServerSettings.from_env({"PREDMESH_MODEL_SIGNING_KEY_FILE": str(tmp_path / "empty")})


@pytest.mark.parametrize("reader, variable, value", [
    # -1 reached Envoy's configuration: exit 1 and a screen of JSON instead of a line naming the variable
    (GatewaySettings.from_env, "PREDMESH_GATEWAY_TIMEOUT_S", "-1"),
    (GatewaySettings.from_env, "PREDMESH_GATEWAY_MAX_GRPC_TIMEOUT_S", "nan"),
    (GatewaySettings.from_env, "PREDMESH_GATEWAY_TIMEOUT_S", "0"),
    # a deadline below zero fails every call, a retry cap of 0 retries without a pause
    (ConsumerSettings.from_env, "PREDMESH_CONSUMER_RPC_TIMEOUT_S", "-1"),
    (ConsumerSettings.from_env, "PREDMESH_CONSUMER_RETRY_MAX_S", "0"),
    (ConsumerSettings.from_env, "PREDMESH_CONSUMER_HOLD_MAX_S", "-1"),
    (ConsumerSettings.from_env, "PREDMESH_CONSUMER_GRACE_S", "nan"),
    (ConsumerSettings.from_env, "PREDMESH_AMQP_BLOCKED_TIMEOUT_S", "-1"),
    (ConsumerSettings.from_env, "PREDMESH_AMQP_RECONNECT_MAX_S", "0"),
    (AmqpSettings.from_env, "PREDMESH_AMQP_RECONNECT_MAX_S", "inf"),
    (UiSettings.from_env, "PREDMESH_UI_REFRESH_S", "nan"),
    (UiSettings.from_env, "PREDMESH_UI_TIMEOUT_S", "-2"),
    (ServerSettings.from_env, "PREDMESH_BATCH_MAX_DELAY_MS", "-5"),
    (ServerSettings.from_env, "PREDMESH_DRAIN_SECONDS", "-1"),
    (ServerSettings.from_env, "PREDMESH_GRACE_SECONDS", "nan"),
    (ServerSettings.from_env, "PREDMESH_RELOAD_POLL_SECONDS", "0"),
    (PersistenceSettings.from_env, "PREDMESH_DB_FLUSH_MS", "-1"),
    (PersistenceSettings.from_env, "PREDMESH_SPOOL_DRAIN_SECONDS", "inf"),
])
def test_a_negative_or_non_finite_time_is_refused_naming_the_variable(reader, variable, value):
    with pytest.raises(ConfigError, match=f"^{variable}={value!r} must be a finite number"):
        reader({variable: value})


def test_a_time_of_zero_stays_allowed_where_it_means_at_once():
    assert ServerSettings.from_env({"PREDMESH_DRAIN_SECONDS": "0", "PREDMESH_GRACE_SECONDS": "0",
                                    "PREDMESH_BATCH_MAX_DELAY_MS": "0"}).drain_seconds == 0
    assert ConsumerSettings.from_env({"PREDMESH_CONSUMER_GRACE_S": "0"}).grace_s == 0
    assert PersistenceSettings.from_env({"PREDMESH_SPOOL_DRAIN_SECONDS": "0"}).spool_drain_seconds == 0


@pytest.mark.parametrize("variable", ["PREDMESH_DESIRED_STATE_POLL_SECONDS", "PREDMESH_BATCH_RUN_STALE_S",
                                      "PREDMESH_DRIFT_WINDOW_S"])
def test_an_infinite_interval_is_refused_like_every_other_time(variable):
    """These three had their own check (> 0) that let `inf` through: a replica that never reads the fleet's
    desired state, a batch attempt never marked abandoned. Every time setting now has the one check of Env.float."""
    reader = ServerSettings.from_env if variable == "PREDMESH_DRIFT_WINDOW_S" else PersistenceSettings.from_env
    with pytest.raises(ConfigError, match=f"^{variable}='inf' must be a finite number > 0"):
        reader({variable: "inf"})

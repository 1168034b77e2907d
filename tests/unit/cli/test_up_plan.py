"""The `predmesh up` plan, probes and `--check`, in this process (no child process; tests/integration/mesh runs the
supervisor with real children)."""
from __future__ import annotations

import json
import socket

import pytest

from cli import up
from cli.probe import grpc_health, http_ok
from tests.support.procs import closed_port


def args(*argv):
    return up.parser().parse_args(list(argv))


def test_plan_places_replicas_on_adjacent_ports_behind_the_gateway(monkeypatch):
    env = {"PREDMESH_GRPC_ADDR": "127.0.0.1:41000", "PREDMESH_METRICS_ADDR": "127.0.0.1:42000",
           "PREDMESH_GATEWAY_ADDR": "127.0.0.1:43000", "PREDMESH_LUIGID_ADDR": "127.0.0.1:44000"}
    mesh = up.plan(args("--replicas", "3", "--no-consumer", "--no-ui", "--no-prometheus"), env)
    names = [p.name for p in mesh.parts]
    assert names == ["inference-1", "inference-2", "inference-3", "gateway", "luigid"]
    assert [p.env["PREDMESH_GRPC_ADDR"] for p in mesh.parts[:3]] == \
        ["127.0.0.1:41000", "127.0.0.1:41001", "127.0.0.1:41002"]
    assert mesh.parts[2].env["PREDMESH_METRICS_ADDR"] == "127.0.0.1:42002"
    assert all(p.env["PREDMESH_PROCESSES"] == "1" for p in mesh.parts[:3])   # N replicas, one process each
    single = up.plan(args("--no-consumer", "--no-ui", "--no-prometheus", "--no-luigid"), env)
    assert "PREDMESH_PROCESSES" not in single.parts[0].env                   # one replica: the server's default
    chosen = up.plan(args("--replicas", "2", "--no-consumer", "--no-ui", "--no-prometheus", "--no-luigid"),
                     {**env, "PREDMESH_PROCESSES": "2"})
    assert "PREDMESH_PROCESSES" not in chosen.parts[0].env                   # an explicit choice is kept
    assert mesh.parts[3].env["PREDMESH_GATEWAY_UPSTREAMS"] == "127.0.0.1:41000,127.0.0.1:41001,127.0.0.1:41002"
    assert [p.stage for p in mesh.parts] == [0, 0, 0, 1, 2]
    assert all(p.core for p in mesh.parts[:4]) and not mesh.parts[4].core
    assert "--port" in mesh.parts[4].argv or mesh.parts[4].argv[-1] == "scheduler"
    assert any("--no-consumer" in n for n in mesh.notes) and any("--no-ui" in n for n in mesh.notes)
    text = up.report(mesh, {})
    assert "gRPC 127.0.0.1:41002" in text and "REST http://127.0.0.1:43000/v1/models" in text
    assert "http://127.0.0.1:44000/" in text


def test_replicas_at_the_defaults_take_no_other_parts_port():
    """`predmesh up --replicas 3` at the defaults: replica 2's metrics were on 9102, the consumer's default, and the
    consumer crash-looped on "Address already in use". The replicas' ports now go around the other parts'."""
    others = up.other_addrs(args("--replicas", "3"), {})
    assert "127.0.0.1:9102" in others                                        # the consumer's metrics
    replicas = up.replica_addrs({}, 3, others)
    assert replicas == [("127.0.0.1:50051", "127.0.0.1:9101"), ("127.0.0.1:50052", "127.0.0.1:9103"),
                        ("127.0.0.1:50053", "127.0.0.1:9104")]
    ports = [up._port(a) for pair in replicas for a in pair] + [up._port(a) for a in others]
    assert len(ports) == len(set(ports)), sorted(ports)
    # without the consumer, nothing is in the way: adjacent ports as before
    alone = up.other_addrs(args("--replicas", "2", "--no-consumer"), {})
    assert up.replica_addrs({}, 2, alone)[1] == ("127.0.0.1:50052", "127.0.0.1:9102")


def test_up_refuses_to_start_beside_a_mesh_that_holds_its_addresses(monkeypatch, tmp_path, capsys):
    """A second `predmesh up` found the first one's parts healthy and reported "5/5 parts up" while its own
    children failed on "address already in use" and were restarted for ever. It now stops before starting (or
    training) anything, naming each address held."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {"PREDMESH_UI_ADDR": f"127.0.0.1:{port}", "PREDMESH_MODEL_STORE": str(tmp_path / "store"),
               "PREDMESH_GRPC_ADDR": "127.0.0.1:0", "PREDMESH_METRICS_ADDR": ""}
        only = ("--no-gateway", "--no-consumer", "--no-prometheus", "--no-luigid")
        mesh = up.plan(args(*only), env)
        assert up.addresses_in_use(mesh.parts) == (
            f"addresses already in use: dashboard 127.0.0.1:{port}. Is another `predmesh up` running? `predmesh "
            "status` says what answers there; stop that mesh, or set the parts' PREDMESH_*_ADDR variables")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert up.main(list(only)) == 1
    assert f"dashboard 127.0.0.1:{port}" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()           # refused before the demo model was trained
    assert up.addresses_in_use(mesh.parts) == ""       # free again


def test_the_consumer_is_started_only_when_the_broker_answers(monkeypatch):
    with closed_port() as port:                          # nothing listens there
        env = {"PREDMESH_AMQP_URL": f"amqp://guest:secret@127.0.0.1:{port}/%2F"}
        mesh = up.plan(args("--no-gateway", "--no-luigid", "--no-ui", "--no-prometheus"), env)
    assert "consumer" not in [p.name for p in mesh.parts]
    note = next(n for n in mesh.notes if n.startswith("consumer"))
    assert "not reachable" in note and "secret" not in note and "***" in note


def test_probes_say_why_a_part_is_down(inproc_server):
    _server, target = inproc_server
    assert grpc_health(target) == (True, "gRPC health SERVING")
    with closed_port() as port:
        ok, detail = grpc_health(f"127.0.0.1:{port}", timeout=0.5)
        assert not ok and "UNAVAILABLE" in detail
        ok, detail = http_ok(f"http://127.0.0.1:{port}/", timeout=0.5)
        assert not ok and "no answer" in detail


def test_check_reports_each_part_and_fails_when_one_is_down(inproc_server, capsys):
    _server, target = inproc_server
    with closed_port() as port:
        down = f"127.0.0.1:{port}"
        mesh = up.Plan([up.Part("inference", [], probe=lambda: grpc_health(target), urls=[f"gRPC {target}"]),
                        up.Part("luigid", [], probe=lambda: http_ok(f"http://{down}/api/task_list"))],
                       ["dashboard: not in this checkout"])
        assert up.check(mesh) == 1
    out = capsys.readouterr().out
    assert "1/2 parts up" in out
    assert "inference    UP    gRPC health SERVING" in out and "luigid       DOWN  no answer" in out
    assert "- dashboard: not in this checkout" in out
    assert up.check(up.Plan(mesh.parts[:1], [])) == 0


def test_prometheus_is_planned_with_every_part_as_a_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"PREDMESH_GRPC_ADDR": "127.0.0.1:41000", "PREDMESH_METRICS_ADDR": "127.0.0.1:42000",
           "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": "127.0.0.1:43901", "PREDMESH_LUIGID_ADDR": "127.0.0.1:44000",
           "PREDMESH_PROMETHEUS_ADDR": "127.0.0.1:45090"}
    mesh = up.plan(args("--replicas", "2", "--no-consumer", "--no-ui"), env)
    assert up.shutil.which("prometheus"), "scripts/setup.sh installs Debian's prometheus"
    prometheus = mesh.parts[-1]
    assert prometheus.name == "prometheus" and "--web.listen-address=127.0.0.1:45090" in prometheus.argv
    assert not (tmp_path / "var").exists(), "nothing is written before the part starts"
    assert prometheus.prepare is not None
    prometheus.prepare()
    targets = tmp_path / "var" / "prometheus" / "targets"
    assert json.loads((targets / "inference.json").read_text())[0]["targets"] == \
        ["127.0.0.1:42000", "127.0.0.1:42001"]
    assert json.loads((targets / "envoy.json").read_text())[0]["targets"] == ["127.0.0.1:43901"]
    luigid = json.loads((targets / "luigid.json").read_text())
    assert luigid == [{"targets": ["127.0.0.1:44000"], "labels": {}}]
    assert json.loads((targets / "consumer.json").read_text()) == []          # --no-consumer


def test_up_generates_one_writer_token_for_the_replicas_and_the_dashboard(tmp_path, monkeypatch):
    """Writes of monitoring data need a token: `predmesh up` makes one (var/writer-token, 0600, kept across runs)
    and gives its file to every replica and the dashboard, and tells the operator where it is; a token or open
    writes the operator chose are left as they are."""
    monkeypatch.chdir(tmp_path)
    env = {"PREDMESH_GRPC_ADDR": "127.0.0.1:41000", "PREDMESH_METRICS_ADDR": "127.0.0.1:42000"}
    mesh = up.plan(args("--replicas", "2", "--no-consumer", "--no-prometheus", "--no-luigid"), env)
    token_file = tmp_path / "var" / "writer-token"
    parts = {p.name: p for p in mesh.parts}
    for name in ("inference-1", "inference-2", "dashboard"):
        assert parts[name].env["PREDMESH_WRITER_TOKEN_FILE"] == str(token_file), name
    assert "PREDMESH_WRITER_TOKEN_FILE" not in parts["gateway"].env
    assert any(f"PREDMESH_WRITER_TOKEN_FILE={token_file}" in note for note in mesh.notes)
    assert not token_file.exists()                       # planning (and `predmesh status`) writes nothing
    first, second = parts["inference-1"].prepare, parts["inference-2"].prepare
    assert first is not None and second is not None
    first()
    token = token_file.read_text().strip()
    assert len(token) >= 32 and token_file.stat().st_mode & 0o777 == 0o600
    second()
    assert token_file.read_text().strip() == token       # one token for the mesh, reused by the next `up`

    (tmp_path / "mine").write_text("mine\n")
    for chosen in ({"PREDMESH_WRITER_TOKEN": "mine"}, {"PREDMESH_WRITER_TOKEN_FILE": str(tmp_path / "mine")},
                   {"PREDMESH_OPEN_WRITES": "1"}):
        mesh = up.plan(args("--no-consumer", "--no-prometheus", "--no-luigid", "--no-gateway"), {**env, **chosen})
        assert all("PREDMESH_WRITER_TOKEN_FILE" not in p.env and p.prepare is None for p in mesh.parts), chosen


def test_help_names_every_variable_up_reads_itself():
    """`predmesh up --help` lists the variables only `up` reads (no part's --help names them): an operator giving
    a second mesh its own ports did not learn PREDMESH_PROMETHEUS_ADDR there (Prometheus is not a predmesh part)."""
    import re
    from pathlib import Path

    source = Path(up.__file__).read_text()
    read_here = set(re.findall(r'environ\.get\("(PREDMESH_[A-Z_]+?)(?:_FILE)?"', source))
    read_here |= {f"PREDMESH_{name}" for name in re.findall(r'Env\(environ\)\.\w+\("([A-Z_]+)"', source)}
    assert "PREDMESH_PROMETHEUS_ADDR" in read_here
    shown = " ".join(up.parser().format_help().split())
    for name in sorted(read_here):
        assert name in shown, f"{name} is read by predmesh up but not in its --help"


def test_the_brokers_metrics_are_scraped_when_its_prometheus_plugin_answers(tmp_path, monkeypatch):
    """PredmeshConsumerLag's queue-depth half and the dead-letter alerts read the broker's own metrics, and `predmesh
    up` never scraped them: the rabbitmq jobs' targets stayed empty. They are scraped when the broker's Prometheus
    plugin answers (here a stand-in endpoint), and a plugin that is off is named with how to turn it on."""
    import http.server
    import threading

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path.startswith("/metrics") else 404)
            self.end_headers()
            self.wfile.write(b"rabbitmq_build_info 1\n")

        def log_message(self, *a):
            pass

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(up, "broker_reachable", lambda url, timeout=3.0: (True, "reachable"))
    env = {"PREDMESH_GRPC_ADDR": "127.0.0.1:41000", "PREDMESH_METRICS_ADDR": "127.0.0.1:42000",
           "PREDMESH_CONSUMER_METRICS_ADDR": "127.0.0.1:42500", "PREDMESH_PROMETHEUS_ADDR": "127.0.0.1:45090",
           "PREDMESH_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        addr = f"127.0.0.1:{server.server_address[1]}"
        mesh = up.plan(args("--no-ui", "--no-luigid", "--no-gateway"), {**env, "PREDMESH_RABBITMQ_METRICS_ADDR": addr})
        prometheus = mesh.parts[-1]
        assert prometheus.name == "prometheus" and prometheus.prepare is not None
        prometheus.prepare()
        targets = tmp_path / "var" / "prometheus" / "targets"
        for job in ("rabbitmq", "rabbitmq-queues"):
            assert json.loads((targets / f"{job}.json").read_text())[0]["targets"] == [addr]
        assert not any(n.startswith("rabbitmq") for n in mesh.notes)
    finally:
        server.shutdown()
        server.server_close()
    with closed_port() as port:
        mesh = up.plan(args("--no-ui", "--no-luigid", "--no-gateway", "--no-prometheus"),
                       {**env, "PREDMESH_RABBITMQ_METRICS_ADDR": f"127.0.0.1:{port}"})
    note, = [n for n in mesh.notes if n.startswith("rabbitmq")]
    assert f"http://127.0.0.1:{port}/metrics gave no answer" in note
    assert "rabbitmq-plugins enable rabbitmq_prometheus" in note
    assert up.rabbitmq_metrics_addr({}, "amqp://u:p@broker.example:5672/%2F") == "broker.example:15692"


def test_a_malformed_prometheus_address_is_refused_naming_its_variable():
    """PREDMESH_PROMETHEUS_ADDR=nope: `predmesh status` probed it as if it were an address, `predmesh up` stopped
    with "address 'nope' must be host:port", not saying which of its ten address variables it meant."""
    from predmesh.env import ConfigError

    for argv in (["--no-consumer", "--no-ui"], ["--replicas", "2", "--no-consumer", "--no-ui"]):
        with pytest.raises(ConfigError, match=r"^PREDMESH_PROMETHEUS_ADDR: address 'nope' must be host:port"):
            up.plan(args(*argv), {"PREDMESH_PROMETHEUS_ADDR": "nope"})


def test_a_port_of_0_is_any_free_port_for_every_replica():
    """PREDMESH_METRICS_ADDR=127.0.0.1:0 is documented as "port 0 picks a free port"; with --replicas 3 replicas 2
    and 3 were given ports 1 and 2 (0 + 1, 0 + 2): privileged, and not what was asked."""
    assert up.replica_addrs({"PREDMESH_METRICS_ADDR": "127.0.0.1:0"}, 3) == [
        ("127.0.0.1:50051", "127.0.0.1:0"), ("127.0.0.1:50052", "127.0.0.1:0"), ("127.0.0.1:50053", "127.0.0.1:0")]
    assert [m for _, m in up.replica_addrs({"PREDMESH_METRICS_ADDR": "127.0.0.1:9101"}, 2)] == \
        ["127.0.0.1:9101", "127.0.0.1:9102"]


def test_up_says_whether_the_admin_api_is_on(tmp_path, monkeypatch):
    """`predmesh up` printed the admin listener's URL but not that, without PREDMESH_ADMIN_TOKEN, the replicas
    refuse every admin call ("the admin API is disabled"): a newcomer following docs/models.md (reload, rollout)
    after `scripts/up.sh` learned it only from the refusal."""
    monkeypatch.chdir(tmp_path)
    argv = args("--no-consumer", "--no-prometheus", "--no-luigid", "--no-ui", "--no-gateway")
    off = up.plan(argv, {}).notes
    assert ("admin API (reload, rollout, pin, rollback): off, as PREDMESH_ADMIN_TOKEN is not set; export it (or "
            "PREDMESH_ADMIN_TOKEN_FILE) before `predmesh up` to turn it on") in off
    token = tmp_path / "admin-token"
    token.write_text("s3cret-admin\n")
    for env in ({"PREDMESH_ADMIN_TOKEN": "s3cret-admin"}, {"PREDMESH_ADMIN_TOKEN_FILE": str(token)}):
        on = up.plan(argv, env).notes
        assert any(n.startswith("admin API (reload, rollout, pin, rollback): on") for n in on), on
        assert not any("s3cret" in n for n in on)


def test_a_malformed_broker_metrics_address_is_one_line_naming_its_variable():
    import pytest

    from predmesh.env import ConfigError

    with pytest.raises(ConfigError, match=r"^PREDMESH_RABBITMQ_METRICS_ADDR: "):
        up.rabbitmq_metrics_addr({"PREDMESH_RABBITMQ_METRICS_ADDR": "nope"}, "amqp://guest:guest@127.0.0.1:5672/%2F")
    assert up.rabbitmq_metrics_addr({}, "amqp://u:p@[::1]:5672/%2F") == "[::1]:15692"

"""The SDK's typed surface, blocking and asyncio, against a real server: results, paging, deadlines, retries, errors."""
from __future__ import annotations

import asyncio
import inspect
import math
import subprocess
import sys
import threading
import time
from concurrent import futures
from datetime import date

import grpc
import pytest

from predmesh import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    Feedback,
    InvalidArgument,
    ModelInfo,
    NotFound,
    Page,
    PermissionDenied,
    Prediction,
    ReloadResult,
    ResourceExhausted,
    Stats,
    StoredPrediction,
    Unauthenticated,
    Unavailable,
)
from predmesh.v1 import inference_pb2, inference_pb2_grpc, model_pb2
from tests.conftest import IRIS_ROW
from tests.support.procs import ADMIN_TOKEN, READONLY_TOKEN, ROOT, WRITER_TOKEN, ServerProc, wait_for

VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
KINDS = ["sync", "async"]


def run(kind: str, target: str, fn, **client_args):
    """fn(client) with a blocking Client, or awaited with an AsyncClient made inside its event loop."""
    if kind == "sync":
        with Client(target, **client_args) as client:
            return fn(client)

    async def main():
        async with AsyncClient(target, **client_args) as client:
            result = fn(client)
            return await result if inspect.isawaitable(result) else result
    return asyncio.run(main())


def collect(iterator):
    """A list from a sync iterator, or an awaitable list from an async one."""
    if hasattr(iterator, "__aiter__"):
        async def gather():
            return [item async for item in iterator]
        return gather()
    return list(iterator)


@pytest.mark.parametrize("kind", KINDS)
def test_every_call_returns_typed_results(server, kind):
    prefix = f"sdk-{kind}-{time.monotonic_ns()}"

    def scenario_blocking(c):
        out = {"predict": c.predict("iris", IRIS_ROW, request_id=f"{prefix}-0")}
        out["batch"] = c.predict_batch("iris", [(VIRGINICA, f"{prefix}-{i}") for i in range(1, 7)])
        out["stream"] = list(c.predict_stream("iris", [(IRIS_ROW, f"{prefix}-s"), ({"x": 1.0}, f"{prefix}-bad")]))
        out["models"] = c.list_models()
        out["model"] = c.get_model("iris")
        wait_for(lambda: sum(p.prediction.request_id.startswith(prefix) for p in c.list_predictions(
            page_size=1000)) == 8, 10, what="this test's 8 rows stored")
        out["page"] = c.list_predictions(model="iris", page_size=3)
        out["all"] = [p for p in c.iter_predictions(model="iris", page_size=3)
                      if p.prediction.request_id.startswith(prefix)]
        out["walk"] = [p.prediction.prediction_id for p in c.iter_predictions(model="iris", page_size=3)]
        out["resumed"] = [p.prediction.prediction_id for p in c.iter_predictions(
            model="iris", page_size=3, page_token=out["page"].next_page_token)]
        out["stats"] = c.get_stats(model="iris")
        out["feedback"] = c.submit_feedback(out["predict"].prediction_id, "versicolor")
        return out

    async def scenario_async(c):
        out = {"predict": await c.predict("iris", IRIS_ROW, request_id=f"{prefix}-0")}
        out["batch"] = await c.predict_batch("iris", [(VIRGINICA, f"{prefix}-{i}") for i in range(1, 7)])
        out["stream"] = await collect(c.predict_stream("iris", [(IRIS_ROW, f"{prefix}-s"),
                                                                ({"x": 1.0}, f"{prefix}-bad")]))
        out["models"] = await c.list_models()
        out["model"] = await c.get_model("iris")
        for _ in range(200):
            page = await c.list_predictions(page_size=1000)
            if sum(p.prediction.request_id.startswith(prefix) for p in page) == 8:
                break
            await asyncio.sleep(0.05)
        out["page"] = await c.list_predictions(model="iris", page_size=3)
        out["all"] = [p for p in await collect(c.iter_predictions(model="iris", page_size=3))
                      if p.prediction.request_id.startswith(prefix)]
        out["walk"] = [p.prediction.prediction_id for p in await collect(c.iter_predictions(model="iris",
                                                                                           page_size=3))]
        out["resumed"] = [p.prediction.prediction_id for p in await collect(c.iter_predictions(
            model="iris", page_size=3, page_token=out["page"].next_page_token))]
        out["stats"] = await c.get_stats(model="iris")
        out["feedback"] = await c.submit_feedback(out["predict"].prediction_id, "versicolor")
        return out

    out = run(kind, server.target, scenario_blocking if kind == "sync" else scenario_async,
              writer_token=WRITER_TOKEN)

    # iter_predictions resumes from a page token (it raised TypeError: page_token given twice)
    assert out["resumed"] == out["walk"][3:] and len(out["walk"]) >= 8
    p = out["predict"]
    assert isinstance(p, Prediction) and p.label == "setosa" and p.request_id == f"{prefix}-0"
    assert sum(p.probabilities.values()) == pytest.approx(1.0) and set(p.probabilities) == {
        "setosa", "versicolor", "virginica"}
    assert isinstance(p.raw, model_pb2.Prediction) and p.raw.prediction_id == p.prediction_id
    assert [b.label for b in out["batch"]] == ["virginica"] * 6
    ok, bad = out["stream"]
    assert ok.prediction.label == "setosa" and ok.error is None
    assert bad.prediction is None and isinstance(bad.error, InvalidArgument) and bad.request_id == f"{prefix}-bad"
    [listed] = out["models"]
    assert isinstance(listed, ModelInfo) and listed == out["model"] and listed.serving
    assert listed.feature_names == tuple(IRIS_ROW) and listed.created_at is not None
    assert listed.created_at.tzinfo is not None
    page = out["page"]
    assert isinstance(page, Page) and len(page) == 3 and page.next_page_token
    assert all(isinstance(s, StoredPrediction) for s in page)
    # every page followed: the 8 scored rows of this test, newest first, each once
    ids = [s.prediction.request_id for s in out["all"]]
    assert sorted(ids) == sorted([f"{prefix}-{i}" for i in range(7)] + [f"{prefix}-s"])
    times = [s.created_at for s in out["all"]]
    assert times == sorted(times, reverse=True) and all(s.transport == "grpc" for s in out["all"])
    stats = out["stats"]
    assert isinstance(stats, Stats) and stats.total >= 8 and stats.by_label["virginica"] >= 6
    assert stats.latency.p50_ms > 0
    assert out["feedback"] == Feedback(p.prediction_id, "versicolor", False)


@pytest.mark.parametrize("kind", KINDS)
def test_admin_calls_and_error_mapping(server, kind):
    versions = run(kind, server.target, lambda c: c.list_model_versions("iris"), admin_token=ADMIN_TOKEN)
    reload = run(kind, server.target, lambda c: c.reload_model("iris", "2"), admin_token=ADMIN_TOKEN)
    assert [v.version for v in versions] == ["2", "1"] and versions[0].serving
    assert isinstance(reload, ReloadResult) and reload.model.version == "2" and reload.previous_version == "2"

    cases = [
        (lambda c: c.predict("nope", IRIS_ROW), NotFound, {}),
        (lambda c: c.predict("iris", {**IRIS_ROW, "petal_width": float("nan")}), InvalidArgument, {}),
        (lambda c: c.list_predictions(page_size=5000), InvalidArgument, {}),
        (lambda c: c.reload_model("iris"), Unauthenticated, {}),
        (lambda c: c.reload_model("iris"), PermissionDenied, {"admin_token": READONLY_TOKEN}),
    ]
    for call, error, args in cases:
        with pytest.raises(error) as info:
            run(kind, server.target, call, **args)
        assert info.value.code == error.code and info.value.message


@pytest.mark.parametrize("kind", KINDS)
def test_a_message_over_a_size_limit_says_whose_limit_and_what_to_do(server, kind):
    """gRPC's own "SERVER: Received message larger than max (1080114 vs. 1048576)" named neither the request nor
    the limit to look up; the error says which message, whose limit and what to do, and keeps gRPC's words."""
    rows = [IRIS_ROW] * 12_000  # ~1.3 MB: over the server's 1 MiB, under this client's default 4 MiB
    cases = [  # (call, client arguments, what the message starts with)
        (lambda c: c.predict_batch("iris", rows), {},
         "the request is ", "more than the server takes (1048576, ModelInfo.limits.max_request_bytes"),
        (lambda c: c.predict_each("iris", rows[:200]), {"max_message_bytes": 4096},
         "the request is ", "more than this client sends (4096, Client(max_message_bytes=)): send fewer rows"),
        (lambda c: c.get_model("iris"), {"max_message_bytes": 1024},
         "the answer is ", "more than this client takes (1024, Client(max_message_bytes=)): raise"),
    ]
    for call, args, start, limit in cases:
        with pytest.raises(ResourceExhausted) as info:
            run(kind, server.target, call, **args)
        message = info.value.message
        assert message.startswith(start) and limit in message, message
        assert "larger than max (" in message  # gRPC's words kept (the queue consumer dead-letters on them)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_row_the_client_refuses_raises_that_error(server, kind):
    """Stream rows are made as gRPC pulls them: a row the contract cannot carry, or the caller's own rows failing,
    made gRPC cancel the call, so the caller got PredmeshError("Exception iterating requests!") or, on asyncio,
    CancelledError (as if their task had been cancelled), never what was wrong."""
    from predmesh import BadArgument

    def failing_rows():
        yield IRIS_ROW
        raise OSError("rows.csv: input/output error")

    cases = [([IRIS_ROW, {**IRIS_ROW, "sepal_length": [5.1]}, IRIS_ROW], BadArgument,
              r"rows\[1\]: feature 'sepal_length' is \[5.1\] \(list\); send a number"),
             ([IRIS_ROW, 7], BadArgument, r"rows\[1\] is int; send a mapping"),
             (failing_rows(), OSError, "rows.csv: input/output error")]
    for rows, error, message in cases:
        with pytest.raises(error, match=message):
            run(kind, server.target, lambda c, rows=rows: collect(c.predict_stream("iris", rows)))
    ok = run(kind, server.target, lambda c: collect(c.predict_stream("iris", [IRIS_ROW])))  # the client still works
    assert [r.prediction.label for r in ok] == ["setosa"]


@pytest.mark.parametrize("kind", KINDS)
def test_deadline_is_enforced(model_store, tmp_path, kind):
    slow_env = {"PREDMESH_FAULTS": "inference.predict_delay_ms:2000"}
    with ServerProc(model_store, tmp_path / "slow.log", env=slow_env) as slow:
        started = time.monotonic()
        # the message says the timeout (gRPC's own said only "Deadline Exceeded")
        with pytest.raises(DeadlineExceeded, match=r"^no answer within 0.2s, the call's timeout \(timeout=, else"):
            run(kind, slow.target, lambda c: c.predict("iris", IRIS_ROW, timeout=0.2))
        assert time.monotonic() - started < 1.5
        # the client's default deadline applies when a call names none
        with pytest.raises(DeadlineExceeded, match=r"^no answer within 0.3s"):
            run(kind, slow.target, lambda c: c.predict("iris", IRIS_ROW), timeout=0.3)
        # a stream's timeout bounds the whole stream, which its message says ("Stream removed (Deadline Exceeded)")
        with pytest.raises(DeadlineExceeded, match=r"^the stream did not end within 0.4s: its timeout .* bounds the "
                                                   r"whole stream, not each row"):
            run(kind, slow.target, lambda c: collect(c.predict_stream("iris", [IRIS_ROW] * 3)), timeout=0.4)


class _Flaky(inference_pb2_grpc.InferenceServiceServicer):
    """GetModel fails with `code` for the first `failures` calls, then answers."""

    def __init__(self, failures: int, code: grpc.StatusCode):
        self.failures, self.code, self.calls = failures, code, 0
        self.transports: list[str | None] = []
        self.lock = threading.Lock()

    def GetModel(self, request, context):
        with self.lock:
            self.calls += 1
            failing = self.calls <= self.failures
        self.transports.append(dict(context.invocation_metadata()).get("x-predmesh-transport"))
        if failing:
            context.abort(self.code, "try again")
        return inference_pb2.GetModelResponse(model=model_pb2.ModelInfo(name=request.model, version="7"))


@pytest.fixture
def flaky():
    servers = []

    def start(failures: int, code: grpc.StatusCode) -> tuple[_Flaky, str]:
        servicer = _Flaky(failures, code)
        server = grpc.server(futures.ThreadPoolExecutor(4))
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return servicer, f"127.0.0.1:{port}"
    yield start
    for s in servers:
        s.stop(0)


@pytest.mark.parametrize("kind", KINDS)
def test_retries_only_unavailable(flaky, kind):
    servicer, target = flaky(2, grpc.StatusCode.UNAVAILABLE)
    info = run(kind, target, lambda c: c.get_model("iris"), transport="batch")
    assert info.version == "7" and servicer.calls == 3  # two retries, then the answer
    assert servicer.transports == ["batch"] * 3

    servicer, target = flaky(5, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(Unavailable):
        run(kind, target, lambda c: c.get_model("iris"))
    assert servicer.calls == 3  # at most three attempts

    servicer, target = flaky(1, grpc.StatusCode.RESOURCE_EXHAUSTED)
    with pytest.raises(ResourceExhausted):
        run(kind, target, lambda c: c.get_model("iris"))
    assert servicer.calls == 1  # never retried: the server may have done the work


@pytest.mark.parametrize("kind", KINDS)
def test_unreachable_server_is_unavailable(kind):
    from tests.support.procs import closed_port
    with closed_port() as port:
        target = f"127.0.0.1:{port}"
        with pytest.raises(Unavailable):
            run(kind, target, lambda c: c.get_model("iris", timeout=2))
        with pytest.raises(Unavailable):
            run(kind, target, lambda c: c.wait_ready(timeout=0.3))


def test_arguments_the_client_refuses_are_invalid_argument_and_value_error():
    """A bad transport, batch-run status, row number, time or timeout is refused before any call as BadArgument:
    an InvalidArgument like the server's (one except clause for both), still a ValueError for older callers."""
    from predmesh import BadArgument, calls
    client = Client("127.0.0.1:1")
    refused = [lambda: Client("127.0.0.1:1", transport="carrier-pigeon"),
               lambda: calls.list_predictions(transport="fax"),
               lambda: calls.record_batch_run("k", kind="score", model="iris", status="DONE"),
               lambda: calls.predict_matrix("iris", list(IRIS_ROW), [1.0] * 8, request_id_prefix="p-",
                                            row_numbers=[0, -1]),
               lambda: calls.predict_matrix("iris", list(IRIS_ROW), [1.0] * 4, request_id_prefix="p-",
                                            row_numbers=[1.5]),  # type: ignore[list-item]  # a float on purpose
               # a time that is not a datetime raised AttributeError ("'float' object has no attribute 'tzinfo'")
               lambda: calls.get_stats(start_time=1765000000.0),  # type: ignore[arg-type]  # an epoch on purpose
               lambda: calls.list_predictions(end_time=date(2026, 12, 7)),  # type: ignore[arg-type]  # a date
               lambda: calls.record_batch_run("k", kind="score", model="iris", status="running",
                                              started_at="2026-12-07T10:00:00"),  # type: ignore[arg-type]  # a str
               # gRPC took an infinite or NaN timeout for a deadline already past (DeadlineExceeded at once)
               lambda: Client("127.0.0.1:1", timeout=math.inf),
               lambda: client.predict("iris", IRIS_ROW, timeout=math.nan),
               lambda: collect(client.predict_stream("iris", [IRIS_ROW], timeout=math.inf)),
               lambda: client.get_model("iris", timeout="5")]  # type: ignore[arg-type]  # a str on purpose
    messages = ["transport 'carrier-pigeon' is not one of grpc, rest", "transport 'fax' is not one of",
                "batch run status 'DONE' is not one of running, succeeded, failed",
                r"row_numbers\[1\] is -1; send a whole number from 0", r"row_numbers\[0\] is 1.5",
                r"start_time is 1765000000.0 \(float\); send a datetime",
                r"end_time is datetime.date\(2026, 12, 7\) \(date\)",
                r"started_at is '2026-12-07T10:00:00' \(str\); send a datetime",
                "timeout is inf; send a finite number of seconds", "timeout is nan; send a finite",
                "timeout is inf; send a finite", "timeout is '5'; send a finite number of seconds"]
    assert len(refused) == len(messages)
    for make, message in zip(refused, messages):
        with pytest.raises(BadArgument, match=message) as caught:
            make()
        assert isinstance(caught.value, InvalidArgument) and isinstance(caught.value, ValueError)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.message
    client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_token_a_header_cannot_carry_is_refused_naming_it(server, kind, tmp_path):
    """A token read from a file keeps its newline: every call carrying it failed with INTERNAL "Invalid metadata"
    (the server's failure, by the docs) and a gRPC C++ error on stderr; the client now refuses it at once."""
    from predmesh import BadArgument
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    newline = rf"admin_token has '\\n' at position {len(ADMIN_TOKEN)}; .*strip its newline"
    with pytest.raises(BadArgument, match=newline):
        run(kind, server.target, lambda c: c.list_model_versions("iris"), admin_token=token_file.read_text())
    with pytest.raises(BadArgument, match="writer_token has 'é' at position 1; a token is sent in a header"):
        run(kind, server.target, lambda c: c.get_model("iris"), writer_token="té")
    versions = run(kind, server.target, lambda c: c.list_model_versions("iris"),
                   admin_token=token_file.read_text().strip())
    assert versions[0].name == "iris"


def test_transport_and_status_names_are_taken_in_any_case(server):
    """The README writes statuses upper-case (SUCCEEDED) and transports lower-case: both spellings, and the enum's
    own name, are the same value; the server stores them as the one canonical name."""
    from predmesh import calls
    assert calls.list_predictions(transport="REST").request.transport == model_pb2.TRANSPORT_REST
    assert calls.list_predictions(transport="TRANSPORT_REST").request.transport == model_pb2.TRANSPORT_REST
    key = f"sdk-case-{time.monotonic_ns()}"
    with Client(server.target, transport="QUEUE", writer_token=WRITER_TOKEN) as client:
        recorded = client.record_batch_run(key, kind="score", model="iris", status="SUCCEEDED", rows=3)
        assert recorded.run.status == "succeeded"
        client.record_batch_run(key, kind="score", model="iris", status="Failed", message="x")
        assert next(r for r in client.list_batch_runs(model="iris") if r.run_key == key).status == "failed"
        p = client.predict("iris", IRIS_ROW, request_id=key)
        wait_for(lambda: any(s.prediction.prediction_id == p.prediction_id
                             for s in client.list_predictions(transport="Queue", page_size=1000)), 10,
                 what="the prediction stored with transport queue")


@pytest.mark.parametrize("tls, message", [
    ("TlsConfig(client_cert=b'PEM')", "TlsConfig has a client_cert without a client_key; a client certificate"),
    ("TlsConfig(root_certificates=b'PEM', client_key=b'PEM')", "TlsConfig has a client_key without a client_cert"),
    ("TlsConfig(root_certificates='/etc/ssl/ca.pem')", "TlsConfig.root_certificates is str; pass the PEM bytes"),
])
def test_tls_settings_grpc_cannot_use_are_refused_without_killing_the_process(tls, message):
    """A client certificate without its key (or the key alone) made gRPC's core abort the whole process (SIGABRT,
    "Check failed: private_key != nullptr") when the client was made: a child process tries it."""
    code = ("from predmesh import BadArgument, Client, TlsConfig, AsyncClient\n"
            "import asyncio\n"
            "async def make():\n"
            f"    AsyncClient('127.0.0.1:1', tls={tls})\n"
            "for make_client in (lambda: Client('127.0.0.1:1', tls=" + tls + "), lambda: asyncio.run(make())):\n"
            "    try:\n"
            "        make_client()\n"
            "    except BadArgument as exc:\n"
            "        print('refused:', exc)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.count(f"refused: {message}") == 2, result.stdout


def test_env_and_logs_helpers_import_without_grpc():
    """database/ and gateway/ share predmesh.env and predmesh.logs: those must not pull grpc or the stubs in."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'grpc' or name.startswith(('grpc.', 'google.protobuf')):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import predmesh.env, predmesh.logs\n"
        "assert not any(m.startswith(('grpc', 'predmesh.v1', 'predmesh.client')) for m in sys.modules)\n"
        "try:\n"
        "    from predmesh import Client\n"
        "except ImportError as exc:\n"
        "    print('client needs grpc:', exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "client needs grpc: blocked: grpc" in result.stdout  # the blocker really works


@pytest.mark.parametrize("kind", KINDS)
def test_health(server, kind):
    assert run(kind, server.target, lambda c: c.check_health()) == "SERVING"
    assert run(kind, server.target, lambda c: c.check_health("predmesh.v1.InferenceService")) == "SERVING"
    with pytest.raises(NotFound):
        run(kind, server.target, lambda c: c.check_health("no.such.Service"))

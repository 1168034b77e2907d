"""Score many rows through the SDK: chunks cut up front to the server's published limits (rows and request bytes,
from GetModel), several in flight over a few connections, answers in row order. Each call answers every row on its
own (partial_success): a refused row becomes a reject with the server's reason, the others are scored; every error
of a call itself fails the run (after the SDK's retries)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from batch import retry
from batch.settings import BatchSettings
from predmesh import Client, PredmeshError
from predmesh.faults import fault_point
from predmesh.spread import Spread
from predmesh.types import CallLimits, ScoredMatrix

# The server published no limits (0 = not said): chunks are cut by BatchSettings.chunk_rows alone.
NO_LIMITS = CallLimits(0, 0, 0)


class ScoringFailed(Exception):
    """Scoring stopped: the server is unreachable or refused the work for a reason retrying cannot fix here."""


class InvalidAnswer(ScoringFailed):
    """The server's answer does not match the request (a bug, not a condition to retry)."""


def request_id_prefix(model: str, content_hash: str) -> str:
    """Row ids come from the model, the input's content and the row number: row n's request id is this prefix
    followed by n, so a rerun of the same input stores nothing twice (the server keeps one row per request id), and
    the same file scored by two models keeps both answers (a request id names one request, not one file)."""
    return f"batch-{model}-{content_hash[:24]}-"


def request_ids(model: str, content_hash: str, numbers: Sequence[int]) -> list[str]:
    """The request id of each row number (what the server derives from request_id_prefix and the numbers)."""
    prefix = request_id_prefix(model, content_hash)
    return [prefix + str(n) for n in numbers]


FIRST_ROWS = 8  # a run is a file's first when none of its first rows is stored (first_send)


def first_send(clients: Clients, model: str, prefix: str) -> bool:
    """True when none of the file's first FIRST_ROWS data rows is stored (ListPredictions by request id: an index
    probe each, whatever the table's size): this run's rows were never sent, so its calls say their keys are new
    (FeatureMatrix.new_keys) and the server skips looking each one up, most of a keyed row's cost on a bulk load.
    An earlier attempt stores its first chunk first, so a rerun finds those rows and keeps the lookups; so does a
    server that cannot say. Were a key stored after all (an earlier attempt killed before its first chunk was
    stored, but after a later one was), it is still stored once, and answered anew for the same features, since
    the prefix holds the file's content hash."""
    try:
        return not any(next(iter(clients.first.list_predictions(model=model, request_id=f"{prefix}{n}",
                                                                page_size=1)), None)
                       for n in range(1, FIRST_ROWS + 1))
    except PredmeshError:
        return False


@dataclass
class Scored:
    """The scores of all rows, in row order, in columns; a row the server refused has label -1 (its reason is in
    ScoreStats.rejected) and an empty prediction id."""

    classes: tuple[str, ...]
    labels: np.ndarray  # per row, the index of its label in classes; -1 when refused
    probabilities: np.ndarray  # rows × classes
    prediction_ids: list[str]
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row index, server's reason) of refused rows


@dataclass
class ScoreStats:
    rows: int = 0  # rows scored
    calls: int = 0
    grpc_s: float = 0.0  # wall time in PredictBatch calls, summed over threads
    server_ms: float = 0.0  # server-reported handling time (validation, scoring, record commit), summed per call
    wall_s: float = 0.0
    model_version: str = ""
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (index in the input rows, server's reason)


class Clients:
    """A few SDK clients to the same server, each on its own connection, spread over the server's processes
    (predmesh.spread); their calls are retried (batch.retry)."""

    def __init__(self, settings: BatchSettings):
        self.settings = settings
        self.policy = retry.RetryPolicy.of(settings)
        self._spread = Spread(self._connect, settings.channels)
        self.processes = self._spread.processes  # connections per server pid (empty: the server did not say)
        self._retrying = {id(c): _Retrying(c, self.policy) for c in self._spread.connections}

    def _connect(self) -> Client:
        return Client(self.settings.server, timeout=self.settings.timeout_s, transport="batch",
                      writer_token=self.settings.writer_token or None, own_connection=True)

    @property
    def first(self) -> Client:
        """The first connection; its calls are retried (batch.retry)."""
        return self._retrying[id(self._spread.connections[0])]  # type: ignore[return-value]  # a Client's calls

    def pick(self) -> Client:
        """The next connection, round robin; its calls are retried (batch.retry)."""
        return self._retrying[id(self._spread.pick())]  # type: ignore[return-value]  # a Client's calls, retried

    def close(self) -> None:
        self._spread.close()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def one_line(text: str, limit: int = 1000) -> str:
    """Printable, one line, bounded: what RecordBatchRun accepts as a message."""
    return "".join(c if c.isprintable() else " " for c in text)[:limit]


def describe(exc: PredmeshError, server: str) -> str:
    """The cause of a failed call in one line: the error, its gRPC status, the server, its message, the attempts."""
    attempts = retry.attempts_of(exc)
    return (f"{type(exc).__name__} from the server at {server}: {exc.code.name}: {exc.message}"
            + (f" (after {attempts} attempts)" if attempts > 1 else ""))


class _Retrying:
    """A Client whose calls are retried under a RetryPolicy (batch.retry); everything else passes through."""

    def __init__(self, client: Client, policy: retry.RetryPolicy):
        self._client, self._policy = client, policy

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name.startswith("_") or name in ("close", "wait_ready") or not callable(attr):
            return attr

        def retried(*args, **kwargs):
            sent = False

            def attempt():
                nonlocal sent
                if sent and kwargs.get("new_keys"):
                    kwargs["new_keys"] = False  # the first send may have been stored: a retry's keys are looked up
                sent = True
                return attr(*args, **kwargs)
            return retry.call(attempt, self._policy, name)
        return retried


def chunk_rows(wanted: int, limits: CallLimits, width: int, fixed_bytes: int, string_bytes: int = 0) -> int:
    """Rows per PredictBatch call: wanted (PREDMESH_BATCH_CHUNK_ROWS), at most the server's max_batch_rows, and few
    enough that a matrix request of width features stays within max_request_bytes (limits of 0: not published).
    A row costs at most width packed doubles, one row number (a varint of at most 10 bytes) and string_bytes for
    its categorical values (string_column_bytes); fixed_bytes bounds the rest (model, feature and column names,
    prefix, tags and lengths)."""
    rows = min(wanted, limits.max_batch_rows or wanted)
    if limits.max_request_bytes:
        rows = min(rows, (limits.max_request_bytes - fixed_bytes) // (8 * width + 10 + string_bytes))
    return max(1, rows)


def string_column_bytes(columns: Mapping[str, Sequence[str | None]]) -> int:
    """What one row can cost in these string columns at most: per column its longest value (UTF-8) with its tag
    and length, or a missing row's empty value and its row number (a uint32 varint)."""
    total = 0
    for values in columns.values():
        longest = max(map(len, map(str.encode, filter(None, values))), default=0)
        total += max(1 + _varint_size(longest) + longest, 2 + 5)
    return total


def _varint_size(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


class Scorer:
    """Scores rows of one model; progress(done_rows, total_rows) is called from the calling thread. Its stats add
    up over calls. limits: the server's published CallLimits (ModelInfo.limits), which cut the chunks."""

    def __init__(self, clients: Clients, model: str, *, limits: CallLimits = NO_LIMITS,
                 progress: Callable[[int, int], None] | None = None, new_keys: bool = False):
        self.clients = clients
        self.new_keys = new_keys  # every request id this scorer sends is new (first_send): not looked up
        self.settings = clients.settings
        self.model = model
        self.limits = limits
        self.chunk_rows = self.settings.chunk_rows
        self.progress = progress or (lambda done, total: None)
        self.stats = ScoreStats()
        self._stats_lock = threading.Lock()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop: calls not yet sent are not sent (a running score() raises ScoringFailed)."""
        self._cancelled.set()

    def score(self, matrix: np.ndarray, feature_names: Sequence[str], prefix: str,
              numbers: Sequence[int], strings: Mapping[str, Sequence[str | None]] | None = None) -> Scored:
        """Scores of the rows of matrix (rows × feature_names: the number and boolean features) and of strings
        (the categorical features: per name a value per row, None = missing), row r's request id prefix +
        numbers[r]."""
        started = time.perf_counter()
        total = len(matrix)
        rejected_before = len(self.stats.rejected)
        pieces: list[tuple[int, int, ScoredMatrix]] = []
        done = 0
        self.progress(0, total)
        inflight = self.settings.inflight
        strings = dict(strings or {})
        job = (np.ascontiguousarray(matrix, dtype=np.float64), tuple(feature_names), prefix, list(numbers), strings)
        fixed = 64 + len(self.model.encode()) + len(prefix.encode()) + sum(
            len(n.encode()) + 3 for n in (*feature_names, *strings)) + 16 * len(strings)
        step = chunk_rows(self.chunk_rows, self.limits, len(feature_names), fixed, string_column_bytes(strings))
        with ThreadPoolExecutor(max_workers=inflight, thread_name_prefix="score") as pool:
            pending: list[tuple[int, int, Future]] = []
            start = 0
            try:
                while start < total or pending:
                    if self._cancelled.is_set():
                        raise ScoringFailed("scoring cancelled")
                    while start < total and len(pending) < inflight:
                        end = min(start + step, total)
                        pending.append((start, end, pool.submit(self._chunk, job, start, end)))
                        start = end
                    first, end, future = pending.pop(0)
                    pieces.extend(future.result())
                    done += end - first
                    self.progress(done, total)
            except BaseException:
                for _, _, f in pending:
                    f.cancel()
                raise
        classes = pieces[0][2].classes if pieces else ()
        labels = np.full(total, -1, dtype=np.int64)
        probabilities = np.zeros((total, len(classes)))
        ids = [""] * total
        for first, end, m in pieces:
            labels[first:end] = m.labels
            probabilities[first:end] = np.array(m.probabilities, dtype=np.float64).reshape(end - first, -1)
            ids[first:end] = m.prediction_ids
            for row in m.errors:  # refused: label -1 (zero probabilities and no id already)
                labels[first + row] = -1
        with self._stats_lock:
            rejected = sorted(self.stats.rejected[rejected_before:])
            self.stats.rows += int((labels >= 0).sum())
            self.stats.wall_s += time.perf_counter() - started
        return Scored(classes, labels, probabilities, ids, rejected)

    def _call(self, job, start: int, end: int) -> ScoredMatrix:
        matrix, names, prefix, numbers, strings = job
        t0 = time.perf_counter()
        answer = self.clients.pick().predict_matrix(self.model, names, matrix[start:end].ravel().tolist(),
                                                    string_columns={n: v[start:end] for n, v in strings.items()},
                                                    request_id_prefix=prefix, row_numbers=numbers[start:end],
                                                    partial_success=True, new_keys=self.new_keys)
        elapsed = time.perf_counter() - t0
        if len(answer) != end - start or any(not 0 <= row < end - start for row in answer.errors):
            raise InvalidAnswer(f"the server answered {len(answer)} rows for {end - start}")
        with self._stats_lock:
            self.stats.calls += 1
            self.stats.grpc_s += elapsed
            self.stats.server_ms += answer.latency_ms
            self.stats.model_version = answer.model_version
        return answer

    def _chunk(self, job, start: int, end: int) -> list[tuple[int, int, ScoredMatrix]]:
        """(start, end, answer) covering rows start..end; the rows the server refused go to stats.rejected."""
        try:
            answer = self._call(job, start, end)
        except PredmeshError as exc:
            raise ScoringFailed(describe(exc, self.settings.server)) from None
        if answer.errors:
            with self._stats_lock:
                self.stats.rejected.extend((start + row, err.message) for row, err in answer.errors.items())
        fault_point("batch.chunk_delay_ms")  # the fault tests' slow run to interrupt (predmesh.faults)
        return [(start, end, answer)]

"""Score one input file into an output file and a rejects file (the `score` command and the nightly Score task)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import luigi
import numpy as np

from batch.mapping import feature_columns
from batch.schema import schema_of
from batch.scoring import Clients, Scorer, ScoringFailed, first_send, request_id_prefix
from batch.table import Table, Target, column_writer, open_input, validate, write_csv

REJECTS_HEADER = ["row", "reason"]


@dataclass(frozen=True)
class ScoreOutcome:
    input_rows: int
    scored: int
    rejected: int
    model: str
    model_version: str
    content_hash: str
    seconds: float
    timings: dict = field(default_factory=dict)  # read, validate, grpc (wall), server (summed), write: seconds

    def summary(self) -> str:
        return (f"{self.scored} of {self.input_rows} rows scored by {self.model}@{self.model_version or '?'}, "
                f"{self.rejected} rejected, in {self.seconds:.1f}s")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ScoreOutcome:
        return cls(**json.loads(text))


def default_output(input_path: Path) -> Path:
    return input_path.with_name(input_path.stem + ".scored" + (input_path.suffix or ".csv"))


def default_rejects(output_path: Path) -> Path:
    stem = output_path.name.removesuffix(output_path.suffix)
    return output_path.with_name(stem + ".rejects.csv")


def _added_names(columns: list[str], classes: tuple[str, ...]) -> list[str]:
    """label, prob_<class>…, prediction_id; prefixed scored_ where the input already has a column of that name."""
    names = ["label", *(f"prob_{c}" for c in classes), "prediction_id"]
    return [f"scored_{n}" if n in columns else n for n in names]


BLOCK_CALLS = 4  # rows are validated, scored and written in blocks of chunk_rows × inflight × this


def score_file(clients: Clients, model: str, input_path: Path, output_path: Target, rejects_path: Target, *,
               progress: Callable[[int, int], None] | None = None,
               mapping: dict[str, str] | None = None,
               scored_numbers: Callable[[str, list[int]], None] | None = None) -> ScoreOutcome:
    """Read, validate, score (row request ids from the content hash and row number) and write the rejects, then
    the output, each atomically. Raises table.InputError for an unusable input, scoring.ScoringFailed or a
    predmesh error when the server fails the run. mapping: feature → the input column that holds it (batch.mapping;
    a MappingError, an InputError, before any row is scored). scored_numbers(prefix, numbers) is told the row
    numbers of each block's scored rows (their request ids are prefix + number).

    The rows go in blocks through a two-stage pipeline: while one block is scored (its calls in flight), this
    thread parses and validates the next and writes the previous one's output, so the client's parsing and
    formatting overlap the server's scoring and storing instead of preceding and following them (the file's bytes
    are read, hashed and decoded first: an undecodable file fails before any row is scored)."""
    started = time.perf_counter()
    report = progress or (lambda done, total: None)
    source = open_input(input_path)
    t_read = time.perf_counter()
    info = clients.first.get_model(model)
    schema, prefix, digest = schema_of(info.features), request_id_prefix(model, source.digest), source.digest
    names = feature_columns(source.columns, mapping or {}, schema.names, model)  # the columns as features read them
    shown = {f"{f}: ": f"{f} (column {c!r}): " for f, c in (mapping or {}).items()}

    def named(reason: str) -> str:
        """A reject's reason naming the user's column of a mapped feature too."""
        head = reason[:reason.find(": ") + 2]
        return shown[head] + reason[len(head):] if head in shown else reason
    validate(Table(names, []), schema)  # the feature columns are there (InputError otherwise)
    total = source.estimated_rows  # for progress; the exact count is known at the end
    settings = clients.settings
    step = max(1, settings.chunk_rows * settings.inflight * BLOCK_CALLS)
    scorer = Scorer(clients, model, limits=info.limits, new_keys=first_send(clients, model, prefix))
    classes = info.classes
    added = _added_names(source.columns, classes)
    timings = {"parse": 0.0, "validate": 0.0, "score_wall": 0.0, "write": 0.0}
    rejects: list[tuple[int, str, list]] = []
    scored_rows = 0

    def write(checked, future, out) -> None:
        """Wait for a block's scores, then write its output columns (this thread)."""
        nonlocal scored_rows
        t0 = time.perf_counter()
        scored = future.result()
        t1 = time.perf_counter()
        rejects.extend((checked.numbers[i], f"refused by the server: {reason}", checked.rows[i])
                       for i, reason in scored.rejected)
        if scored.classes and scored.classes != classes:
            raise ScoringFailed(f"the server answered classes {scored.classes} for model {model}, which has "
                                f"{classes}")
        kept = np.flatnonzero(scored.labels >= 0)
        if len(kept) == len(scored.labels):
            rows, ids, numbers = checked.rows, scored.prediction_ids, checked.numbers
        else:
            rows = [checked.rows[i] for i in kept.tolist()]
            ids = [scored.prediction_ids[i] for i in kept.tolist()]
            numbers = [checked.numbers[i] for i in kept.tolist()]
        if scored_numbers is not None:
            scored_numbers(prefix, numbers)
        if rows:
            out([*zip(*rows), list(map(classes.__getitem__, scored.labels[kept].tolist())),
                 *(scored.probabilities[kept, c].tolist() for c in range(len(classes))), ids])
        scored_rows += len(rows)
        timings["score_wall"] += t1 - t0
        timings["write"] += time.perf_counter() - t1
        report(checked.numbers[-1] if checked.numbers else 0, total)

    report(0, total)
    read_rows = 0
    with column_writer(output_path, [*source.columns, *added], like=source.schema) as out, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-blocks") as blocks:
        previous = None
        try:
            rows_by_block = source.blocks(step)
            while True:
                t0 = time.perf_counter()
                rows = next(rows_by_block, None)
                t1 = time.perf_counter()
                timings["parse"] += t1 - t0
                if rows is None:
                    break
                checked = validate(Table(names, rows), schema, first=read_rows + 1)
                read_rows += len(rows)
                total = max(total, read_rows)
                rejects.extend((n, named(reason), cells) for n, cells, reason in checked.rejects)
                timings["validate"] += time.perf_counter() - t1
                current = (checked, blocks.submit(scorer.score, checked.matrix, schema.matrix_names, prefix,
                                                  checked.numbers, checked.strings))
                if previous is not None:
                    write(*previous, out)
                previous = current
            if previous is not None:
                write(*previous, out)
        except BaseException:
            scorer.cancel()
            raise
        rejects.sort(key=lambda r: r[0])
        write_csv(rejects_path, [*REJECTS_HEADER, *source.columns],
                  ([n, reason, *cells] for n, reason, cells in rejects))
    total = read_rows
    report(total, total)
    done = time.perf_counter()
    stats = scorer.stats
    return ScoreOutcome(
        input_rows=read_rows, scored=scored_rows, rejected=len(rejects), model=model,
        model_version=stats.model_version or info.version, content_hash=digest, seconds=done - started,
        timings={"read": t_read - started, **timings, "grpc_calls": stats.grpc_s, "server": stats.server_ms / 1000,
                 "calls": stats.calls})


def read_outcome(path: Path) -> ScoreOutcome:
    return ScoreOutcome.from_json(Path(path).read_text())


def write_outcome(target: luigi.LocalTarget, outcome: ScoreOutcome) -> None:
    with target.temporary_path() as tmp:
        Path(tmp).write_text(outcome.to_json())

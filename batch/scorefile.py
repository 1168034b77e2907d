"""Score one input file into an output file and a rejects file (the `score` command and the nightly Score task)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import luigi

from batch.scoring import Clients, Scorer, request_ids
from batch.table import Target, content_hash, is_parquet, read_table, validate, write_csv, write_parquet

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


def score_file(clients: Clients, model: str, input_path: Path, output_path: Target, rejects_path: Target, *,
               progress: Callable[[int, int], None] | None = None) -> ScoreOutcome:
    """Read, validate, score (row request ids from the content hash and row number) and write the rejects, then
    the output, each atomically. Raises table.InputError for an unusable input, scoring.ScoringFailed or a
    predmesh error when the server fails the run."""
    started = time.perf_counter()
    digest = content_hash(input_path)
    table = read_table(input_path)
    t_read = time.perf_counter()
    info = clients.first.get_model(model)
    checked = validate(table, info.feature_names)
    t_validate = time.perf_counter()
    scorer = Scorer(clients, model, progress=progress)
    predictions = scorer.score(checked.features, request_ids(digest, checked.numbers))
    t_scored = time.perf_counter()

    rejects = [(n, reason, cells) for n, cells, reason in checked.rejects]
    rejects += [(checked.numbers[i], f"refused by the server: {reason}", checked.rows[i])
                for i, reason in scorer.stats.rejected]
    rejects.sort(key=lambda r: r[0])
    write_csv(rejects_path, [*REJECTS_HEADER, *table.columns], ([n, reason, *cells] for n, reason, cells in rejects))

    classes = info.classes
    added = _added_names(table.columns, classes)
    kept = [(cells, p) for cells, p in zip(checked.rows, predictions) if p is not None]
    if is_parquet(output_path):
        columns = {name: [cells[i] for cells, _ in kept] for i, name in enumerate(table.columns)}
        columns[added[0]] = [p.label for _, p in kept]
        for name, c in zip(added[1:-1], classes):
            columns[name] = [p.probabilities.get(c, 0.0) for _, p in kept]
        columns[added[-1]] = [p.prediction_id for _, p in kept]
        write_parquet(output_path, columns)
    else:
        write_csv(output_path, [*table.columns, *added],
                  ([*cells, p.label, *(p.probabilities.get(c, 0.0) for c in classes), p.prediction_id]
                   for cells, p in kept))
    done = time.perf_counter()
    stats = scorer.stats
    return ScoreOutcome(
        input_rows=len(table.rows), scored=len(kept), rejected=len(rejects), model=model,
        model_version=stats.model_version or info.version, content_hash=digest, seconds=done - started,
        timings={"read": t_read - started, "validate": t_validate - t_read, "score_wall": t_scored - t_validate,
                 "grpc_calls": stats.grpc_s, "server": stats.server_ms / 1000, "calls": stats.calls,
                 "write": done - t_scored})


def read_outcome(path: Path) -> ScoreOutcome:
    return ScoreOutcome.from_json(Path(path).read_text())


def write_outcome(target: luigi.LocalTarget, outcome: ScoreOutcome) -> None:
    with target.temporary_path() as tmp:
        Path(tmp).write_text(outcome.to_json())

"""Score one input file into an output file and a rejects file (the `score` command and the nightly Score task)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import luigi
import numpy as np

from batch.scoring import Clients, Scorer, request_id_prefix
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
    scored = scorer.score(checked.matrix, info.feature_names, request_id_prefix(digest), checked.numbers)
    t_scored = time.perf_counter()

    rejects = [(n, reason, cells) for n, cells, reason in checked.rejects]
    rejects += [(checked.numbers[i], f"refused by the server: {reason}", checked.rows[i])
                for i, reason in scorer.stats.rejected]
    rejects.sort(key=lambda r: r[0])
    write_csv(rejects_path, [*REJECTS_HEADER, *table.columns], ([n, reason, *cells] for n, reason, cells in rejects))

    # the output in columns: the input's cells, label, prob_<class>…, prediction_id (no Python code per row)
    classes = scored.classes or info.classes
    added = _added_names(table.columns, classes)
    kept = np.flatnonzero(scored.labels >= 0)
    everything = len(kept) == len(scored.labels)
    kept_rows = checked.rows if everything else [checked.rows[i] for i in kept.tolist()]
    labels = list(map(classes.__getitem__, scored.labels[kept].tolist()))
    probabilities = [scored.probabilities[kept, c].tolist() if len(kept) else [] for c in range(len(classes))]
    ids = scored.prediction_ids if everything else [scored.prediction_ids[i] for i in kept.tolist()]
    cells = list(zip(*kept_rows)) if kept_rows else [() for _ in table.columns]
    if is_parquet(output_path):
        columns = {name: list(cells[i]) for i, name in enumerate(table.columns)}
        columns[added[0]] = labels
        for name, column in zip(added[1:-1], probabilities):
            columns[name] = column
        columns[added[-1]] = ids
        write_parquet(output_path, columns)
    else:
        write_csv(output_path, [*table.columns, *added], zip(*cells, labels, *probabilities, ids))
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

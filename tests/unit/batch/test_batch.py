"""The batch pipeline's pure parts: row validation and rejects, request ids, synthetic data, report metrics,
settings, the crontab line and the Luigi retcodes configuration."""
from __future__ import annotations

import configparser
import csv
import os
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from batch.cli import crontab_line
from batch.cli import main as batch_main
from batch.csvrows import Unreadable
from batch.report import metrics
from batch.scoring import Clients, request_id_prefix, request_ids
from batch.settings import BatchSettings
from batch.synth import NoTrainingDistribution, synthesize
from batch.table import (
    InputError,
    Table,
    content_hash,
    open_input,
    read_table,
    remove_stale_temporaries,
    validate,
    write_csv,
)
from predmesh.env import ConfigError
from predmesh.types import CallLimits, ClassProfile, FeatureSpec, ModelInfo

NAMES = ("a", "b")


def test_validate_splits_rows_and_names_the_reason():
    table = Table(["id", "a", "b"], [
        ["1", "1.5", "2"], ["2", "", "2"], ["3", "x", "2"], ["4", "nan", "2"], ["5", "1", "-inf"],
        ["6", "1"], ["7", " 3 ", "4e1"], ["8", "1", "2", "extra"]])
    out = validate(table, NAMES)
    assert out.numbers == [1, 7]
    assert out.matrix.tolist() == [[1.5, 2.0], [3.0, 40.0]]
    assert out.rows[1] == ["7", " 3 ", "4e1"]  # cells are carried through as read
    assert [(n, reason) for n, _, reason in out.rejects] == [
        (2, "a: missing value"), (3, "a: 'x' is not a number"), (4, "a: NaN"), (5, "b: infinite"),
        (6, "the row has 2 fields; the header has 3"), (8, "the row has 4 fields; the header has 3")]


def test_validate_columnwise_fast_path_rejects_only_non_finite_rows_in_schema_order():
    # every cell parses (the column-wise path): NaN/±inf rows are the only rejects; columns come in schema order
    table = Table(["b", "id", "a"], [["2", "1", "1.5"], ["nan", "2", "1"], ["4e1", "3", " 3 "], ["1", "4", "inf"]])
    out = validate(table, NAMES)
    assert out.numbers == [1, 3] and out.matrix.tolist() == [[1.5, 2.0], [3.0, 40.0]]
    assert out.rows == [["2", "1", "1.5"], ["4e1", "3", " 3 "]]
    assert [(n, reason) for n, _, reason in out.rejects] == [(2, "b: NaN"), (4, "a: infinite")]
    every = validate(Table(["a", "b"], [["1", "2"], ["3", "4"]]), NAMES)
    assert every.numbers == [1, 2] and not every.rejects and every.matrix.shape == (2, 2)


def test_validate_refuses_an_input_without_a_feature_column():
    with pytest.raises(InputError, match=r"lacks the feature column.*b"):
        validate(Table(["a", "c"], [["1", "2"]]), NAMES)


def test_request_ids_follow_content_and_row_number(tmp_path):
    f = tmp_path / "in.csv"
    f.write_text("a,b\n1,2\n")
    first = request_ids("m", content_hash(f), [1, 2])
    assert first == request_ids("m", content_hash(f), [1, 2]) and len(set(first)) == 2
    f.write_text("a,b\n1,3\n")
    assert request_ids("m", content_hash(f), [1, 2])[0] != first[0]
    assert all(len(i) <= 128 for i in first)  # the server's request id bound
    digest = content_hash(f)
    prefix = request_id_prefix("m", digest)
    assert request_ids("m", digest, [1, 7]) == [prefix + "1", prefix + "7"]
    assert request_ids("other", digest, [1]) != request_ids("m", digest, [1])  # two models, one file: two requests
    assert len(request_ids("x" * 64, digest, [2**64 - 1])[0]) <= 128  # the longest model name and row number


def info(profiles=True, max_batch_rows=0) -> ModelInfo:
    features = (FeatureSpec("a", 0.0, 10.0, 5.0, 2.0, ()), FeatureSpec("b", -1.0, 1.0, 0.0, 0.5, ()))
    classes = (ClassProfile("x", 0.75, (2.0, -0.5), (0.5, 0.1)), ClassProfile("y", 0.25, (8.0, 0.5), (0.5, 0.1)))
    return ModelInfo("m", "3", features, ("x", "y"), "", {}, None, "", "", True, classes if profiles else (),
                     limits=CallLimits(max_batch_rows, 4 << 20, 128))


def test_synthetic_rows_are_seeded_by_day_and_follow_the_class_profiles():
    header, rows = synthesize(info(), date(2026, 11, 20), 4000)
    assert header == ["a", "b", "true_label"]
    assert rows == synthesize(info(), date(2026, 11, 20), 4000)[1]  # a rerun is identical
    assert rows != synthesize(info(), date(2026, 11, 21), 4000)[1]
    xs = [r for r in rows if r[2] == "x"]
    assert 0.7 < len(xs) / len(rows) < 0.8
    assert abs(sum(r[0] for r in xs) / len(xs) - 2.0) < 0.1
    assert all(0.0 <= r[0] <= 10.0 and -1.0 <= r[1] <= 1.0 for r in rows)  # clipped to the training range
    with pytest.raises(NoTrainingDistribution, match="no class profiles"):
        synthesize(info(profiles=False), date(2026, 11, 20), 10)


def test_report_metrics_match_a_hand_computed_example():
    true = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    r = metrics(true, pred, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    # precision a=2/2, b=1/2, c=1/2; recall a=2/3, b=1/2, c=1/1
    assert r["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert r["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r["per_class"]["a"]["support"] == 3


def test_csv_round_trip_is_atomic_and_stale_temporaries_are_removed(tmp_path):
    target = tmp_path / "out" / "x.csv"
    write_csv(target, ["a", "b"], [[1, 2.5], ["x,y", ""]])
    assert read_table(target) == Table(["a", "b"], [["1", "2.5"], ["x,y", ""]])
    assert [p.name for p in target.parent.iterdir()] == ["x.csv"]  # no temporary left behind
    stale = target.parent / "y.csv-luigi-tmp-0000000042"
    stale.write_text("partial")
    live = target.parent / "z.csv-luigi-tmp-0000000043"  # a concurrent run's, being written
    live.write_text("partial")
    mine = target.parent / "notes-luigi-tmp-old.txt"  # not a name luigi makes
    mine.write_text("the user's")
    for old in (stale, mine):
        os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_temporaries(target.parent) == [stale] and not stale.exists()
    assert live.exists() and mine.exists()
    os.utime(live, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_temporaries(target.parent, ["x.csv"]) == []  # only the outputs named


def test_an_input_is_read_once_and_parsed_block_by_block(tmp_path):
    f = tmp_path / "in.csv"
    f.write_bytes('\ufeffa,b\r\n1,2\r\n"x\ny",3\r\n4,5\r\n6,7'.encode())  # BOM, a quoted newline, no final newline
    source = open_input(f)
    assert source.digest == content_hash(f) and source.columns == ["a", "b"]
    assert source.estimated_rows == 5  # a line count: one more than the 4 rows, for the quoted newline
    assert list(source.blocks(3)) == [[["1", "2"], ["x\ny", "3"], ["4", "5"]], [["6", "7"]]]


def test_an_unusable_input_fails_before_any_row_and_a_field_over_the_limit_is_one_unreadable_row(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"a,b\n1,2\n" * 1000 + b"caf\xe9,3\n")  # the bad byte is in the last row
    with pytest.raises(InputError, match=r"not UTF-8 text .* at byte 8003"):
        open_input(bad)
    split = tmp_path / "split.csv"  # a two-byte character across the scan's 1 MiB blocks is fine
    split.write_bytes(b"a,b\n" + b"1,2\n" * 262140 + b"xxxxxxxxxx," + "é\n".encode())  # é at byte 2**20 - 1
    rows = [r for block in open_input(split).blocks(100_000) for r in block]
    assert open_input(split).estimated_rows == len(rows) == 262141 and rows[-1] == ["xxxxxxxxxx", "é"]
    split.write_bytes(b"a,b\n1,\xc3")  # ends inside a character
    with pytest.raises(InputError, match="not UTF-8 text"):
        open_input(split)
    for content, message in [("", "is empty"), ("\n1,2\n", "is empty")]:
        (tmp_path / "e.csv").write_text(content)
        with pytest.raises(InputError, match=message):
            open_input(tmp_path / "e.csv")
    with pytest.raises(InputError, match="does not exist"):
        open_input(tmp_path / "missing.csv")
    long = tmp_path / "long.csv"
    long.write_text("a,b\n1,2\n" + '"' + "x" * 200_000 + '",3\n4,5\n')  # over csv's field size limit
    rows = [r for block in open_input(long).blocks(1) for r in block]  # that row is unreadable, not the file
    assert rows[0] == ["1", "2"] and rows[2] == ["4", "5"]
    assert isinstance(rows[1], Unreadable) and "a field is longer than the limit" in rows[1].reason


def test_a_parquet_input_is_read_by_record_batch(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    f = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": [1.5, 2.0, None], "b": ["x", "y", "z"]}), f, row_group_size=2)
    source = open_input(f)
    assert (source.digest, source.columns, source.estimated_rows) == (content_hash(f), ["a", "b"], 3)
    assert list(source.blocks(2)) == [[[1.5, "x"], [2.0, "y"]], [[None, "z"]]]
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="cannot read Parquet file"):
        open_input(tmp_path / "bad.parquet")


@pytest.mark.parametrize("fallback", ["none", "no O_TMPFILE", "no /proc link"])
def test_a_published_file_appears_whole_or_not_at_all(tmp_path, monkeypatch, fallback):
    from batch import table
    if fallback == "no O_TMPFILE":
        real_open = os.open
        monkeypatch.setattr(table.os, "open", lambda path, flags, *a: (
            (_ for _ in ()).throw(OSError(95, "not supported")) if flags & os.O_TMPFILE
            else real_open(path, flags, *a)))
    elif fallback == "no /proc link":
        monkeypatch.setattr(table.os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(2, "no /proc")))
    target = tmp_path / "out" / "x.csv"
    with table.published_file(target) as f:
        f.write("a,b\r\n")
        f.flush()
        assert not target.exists() and [p.name for p in target.parent.iterdir()] == []  # nothing named yet
        f.write("1,é\r\n" * 10_000)
    assert target.read_bytes() == ("a,b\r\n" + "1,é\r\n" * 10_000).encode()
    assert [p.name for p in target.parent.iterdir()] == ["x.csv"]
    with pytest.raises(RuntimeError):
        with table.published_file(tmp_path / "out" / "y.csv") as f:
            f.write("partial")
            raise RuntimeError("killed")
    assert [p.name for p in target.parent.iterdir()] == ["x.csv"]  # a failed write leaves nothing


def test_settings_from_env_and_their_errors():
    s = BatchSettings.from_env({"PREDMESH_SERVER_ADDR": "h:1", "PREDMESH_BATCH_CHUNK_ROWS": "250",
                                "PREDMESH_LUIGID_ADDR": "127.0.0.1:9999", "PREDMESH_BATCH_DIR": "/x"})
    assert (s.server, s.chunk_rows, s.luigid_host_port, s.batch_dir) == ("h:1", 250, ("127.0.0.1", 9999), Path("/x"))
    with pytest.raises(ConfigError, match="PREDMESH_BATCH_CHUNK_ROWS"):
        BatchSettings.from_env({"PREDMESH_BATCH_CHUNK_ROWS": "0"})
    with pytest.raises(ConfigError, match="PREDMESH_LUIGID_ADDR"):
        BatchSettings.from_env({"PREDMESH_LUIGID_ADDR": "nowhere"})


def test_settings_come_from_luigi_cfg_and_set_variables_win(tmp_path, monkeypatch):
    from luigi.configuration import LuigiConfigParser, get_config
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text("[BatchSettings]\nchunk_rows = 300\nserver = cfg-host:1\n")
    monkeypatch.setattr(LuigiConfigParser, "_config_paths", [*LuigiConfigParser._config_paths, str(cfg)])
    get_config().reload()
    try:
        s = BatchSettings.from_env({})
        assert (s.chunk_rows, s.server, s.inflight) == (300, "cfg-host:1", 4)  # luigi.cfg, else the default
        s = BatchSettings.from_env({"PREDMESH_BATCH_CHUNK_ROWS": "250", "PREDMESH_BATCH_DIR": "/o%t$x"})
        assert (s.chunk_rows, s.server, s.batch_dir) == (250, "cfg-host:1", Path("/o%t$x"))
        task_view = BatchSettings()  # what a task reads: the variables written over luigi.cfg
        assert (task_view.chunk_rows, task_view.batch_dir) == (250, Path("/o%t$x"))
        assert BatchSettings.from_env({}).chunk_rows == BatchSettings().chunk_rows == 300  # unset again
        cfg.write_text("[BatchSettings]\nchunk_rows = 0\n")
        get_config().reload()
        with pytest.raises(ConfigError, match=r"PREDMESH_BATCH_CHUNK_ROWS \(\[BatchSettings\] chunk_rows\)=0"):
            BatchSettings.from_env({})
        cfg.write_text("[BatchSettings]\nchunk_rows = many\n")
        get_config().reload()
        with pytest.raises(ConfigError, match=r"luigi configuration \[BatchSettings\]"):
            BatchSettings.from_env({})
    finally:
        get_config().remove_section("BatchSettings")


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        batch_main(["nightly", "--date", "yesterday"])
    assert exit_.value.code == 2 and "not a date" in capsys.readouterr().err


def test_crontab_line_runs_the_backfill_without_secrets():
    line = crontab_line("15 2 * * *", Path("/app"), Path("/app/.venv/bin/predmesh"), Path("/var/b/cron.log"),
                        {"PREDMESH_SERVER_ADDR": "127.0.0.1:50051", "PREDMESH_ADMIN_TOKEN": "s3cret",
                         "PREDMESH_WRITER_TOKEN": "wr1ter", "PREDMESH_WRITER_TOKEN_FILE": "/etc/predmesh/writer",
                         "PREDMESH_BATCH_DIR": "/var/b", "HOME": "/root"})
    assert line.startswith("15 2 * * * cd /app && ")
    assert "PREDMESH_SERVER_ADDR=127.0.0.1:50051" in line and "PREDMESH_BATCH_DIR=/var/b" in line
    assert "s3cret" not in line and "wr1ter" not in line and "HOME" not in line
    assert "PREDMESH_WRITER_TOKEN_FILE=/etc/predmesh/writer" in line  # a path: the nightly records with it
    assert "batch backfill --days-back 7 >> /var/b/cron.log 2>&1" in line


def test_luigi_config_sets_nonzero_retcodes_and_prometheus_metrics():
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[3] / "batch" / "luigi.cfg")
    assert int(cfg["retcode"]["task_failed"]) == 30 and int(cfg["retcode"]["unhandled_exception"]) == 40
    assert all(int(v) > 0 for v in cfg["retcode"].values())
    assert cfg["scheduler"]["metrics_collector"] == "prometheus"


class FakeClient:
    """Answers predict_matrix like the server: refuses a call above `limit` rows; a row with a < 0 is refused
    (with partial_success in ScoredMatrix.errors, in place in the columns; without it the whole call)."""

    get_model: Callable[[str], ModelInfo]  # set by the tests that need it

    def __init__(self, limit: int = 1000, down: bool = False, stored: int = 0):
        self.limit, self.down, self.stored = limit, down, stored
        self.calls: list[int] = []
        self.new_keys: list[bool] = []  # each call's new_keys

    def list_predictions(self, *, model, request_id, page_size):
        return [request_id] if self.stored else []  # a first run: none of its rows stored

    def predict_matrix(self, model, names, values, *, string_columns=None, request_id_prefix="", row_numbers=(),
                       partial_success=False, new_keys=False):
        from predmesh import InvalidArgument, Unavailable
        from predmesh.types import ScoredMatrix
        rows = len(values) // len(names)
        self.calls.append(rows)
        self.new_keys.append(new_keys)
        if self.down:
            raise Unavailable("failed to connect to all addresses")
        if rows > self.limit:
            raise InvalidArgument(f"{rows} rows exceed the limit of {self.limit} per batch; split the request")
        errors = {}
        for i in range(rows):
            a = values[i * len(names) + names.index("a")]
            if a < 0:
                if not partial_success:
                    raise InvalidArgument(f"row {i}: feature 'a'={a} is outside the plausible range")
                errors[i] = InvalidArgument(f"feature 'a'={a} is outside the plausible range")
        return ScoredMatrix(model, "1", ("x", "y"),
                            [0 if i in errors else int(n) % 2 for i, n in enumerate(row_numbers)],
                            [v for i in range(rows) for v in ((0.0, 0.0) if i in errors else (0.25, 0.75))],
                            ["" if i in errors else f"p-{request_id_prefix}{n}" for i, n in enumerate(row_numbers)],
                            0.1, errors=errors)


class FakeClients:
    """Stands in for batch.scoring.Clients (settings and a client to pick)."""

    def __init__(self, client, **settings):
        self.settings = BatchSettings(**{"chunk_rows": 10, "inflight": 3, **settings})
        self.first = client

    def pick(self):
        return self.first


def fake_clients(client: FakeClient, **settings: object) -> Clients:
    return cast(Clients, FakeClients(client, **settings))


def test_scorer_keeps_order_takes_refused_rows_from_the_answer_and_cuts_calls_to_the_published_limit():
    import numpy as np

    from batch.scoring import Scorer
    client = FakeClient(limit=4)
    matrix = np.array([[float(i if i not in (7, 23) else -1), 0.0] for i in range(30)])
    numbers = [n + 100 for n in range(30)]
    progress = []
    scorer = Scorer(fake_clients(client), "m", limits=CallLimits(4, 4 << 20, 128),
                    progress=lambda done, total: progress.append((done, total)))
    out = scorer.score(matrix, ("a", "b"), "r-", numbers)
    assert out.prediction_ids == ["" if i in (7, 23) else f"p-r-{i + 100}" for i in range(30)]
    assert out.labels.tolist() == [-1 if i in (7, 23) else i % 2 for i in range(30)]
    assert out.classes == ("x", "y") and out.probabilities[0].tolist() == [0.25, 0.75]
    assert out.probabilities[7].tolist() == [0.0, 0.0]
    assert sorted(scorer.stats.rejected) == sorted(out.rejected) == [
        (7, "feature 'a'=-1.0 is outside the plausible range"), (23, "feature 'a'=-1.0 is outside the plausible range")]
    # one call per chunk of the published limit (4 < chunk_rows 10), none refused, none repeated
    assert client.calls == [4] * 7 + [2] and scorer.stats.calls == 8
    assert progress[0] == (0, 30) and progress[-1] == (30, 30)
    assert scorer.stats.rows == 28


def test_chunks_fit_the_published_request_bytes():
    from batch.scoring import chunk_rows
    assert chunk_rows(1000, CallLimits(0, 0, 0), 4, 200) == 1000  # nothing published: the setting
    assert chunk_rows(1000, CallLimits(300, 0, 0), 4, 200) == 300
    # 4 features: at most 42 bytes a row; 10,000 bytes hold (10,000 - 200) // 42 = 233 rows
    assert chunk_rows(1000, CallLimits(0, 10_000, 0), 4, 200) == 233
    assert chunk_rows(1000, CallLimits(0, 100, 0), 4, 200) == 1  # at least one row (the server says why not)


def test_a_call_refused_as_a_whole_fails_the_run():
    import numpy as np

    from batch.scoring import Scorer, ScoringFailed
    scorer = Scorer(fake_clients(FakeClient(limit=4)), "m")  # the server's limit not published: chunks of 10
    with pytest.raises(ScoringFailed, match=r"InvalidArgument from the server .*10 rows exceed the limit of 4"):
        scorer.score(np.ones((25, 1)), ("a",), "r-", range(25))


def test_scorer_fails_the_run_when_the_server_is_unreachable():
    import numpy as np

    from batch.scoring import Scorer, ScoringFailed
    scorer = Scorer(fake_clients(FakeClient(down=True), server="127.0.0.1:1"), "m")
    with pytest.raises(ScoringFailed, match=r"Unavailable from the server at 127.0.0.1:1"):
        scorer.score(np.ones((25, 1)), ("a",), "r-", range(25))


def test_score_file_in_blocks_keeps_row_order_numbers_and_rejects_across_blocks(tmp_path):
    """Blocks of chunk_rows × inflight × BLOCK_CALLS rows (here 10 × 3 × 4 = 120): a file of 300 rows with bad
    rows and server-refused rows in several blocks comes out as if scored at once."""
    from batch.scorefile import score_file
    from batch.scoring import request_id_prefix

    client = FakeClient(limit=7)
    client.get_model = lambda model: info(max_batch_rows=7)
    source = tmp_path / "in.csv"
    bad = {5: ["x", "1"], 130: ["nan", "1"], 299: ["1"]}
    refused = {50, 121, 250}  # a < 0: the server refuses them
    rows = [bad.get(n, [str(-1.0 if n in refused else n * 0.5), str(n % 7)]) for n in range(1, 301)]
    write_csv(source, ["a", "b"], rows)
    outcome = score_file(fake_clients(client), "m", source, tmp_path / "out.csv", tmp_path / "rej.csv")
    assert (outcome.input_rows, outcome.scored, outcome.rejected) == (300, 294, 6)
    out = list(csv.reader(open(tmp_path / "out.csv")))
    assert out[0] == ["a", "b", "label", "prob_x", "prob_y", "prediction_id"]
    kept = [n for n in range(1, 301) if n not in bad and n not in refused]
    prefix = request_id_prefix("m", content_hash(source))
    assert [r[-1] for r in out[1:]] == [f"p-{prefix}{n}" for n in kept]
    assert [r[:2] for r in out[1:]] == [rows[n - 1] for n in kept]
    assert [r[2] for r in out[1:]] == [("x", "y")[n % 2] for n in kept]
    rejects = list(csv.reader(open(tmp_path / "rej.csv")))[1:]
    assert [int(r[0]) for r in rejects] == [5, 50, 121, 130, 250, 299]
    assert rejects[1][1] == "refused by the server: feature 'a'=-1.0 is outside the plausible range"
    assert rejects[0][1] == "a: 'x' is not a number"
    assert max(client.calls) == 7  # the published limit, below PREDMESH_BATCH_CHUNK_ROWS (10)
    assert client.new_keys and all(client.new_keys)  # nothing with the prefix stored: every key new

    rerun = FakeClient(limit=7, stored=294)  # the file's rows are stored: a rerun's keys are looked up
    rerun.get_model = client.get_model
    score_file(fake_clients(rerun), "m", source, tmp_path / "out2.csv", tmp_path / "rej2.csv")
    assert rerun.new_keys and not any(rerun.new_keys)


@pytest.mark.parametrize("columns", [
    [["r-1", "r-2", "r-3"], [" 5.1", "", "4e1"], [0.1, 1e-300, float("nan")], ["setosa", "x y", "z"]],  # fast path
    [["a,b", "c", "d"], [1.5, 2.5, 3.5]],  # a comma: must be quoted
    [['say "hi"', "x", "y"], ["1", "2", "3"]],  # a quote
    [["multi\nline", "x", "y"], ["1", "2", "3"]],  # a newline
    [["x", "y", "z"], [1, 2, 3]],  # ints (e.g. from Parquet)
    [["x", None, "z"], [0.5, 0.25, 0.125]],  # a missing cell
])
def test_column_writer_writes_exactly_what_csv_writer_writes(tmp_path, columns):
    from batch.table import column_writer
    header = [f"c{i}" for i in range(len(columns))]
    with column_writer(tmp_path / "fast.csv", header) as add:
        add(columns)
        add([c[:1] for c in columns])  # a second block
    with open(tmp_path / "ref.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(zip(*columns))
        w.writerows(zip(*[c[:1] for c in columns]))
    assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()


def test_float_columns_are_written_as_repr_spells_them(tmp_path):
    """The CSV fast path formats float columns with orjson (_repr_texts); every value must come out as repr()
    spells it, as csv.writer writes it: exponent boundaries (1e-4, 1e16), subnormals, extremes, negative zero,
    integral floats and random doubles of every magnitude."""
    from batch.table import _repr_texts, column_writer
    rng = np.random.default_rng(3)
    edges = [1e-4, 9.999999999999999e-05, 1e-05, 1.2345e-07, 5e-324, 2.2250738585072014e-308, 1e16,
             9999999999999998.0, 1e22, 1.7976931348623157e308, -0.0, 0.0, 2.0, 0.1, 0.30000000000000004, 123456.789]
    values = [*edges, *(-v for v in edges), *(rng.normal(0, 1, 2000) * 10.0 ** rng.integers(-30, 30, 2000)).tolist(),
              *rng.dirichlet([0.02, 0.02, 0.02], 500).ravel().tolist()]
    assert list(_repr_texts(values)) == [repr(v) for v in values]
    ids = [f"r-{i}" for i in range(len(values))]
    with column_writer(tmp_path / "fast.csv", ["id", "p"]) as add:
        add([ids, values])
    with open(tmp_path / "ref.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "p"], *zip(ids, values)])
    assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()

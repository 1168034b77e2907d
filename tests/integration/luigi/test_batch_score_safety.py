"""`predmesh batch score` with hostile paths and files, against a real server storing in PostgreSQL: outputs that
are not regular files, symlinks, rejects that would overwrite the output, unwritable directories (each refused
with exit 2 before any row is scored), numbers float() takes but a CSV producer never writes, oversized rows and
an unterminated quote (bounded, reported, the rest of the file scored)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.luigi.test_batch_pipeline import csv_rows, stored, write_csv
from tests.support.batch import batch_env, run_batch
from tests.support.procs import wait_for

pytestmark = pytest.mark.postgres
HEADER = ["id", "sepal_length", "sepal_width", "petal_length", "petal_width"]
GOOD = [["g1", 5.1, 3.5, 1.4, 0.2], ["g2", 6.0, 2.7, 4.2, 1.3], ["g3", 6.3, 3.3, 6.0, 2.5]]


@pytest.fixture
def env(server, tmp_path):
    return batch_env(server.target, tmp_path / "batch")


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "in" / "rows.csv"
    path.parent.mkdir()
    write_csv(path, HEADER, GOOD)
    return path


def score(env, source: Path, *options) -> subprocess.CompletedProcess:
    return run_batch(["score", "--model", "iris", "--input", str(source), *map(str, options)], env)


def nothing_scored(pg) -> bool:
    time.sleep(0.5)  # a stray row would have reached the database by now
    return stored(pg)[0] == 0


def test_an_output_that_is_not_a_regular_file_is_refused_before_any_row_and_left_alone(env, pg, tmp_path, source):
    node = tmp_path / "null-like"  # /dev/null's numbers, in the test's own directory
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    link_to_node = tmp_path / "link-to-node.csv"
    link_to_node.symlink_to(node)
    cases = [("--output", node, "a character device"), ("--output", fifo, "a fifo"),
             ("--output", directory, "a directory"), ("--output", link_to_node, "a character device"),
             ("--rejects", node, "a character device"), ("--rejects", fifo, "a fifo")]
    for option, path, kind in cases:
        result = score(env, source, option, path)
        assert result.returncode == 2, (option, path, result.stdout + result.stderr)
        assert f"{option} {path}" in result.stderr and kind in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    after = os.lstat(node)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and directory.is_dir() and not list(directory.iterdir())
    assert link_to_node.is_symlink() and os.readlink(link_to_node) == str(node)
    assert nothing_scored(pg)


def test_an_output_symlink_is_written_through_and_stays_a_link(env, pg, tmp_path, source):
    data = tmp_path / "data"
    data.mkdir()
    real = data / "scored.csv"
    real.write_text("yesterday's\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(real)
    result = score(env, source, "--output", link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert [r["id"] for r in csv_rows(real)] == ["g1", "g2", "g3"]
    assert sorted(p.name for p in data.iterdir()) == ["scored.csv"]  # nothing left beside the target

    fresh = data / "new.csv"  # a link to a path not yet there, in an existing directory
    new_link = tmp_path / "new-link.csv"
    new_link.symlink_to(fresh)
    result = score(env, source, "--output", new_link)
    assert result.returncode == 0, result.stderr
    assert new_link.is_symlink() and [r["id"] for r in csv_rows(fresh)] == ["g1", "g2", "g3"]

    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "no-such-dir" / "x.csv")
    result = score(env, source, "--output", dangling)
    assert result.returncode == 2 and f"--output {dangling}" in result.stderr and "does not exist" in result.stderr
    assert dangling.is_symlink() and not (tmp_path / "no-such-dir").exists()


def test_rejects_that_would_overwrite_the_output_are_refused_before_any_row(env, pg, tmp_path, source):
    out = tmp_path / "out.csv"
    out.write_text("keep me\n")
    link = tmp_path / "link.csv"
    link.symlink_to(out)
    hard = tmp_path / "hard.csv"
    os.link(out, hard)
    for rejects in (out, link, hard):
        result = score(env, source, "--output", out, "--rejects", rejects)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"--rejects {rejects}" in result.stderr and f"--output {out}" in result.stderr, result.stderr
    fresh = tmp_path / "fresh.csv"  # the same path, not there yet
    result = score(env, source, "--output", fresh, "--rejects", fresh)
    assert result.returncode == 2 and "the same file" in result.stderr and not fresh.exists()
    assert out.read_text() == "keep me\n"
    assert nothing_scored(pg)


@contextmanager
def read_only_directory(path: Path):
    """`path` as a read-only bind mount of itself (root ignores permission bits, not a read-only mount)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True, text=True,
                             check=False)
    assert mounted.returncode == 0, f"cannot make a read-only bind mount: {mounted.stderr}"
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_an_unwritable_output_directory_fails_before_any_row(env, pg, tmp_path, source):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with read_only_directory(tmp_path / "read-only") as ro:
        cases = [("--output", tmp_path / "missing" / "out.csv", "does not exist"),
                 ("--output", a_file / "out.csv", "is not a directory"),
                 ("--rejects", a_file / "rejects.csv", "is not a directory"),
                 ("--rejects", tmp_path / "missing" / "rejects.csv", "does not exist"),
                 ("--output", ro / "out.csv", "Read-only file system"),
                 ("--rejects", ro / "rejects.csv", "Read-only file system")]
        for option, path, why in cases:
            result = score(env, source, option, path)
            assert result.returncode == 2, (option, path, result.stdout + result.stderr)
            assert f"{option} {path}" in result.stderr and why in result.stderr, result.stderr
            assert "luigi-tmp" not in result.stderr and "Traceback" not in result.stderr
        assert not list(ro.iterdir())
    assert not (tmp_path / "missing").exists()
    assert nothing_scored(pg)


def test_numbers_are_ascii_decimal_or_scientific_in_csv_and_parquet(env, pg, tmp_path):
    # non-ASCII digits as escapes, so they cannot pass for ASCII ones: full-width 3.5, Arabic-Indic 1.4
    rows = [["ok1", "5.1", "3.5", "1.4", "0.2"], ["under", "5_1", "3.5", "1.4", "0.2"],
            ["fullwidth", "5.1", "\uff13.\uff15", "1.4", "0.2"], ["arabic", "5.1", "3.5", "\u0661.\u0664", "0.2"],
            ["nbsp", "5.1", "3.5", "1.4", "\u00a00.2"], ["ok2", " +6.0", "2.7e0 ", "4.2E+0", ".13e1"],
            ["nan", "5.1", "nan", "1.4", "0.2"], ["ok3", "-0", "3", "6.", "2.5"]]
    source = tmp_path / "numbers.csv"
    write_csv(source, HEADER, rows)
    result = score(env, source)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "3 of 8 rows scored" in result.stdout and "5 rejected" in result.stdout
    assert [r["id"] for r in csv_rows(tmp_path / "numbers.scored.csv")] == ["ok1", "ok2", "ok3"]
    reasons = {r["id"]: r["reason"] for r in csv_rows(tmp_path / "numbers.scored.rejects.csv")}
    assert reasons["under"].startswith("sepal_length: '5_1' is not a number (write ASCII digits")
    assert reasons["fullwidth"].startswith("sepal_width: '\uff13.\uff15' is not a number")
    assert reasons["arabic"].startswith("petal_length: '\u0661.\u0664' is not a number")
    assert reasons["nbsp"].startswith("petal_width: '\\xa00.2' is not a number")
    assert reasons["nan"] == "sepal_width: NaN"
    wait_for(lambda: stored(pg)[0] == 3, 20, what="3 rows stored")

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    parquet = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"sepal_length": [5.1, 6.3, 5.0], "sepal_width": [3, 3, 3],
                             "petal_length": ["1.4", "6_0", "1.4"], "petal_width": [True, False, None]}), parquet)
    result = score(env, parquet)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "0 of 3 rows scored" in result.stdout, result.stdout
    typed_reasons = [r["reason"] for r in csv_rows(tmp_path / "typed.scored.rejects.csv")]
    assert typed_reasons == ["petal_width: True is a boolean, not a number",
                             ("petal_length: '6_0' is not a number (write ASCII digits, an optional sign, a decimal "
                              "point and an exponent only, e.g. 5.1 or -5.1e0)"), "petal_width: missing value"]
    parquet_ok = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"sepal_length": [5, 6], "sepal_width": [3.5, 2.7], "petal_length": ["1.4", "4.2"],
                             "petal_width": [0.2, 1.3]}), parquet_ok)
    result = score(env, parquet_ok)
    assert result.returncode == 0 and "2 of 2 rows scored" in result.stdout, result.stdout + result.stderr


MEASURE_RSS = ("import resource, subprocess, sys\n"
               "code = subprocess.call(sys.argv[1:])\n"
               "print(f'peak_rss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr)\n"
               "sys.exit(code)\n")


def test_an_oversized_line_and_unterminated_quotes_are_bounded_reported_and_skipped(env, pg, tmp_path):
    """A 200 MB line, a field over 128 KiB and an unterminated quote: each one reject saying why and where (its
    text cut), the client's memory bounded, every other row scored."""
    source = tmp_path / "hostile.csv"
    with open(source, "w", newline="") as f:
        f.write(",".join(HEADER) + "\n")
        f.write("g1,5.1,3.5,1.4,0.2\n")  # line 2
        f.write("big," + "5.1," * 50_000_000 + "0.2\n")  # line 3: 200 MB
        f.write("g2,6.0,2.7,4.2,1.3\n")
        f.write('wide,5.1,3.5,1.4,"' + "9" * 200_000 + '"\n')  # line 5: a field over csv's 128 KiB limit
        f.write("g3,6.3,3.3,6.0,2.5\n")
        f.write('open,"5.1,3.5,1.4,0.2\n')  # line 7: a quote never closed
        f.write("g4,4.9,3.0,1.4,0.2\ng5,5.8,2.7,5.1,1.9\n")
    command = [sys.executable, "-c", MEASURE_RSS, sys.executable, "-m", "batch", "score", "--model", "iris",
               "--input", str(source)]
    result = subprocess.run(command, cwd=Path(__file__).resolve().parents[3], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 3, result.stdout + result.stderr
    peak_mib = int(result.stderr.rsplit("peak_rss_kib=", 1)[1]) / 1024
    print(f"client peak RSS with a 200 MB line: {peak_mib:.0f} MiB")
    assert peak_mib < 400, peak_mib  # the line alone is 200 MB; read whole it took 2.8 GB
    assert "5 of 8 rows scored" in result.stdout, result.stdout
    assert [r["id"] for r in csv_rows(tmp_path / "hostile.scored.csv")] == ["g1", "g2", "g3", "g4", "g5"]
    rejects = csv_rows(tmp_path / "hostile.scored.rejects.csv")
    assert (tmp_path / "hostile.scored.rejects.csv").stat().st_size < 10_000  # the 200 MB line is not copied
    assert [r["row"] for r in rejects] == ["2", "4", "6"]
    big, wide, unterminated = (r["reason"] for r in rejects)
    assert big == ("line 3: the row is longer than the limit of 1,048,576 characters (200,000,008); skipped, "
                   "reading went on at line 4")
    assert rejects[0]["id"].startswith("big,5.1,5.1,") and rejects[0]["id"].endswith(
        "…[cut: 200,000,008 characters in all]")
    assert wide == "line 5: a field is longer than the limit of 131,072 characters; skipped, reading went on at line 6"
    assert unterminated.startswith("line 7: a quoted field opened here is not closed by the end of the file; an "
                                   "unterminated quote? the row (from line 7) was skipped, reading went on at line 8")
    wait_for(lambda: stored(pg)[0] == 5, 20, what="5 rows stored")


def test_a_column_named_twice_in_the_header_is_refused(env, pg, tmp_path):
    source = tmp_path / "twice.csv"
    write_csv(source, ["id", "sepal_length", "sepal_width", "petal_length", "petal_width", "sepal_length"],
              [[*g, 7.7] for g in GOOD])
    result = score(env, source)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the column 'sepal_length' appears twice in the header (columns 2 and 6)" in result.stderr
    assert not (tmp_path / "twice.scored.csv").exists()
    assert nothing_scored(pg)

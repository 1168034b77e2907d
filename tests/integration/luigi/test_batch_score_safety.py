"""`predmesh batch score` with hostile paths and files, against a real server storing in PostgreSQL: outputs that
are not regular files, symlinks, rejects that would overwrite the output, unwritable directories (each refused
with exit 2 before any row is scored), numbers float() takes but a CSV producer never writes, oversized rows and
an unterminated quote (bounded, reported, the rest of the file scored)."""
from __future__ import annotations

import os
import stat
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.luigi.test_batch_pipeline import csv_rows, stored, write_csv
from tests.support.batch import batch_env, run_batch
from tests.support.pg import TempSchema
from tests.support.procs import ServerProc, wait_for

pytestmark = pytest.mark.postgres
HEADER = ["id", "sepal_length", "sepal_width", "petal_length", "petal_width"]
GOOD = [["g1", 5.1, 3.5, 1.4, 0.2], ["g2", 6.0, 2.7, 4.2, 1.3], ["g3", 6.3, 3.3, 6.0, 2.5]]


@pytest.fixture
def pg():
    with TempSchema() as schema:
        yield schema


@pytest.fixture
def server(model_store, tmp_path, pg):
    with ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": pg.url}) as proc:
        yield proc


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
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True, text=True)
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

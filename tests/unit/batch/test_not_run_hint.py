"""Why a nightly against luigid did not run (exit 25): the hint asks whether luigid runs only when it does not
answer. Live, a rerun refused by a running luigid (its task disabled after a failure) was told "is the central
scheduler running at …? start it with `predmesh batch scheduler`", which sent the operator the wrong way."""
from __future__ import annotations

import socket
from pathlib import Path

import luigi.retcodes

from batch import runner
from batch.settings import BatchSettings
from tests.support.procs import closed_port


def hint(addr: str) -> str:
    settings = BatchSettings(luigid=addr)
    return runner._hint(25, luigi.retcodes.retcode(), settings, Path("/nonexistent"), local_scheduler=False)


def test_a_luigid_that_answers_is_not_said_to_be_down():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        addr = f"127.0.0.1:{listening.getsockname()[1]}"
        text = hint(addr)
    assert "is the central scheduler running" not in text, text
    assert f"the central scheduler at {addr} did not let this run have a task" in text
    assert f"http://{addr}/static/visualiser/index.html" in text


def test_a_luigid_that_does_not_answer_is_named():
    with closed_port() as port:
        addr = f"127.0.0.1:{port}"
        assert f"is the central scheduler running at {addr}?" in hint(addr)

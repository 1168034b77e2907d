"""The batch pipeline as real processes: `python -m batch …` runs and a real luigid (`python -m batch scheduler`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tests.support.procs import ROOT, WRITER_TOKEN, free_port, retry_on_port_clash, stop_process, wait_for


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


class LuigidProc:
    """`python -m batch scheduler` (luigid in the foreground) on a free port with its state in work_dir."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PREDMESH_LUIGID_DIR": str(self.work_dir), "PYTHONUNBUFFERED": "1"}
        self._pick_port()
        self.proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    def _pick_port(self) -> None:
        """luigid does not report what it bound: a port from free_port() (the start retries on a clash)."""
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.addr}"
        self.env["PREDMESH_LUIGID_ADDR"] = self.addr

    def __enter__(self) -> LuigidProc:
        return retry_on_port_clash(self._start, self._pick_port)

    def _start(self) -> LuigidProc:
        if self._log is not None:
            self._log.close()
        self._log = open(self.work_dir / "luigid.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "batch", "scheduler"], cwd=ROOT, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or http_get(self.url + "/api/task_list")[0] == 200, 30,
                 what=f"luigid on {self.addr}")
        assert self.proc.poll() is None, (self.work_dir / "luigid.log").read_text()
        return self

    def tasks(self, status: str = "DONE") -> dict:
        query = urllib.parse.quote(json.dumps({"status": status}))
        code, body = http_get(f"{self.url}/api/task_list?data={query}")
        assert code == 200, code
        return json.loads(body)["response"]

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)
        if self._log is not None:
            self._log.close()


def batch_env(server_target: str, batch_dir: Path, **extra: str) -> dict[str, str]:
    """The pipeline's environment; it writes its runs and feedback with the writer token, from a file as a
    deployment would give it (PREDMESH_WRITER_TOKEN_FILE)."""
    token = Path(batch_dir).parent / "writer-token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(WRITER_TOKEN + "\n")
    inherited = {k: v for k, v in os.environ.items() if k != "PREDMESH_WRITER_TOKEN"}  # it and the file: refused
    return {**inherited, "PREDMESH_SERVER_ADDR": server_target, "PREDMESH_BATCH_DIR": str(batch_dir),
            "PREDMESH_BATCH_TIMEOUT_S": "20", "PYTHONUNBUFFERED": "1", "PREDMESH_WRITER_TOKEN_FILE": str(token),
            **extra}


def run_batch(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batch", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def start_batch(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "batch", *args], cwd=ROOT, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)

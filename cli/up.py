"""`predmesh up`: run the local mesh as child processes; Ctrl-C (or SIGTERM) stops everything it started."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from predmesh.logs import setup_logging


@dataclass
class Part:
    """One child process of the mesh."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None


def start(part: Part) -> None:
    part.proc = subprocess.Popen(part.argv, env={**os.environ, **part.env})


def stop_all(parts: list[Part], timeout: float = 15.0) -> None:
    """SIGTERM every running child (reverse start order), wait, then SIGKILL stragglers."""
    for part in reversed(parts):
        if part.proc and part.proc.poll() is None:
            part.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for part in parts:
        if part.proc:
            try:
                part.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                part.proc.kill()
                part.proc.wait()


def plan(args: argparse.Namespace) -> list[Part]:
    """The processes of the local mesh."""
    py = sys.executable
    return [Part("inference", [py, "-m", "inference", "serve"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="predmesh up", description=__doc__)
    args = parser.parse_args(argv)
    setup_logging()
    parts = plan(args)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for part in parts:
        start(part)
    print("predmesh up: started " + ", ".join(p.name for p in parts) + "; Ctrl-C stops everything", flush=True)
    code = 0
    try:
        while not stopping:
            for part in parts:
                if part.proc.poll() is not None:
                    print(f"predmesh up: {part.name} exited with {part.proc.returncode}; stopping the mesh",
                          file=sys.stderr, flush=True)
                    stopping, code = True, 1
            time.sleep(0.2)
    finally:
        stop_all(parts)
    return code

"""WorkerGroup's stop (inference/process/workers.py) with stand-in children: the group's /metrics stops answering
before its multiprocess files are removed, so no scrape ever reads the counters back to zero."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from inference.process import workers
from inference.settings import ServerSettings

# a child that waits for SIGTERM (the default action ends it) and writes a counter file as a worker would
CHILD = ("import time; from prometheus_client import Counter; "
         "Counter('stand_in_total', 'a worker counter').inc(3); time.sleep(60)")


def test_metrics_stop_answering_before_their_files_are_removed(monkeypatch, tmp_path):
    settings = ServerSettings(grpc_addr="127.0.0.1:1", metrics_addr="127.0.0.1:0", processes=2, pin_workers=False,
                              drain_seconds=0, grace_seconds=1)
    group = workers.WorkerGroup(settings, {"PATH": "/usr/bin:/bin"})
    assert group._own_metrics_dir
    env = {**group.env, "PYTHONPATH": ":".join(sys.path)}

    def spawn(index: int) -> None:
        group.children[index] = subprocess.Popen([sys.executable, "-c", CHILD], env=env)

    monkeypatch.setattr(group, "_spawn", spawn)
    url = group.start()
    try:
        read = ""
        for _ in range(100):  # the children write their files
            read = urllib.request.urlopen(url, timeout=5).read().decode()
            if "stand_in_total 6.0" in read:
                break
            time.sleep(0.05)
        assert "stand_in_total 6.0" in read, read[-500:]
        removed = []
        real_rmtree = workers.shutil.rmtree

        def rmtree(path, *args, **kwargs):
            # when the files go, /metrics must no longer answer
            with pytest.raises(urllib.error.URLError):
                urllib.request.urlopen(url, timeout=2)
            removed.append(path)
            real_rmtree(path, *args, **kwargs)

        monkeypatch.setattr(workers.shutil, "rmtree", rmtree)
        group.stop()
        assert group.watch() == 0  # the stand-ins end by SIGTERM (a signal is no failure)
        assert removed == [group.metrics_dir] and not group.metrics_dir.exists()
    finally:
        for child in group.children:
            if child is not None and child.poll() is None:
                child.kill()

"""The dashboard as a real process (`python -m ui`) and headless Chromium (Debian's, driven by Playwright)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

from tests.support.procs import ROOT, WRITER_TOKEN, free_port, retry_on_port_clash, stop_process, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the data behind the Predict tab's probability chart, as the browser holds it (exact doubles)
PROBABILITIES_JS = """() => { for (const d of Bokeh.documents) { const m = d.get_model_by_name('probabilities');
    if (m) return Object.fromEntries(m.data.label.map((l, i) => [l, m.data.p[i]])); } return null; }"""


def open_dashboard(browser, url: str):
    """A new page on the dashboard, once it says it is connected to the server."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(url)
    expect(page.get_by_text("Connected", exact=False).first).to_be_visible(timeout=30000)
    return page


def tab(page, name: str) -> None:
    page.locator(".bk-tab").filter(has_text=name).click()


def enter(locator, value) -> None:
    """Type a value into an input and commit it (Enter, then leave the field)."""
    locator.fill(str(value))
    locator.press("Enter")
    locator.blur()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class UiProc:
    """`python -m ui` on a free port against a server target, logging to a file."""

    def __init__(self, server_target: str, log_path: Path, env: dict[str, str] | None = None):
        self.log_path = Path(log_path)
        self.env = {**os.environ, "PREDMESH_GRPC_ADDR": server_target, "PREDMESH_UI_REFRESH_S": "1",
                    "PYTHONUNBUFFERED": "1", "PREDMESH_WRITER_TOKEN": WRITER_TOKEN,  # it sends feedback
                    **(env or {})}
        for name in ("PREDMESH_ADMIN_TOKEN", "PREDMESH_READONLY_TOKEN", "PREDMESH_SERVER_ADDR"):
            if name not in (env or {}):
                self.env.pop(name, None)  # the dashboard holds no admin credential of its own
        self._pick_port()
        self.proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    def _pick_port(self) -> None:
        """The dashboard does not report what it bound: a port from free_port() (start retries on a clash)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env["PREDMESH_UI_ADDR"] = f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> UiProc:
        return retry_on_port_clash(lambda: self._start(timeout), self._pick_port)

    def _start(self, timeout: float) -> UiProc:
        if self._log is not None:
            self._log.close()
        self._log = log = open(self.log_path, "ab")
        offset = log.tell()
        self.proc = subprocess.Popen([sys.executable, "-m", "ui"], cwd=ROOT, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)

        def ours() -> bool:  # its own start-up line first: a listener on the port is then this dashboard
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return b"predmesh dashboard on" in fh.read()
        wait_for(lambda: self.proc.poll() is not None or (ours() and _listening(self.port)), timeout,
                 what=f"dashboard {self.url}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"dashboard exited with {self.proc.returncode}:\n{self.log()}")
        return self

    def stop(self) -> None:
        stop_process(self.proc, 10)
        if self._log is not None:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> UiProc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""The dashboard against a server's database: first render of every view, and what open tabs cost PostgreSQL.

Starts `python -m ui` against --server (e.g. the analytics bench's server on its 20,000,000-row database), opens
--tabs pages in Debian's Chromium, times each view's first render (from the click to its content) and looks for an
error banner, then keeps the tabs open for --seconds while sampling the CPU time of every PostgreSQL process from
/proc (utime + stime of each process whose name is "postgres", new backends included). The same span with no tab
open is measured first: the tabs' cost is the difference, as a share of one core. With --metrics (the server's
Prometheus address) it also counts the reads the dashboard made (grpc_server_handled_total).

    .venv/bin/python bench/dashboard_tabs.py --server 127.0.0.1:50051 --metrics 127.0.0.1:9464 --tabs 5 --seconds 60

Issue #26's goal: every view's first render <= 2 s with no error banner; five tabs for 60 s <= 10% of one core.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.loadtools import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TICKS = os.sysconf("SC_CLK_TCK")
READS = ("ListModels", "ListPredictions", "GetStats", "ListBatchRuns")
VIEWS = {  # the view's tab and a selector for its content once its reads have come
    "Predict": "input",
    "History": ".tabulator-row, :text('No predictions match')",
    "Model": ":text('serving version')",
    "Quality": ":text('Last batch pipeline runs')",
}


def postgres_ticks() -> dict[int, int]:
    """CPU ticks (user + system) of every process named postgres, by pid."""
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name == "postgres" or name.startswith("postgres:"):
            fields = stat[stat.rindex(")") + 2:].split()
            ticks[int(entry)] = int(fields[11]) + int(fields[12])
    return ticks


def postgres_core_share(seconds: float, interval: float = 1.0) -> float:
    """PostgreSQL's CPU over `seconds` as a share of one core (processes that end meanwhile count to their last
    sample)."""
    first, last = postgres_ticks(), {}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(interval)
        last.update(postgres_ticks())
    elapsed = time.monotonic() - started
    used = sum(t - first.get(pid, 0) for pid, t in last.items())
    return used / TICKS / elapsed


def handled(metrics: str | None) -> dict[str, float]:
    if not metrics:
        return {}
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    counts = dict.fromkeys(READS, 0.0)
    for line in text.splitlines():
        found = re.match(r'grpc_server_handled_total\{.*grpc_method="(\w+)".*\} (\S+)', line)
        if found and found.group(1) in counts:
            counts[found.group(1)] += float(found.group(2))
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True, help="the predmesh server (gRPC host:port) the dashboard reads")
    p.add_argument("--metrics", help="the server's Prometheus host:port, to count the dashboard's reads")
    p.add_argument("--tabs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--refresh", type=float, default=2.0, help="PREDMESH_UI_REFRESH_S (default: the default, 2)")
    args = p.parse_args()

    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "PREDMESH_GRPC_ADDR": args.server, "PREDMESH_UI_ADDR": f"127.0.0.1:{port}",
           "PREDMESH_UI_REFRESH_S": str(args.refresh), "PYTHONUNBUFFERED": "1"}
    env.pop("PREDMESH_SERVER_ADDR", None)
    log = open(ROOT / "var" / "dashboard_tabs.log" if (ROOT / "var").is_dir() else os.devnull, "wb")
    ui = subprocess.Popen([sys.executable, "-m", "ui"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: urllib.request.urlopen(url + "liveness", timeout=2).status == 200, 60, what="dashboard")
        print(f"idle PostgreSQL, {args.seconds:g} s without a tab ...", flush=True)
        idle = postgres_core_share(args.seconds)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            pages, banners = [], 0
            renders: dict[str, list[float]] = {name: [] for name in VIEWS}
            for _i in range(args.tabs):
                page = browser.new_page(viewport={"width": 1300, "height": 1000})
                page.goto(url)
                expect(page.get_by_text("Connected", exact=False).first).to_be_visible(timeout=60000)
                for name, content in VIEWS.items():
                    started = time.monotonic()
                    page.locator(".bk-tab").filter(has_text=name).click()
                    expect(page.locator(content).first).to_be_visible(timeout=60000)
                    renders[name].append(time.monotonic() - started)
                banners += page.locator(".alert-danger:visible").count()
                page.locator(".bk-tab").filter(has_text="History").click()   # the view with the most reads
                pages.append(page)
            print(f"{args.tabs} tabs open, {args.seconds:g} s ...", flush=True)
            before = handled(args.metrics)
            busy = postgres_core_share(args.seconds)
            after = handled(args.metrics)
            browser.close()
    finally:
        ui.terminate()
        ui.wait(10)
    print("\nfirst render per view, s (max over the tabs; the first tab includes the page's own load):")
    for name, times in renders.items():
        print(f"  {name:8s} max {max(times):.2f}  first tab {times[0]:.2f}  others "
              f"{' '.join(f'{t:.2f}' for t in times[1:])}")
    print(f"error banners shown: {banners}")
    print(f"PostgreSQL: {100 * idle:.1f}% of a core idle, {100 * busy:.1f}% with {args.tabs} tabs: the tabs cost "
          f"{100 * (busy - idle):.1f}% of one core (goal <= 10%)")
    if before:
        calls = {m: int(after[m] - before[m]) for m in READS}
        print(f"reads at the server in {args.seconds:g} s: {calls} (one of each per {args.refresh:g} s refresh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

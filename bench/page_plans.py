"""What a ListPredictions page costs on a kept analytics schema (issue #26), in process, without the server: per
filter of bench/analytics_bench.py, at page 1 and at page 10,000 (or the filter's last page), the statements
repo.list_predictions runs, each EXPLAIN (ANALYZE, BUFFERS)ed: partitions planned and run, rows read, planning and
execution ms, and whether the daily partitions are merged (Merge Append) or read one after another (Append); then
--calls calls in a row: wall ms (p50) and CPU per call of the PostgreSQL backend and of this process, from /proc
(utime + stime; less sensitive to a busy machine than wall time). Run it from the tree to measure.

  .venv/bin/python bench/analytics_bench.py --rows 1000000 --days 365 --keep --skip-stats   (prints the schema)
  .venv/bin/python bench/page_plans.py --schema bench_xxxxxxxxxx [--calls 100]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.analytics_bench import deep_token
from bench.persistence import DEFAULT_PG
from database import repo
from database.connect import open_database, session
from database.models import db
from tests.support.pg import statements

F = repo.PredictionFilter
FILTERS = (("none", F()), ("model=wine", F(model="wine")), ("model=iris version=2", F(model="iris", model_version="2")),
           ("version=1", F(model_version="1")), ("label=virginica", F(label="virginica")),
           ("transport=rest", F(transport="rest")), ("transport=queue (3%)", F(transport="queue")))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def walk(plan: dict, out: dict) -> dict:
    if plan.get("Relation Name", "").startswith("predictions"):
        out["planned"] += 1
        out["run"] += plan.get("Actual Loops", 0) > 0
        out["rows"] += plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
    if sum(c.get("Relation Name", "").startswith("predictions_p") for c in plan.get("Plans", [])) > 1:
        out["kinds"].add(plan["Node Type"])
    for child in plan.get("Plans", []):
        walk(child, out)
    return out


def explained(sent: list[tuple[str, tuple]]) -> dict:
    out: dict = {"statements": len(sent), "planned": 0, "run": 0, "rows": 0, "kinds": set(), "plan_ms": 0.0,
                 "exec_ms": 0.0}
    for sql, params in sent:
        [(raw,)] = db.execute_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params).fetchall()
        top = (raw if isinstance(raw, list) else json.loads(raw))[0]
        walk(top["Plan"], out)
        out["plan_ms"] += top["Planning Time"]
        out["exec_ms"] += top["Execution Time"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", required=True, help="a schema kept by analytics_bench.py --keep")
    parser.add_argument("--calls", type=int, default=100, help="measured calls per line (after 3 unmeasured)")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_BENCH_PG_URL")
                        or os.environ.get("PREDMESH_TEST_PG_URL") or DEFAULT_PG)
    args = parser.parse_args()
    sep = "&" if "?" in args.pg_url else "?"
    database = open_database(f"{args.pg_url}{sep}options={quote(f'-c search_path={args.schema}')}",
                             statement_timeout_ms=600_000)
    print(f"schema {args.schema}; load average {os.getloadavg()[0]:.1f}", flush=True)
    try:
        with session():
            backend = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
            for name, flt in FILTERS:
                deep, depth = deep_token(flt, args.page_size)
                for page, token in ((1, ""), (depth, deep)):
                    for _ in range(3):
                        repo.list_predictions(flt, args.page_size, token)
                    with statements(database) as sent:
                        repo.list_predictions(flt, args.page_size, token)
                    plan = explained(sent)
                    walls = []
                    backend0, own0 = cpu_s(backend), time.process_time()
                    for _ in range(args.calls):
                        t0 = time.perf_counter()
                        repo.list_predictions(flt, args.page_size, token)
                        walls.append((time.perf_counter() - t0) * 1000)
                    pg_ms = (cpu_s(backend) - backend0) / args.calls * 1000
                    own_ms = (time.process_time() - own0) / args.calls * 1000
                    print(f"  {name:<22} page {page:>6,}: {plan['statements']} statement(s), partitions planned "
                          f"{plan['planned']:>3} run {plan['run']:>3}, rows read {plan['rows']:>6,}, planning "
                          f"{plan['plan_ms']:7.2f} ms, execution {plan['exec_ms']:6.2f} ms "
                          f"{'/'.join(sorted(plan['kinds'])) or '-':<12} | wall p50 {statistics.median(walls):6.1f} "
                          "ms, "
                          f"CPU per call PostgreSQL {pg_ms:5.2f} ms, this process {own_ms:5.2f} ms", flush=True)
    finally:
        database.close()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the Grafana dashboards in deploy/grafana/dashboards/*.json from the panel lists below.

    .venv/bin/python deploy/grafana/build_dashboards.py          # rewrite the JSON files
    .venv/bin/python deploy/grafana/build_dashboards.py --check  # exit 1 if a committed file is stale

The JSON is committed (Grafana provisioning and "Import dashboard" read it as is);
tests/unit/monitoring/test_dashboards.py checks it is current, and
tests/integration/prometheus/test_monitoring_live.py runs every query against a real Prometheus.
Every panel reads the datasource variable `datasource` (any Prometheus), and `model` filters by model.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
RI = "$__rate_interval"
M = 'model=~"$model"'

# dashboard uid -> (title, [(panel title, unit, [(expr, legend)], kind)]); kind: "timeseries" | "stat" | "table"
DASHBOARDS: dict[str, tuple[str, list]] = {
    "predmesh-service": ("predmesh / service overview", [
        ("Scored rows/s by transport", "reqps",
         [(f"sum by (transport) (rate(predmesh_predictions_total{{{M}}}[{RI}]))", "{{transport}}")], "timeseries"),
        ("gRPC calls/s by method", "reqps",
         [((f"sum by (grpc_method) (rate(grpc_server_handled_total"
            f"{{job=\"inference\",grpc_service!=\"grpc.health.v1.Health\"}}[{RI}]))"),
           "{{grpc_method}}")], "timeseries"),
        ("Predict latency p50 / p95 / p99", "s",
         [((f"histogram_quantile({q}, sum by (le) "
            f"(rate(grpc_server_handling_seconds_bucket{{grpc_method=\"Predict\"}}[{RI}])))"),
           f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)], "timeseries"),
        ("Latency p99 by method", "s",
         [((f"histogram_quantile(0.99, sum by (grpc_method, le) (rate(grpc_server_handling_seconds_bucket"
            f"{{grpc_method=~\"Predict|PredictBatch|ModelInfer|GetStats|SubmitFeedback\"}}[{RI}])))"),
           "{{grpc_method}}")], "timeseries"),
        ("Non-OK ratio by code", "percentunit",
         [((f"sum by (grpc_code) (rate(grpc_server_handled_total{{grpc_code!=\"OK\"}}[{RI}])) / ignoring (grpc_code) "
            f"group_left sum(rate(grpc_server_handled_total[{RI}]))"), "{{grpc_code}}")], "timeseries"),
        ("Server-side error ratio (5m, recorded)", "percentunit",
         [("predmesh:grpc_server_errors:ratio_rate5m", "{{job}}")], "timeseries"),
        ("Saturation: CPU (cores) and rows per model call", "short",
         [(f"sum by (instance) (rate(process_cpu_seconds_total{{job=\"inference\"}}[{RI}]))", "CPU {{instance}}"),
          (f"sum(rate(predmesh_batch_rows_sum[{RI}])) / sum(rate(predmesh_batch_rows_count[{RI}]))",
           "rows per predict_proba")], "timeseries"),
        ("Resident memory", "bytes",
         [("sum by (instance) (process_resident_memory_bytes{job=\"inference\"})", "{{instance}}")], "timeseries"),
        ("Serving version", "none",
         [(f"predmesh_model_info{{{M}}}", "{{model}}@{{version}} {{sha256}}")], "table"),
        ("Reloads (last hour)", "none",
         [(f"sum by (model, result) (increase(predmesh_reload_total{{{M}}}[1h]))", "{{model}} {{result}}")], "stat"),
    ]),
    "predmesh-quality": ("predmesh / model quality", [
        ("Predicted class distribution", "percentunit",
         [((f"sum by (model, version, class) (rate(predmesh_predictions_total{{{M}}}[{RI}])) / ignoring (class) "
            f"group_left sum by (model, version) (rate(predmesh_predictions_total{{{M}}}[{RI}]))"),
           "{{model}}@{{version}} {{class}}")], "timeseries"),
        ("Accuracy from feedback", "percentunit",
         [(f"max by (model, version) (predmesh_feedback_accuracy{{{M}}})", "{{model}}@{{version}}")], "timeseries"),
        ("Macro precision from feedback", "percentunit",
         [(f"max by (model, version) (predmesh_feedback_macro_precision{{{M}}})", "{{model}}@{{version}}")],
         "timeseries"),
        ("Macro recall from feedback", "percentunit",
         [(f"max by (model, version) (predmesh_feedback_macro_recall{{{M}}})", "{{model}}@{{version}}")], "timeseries"),
        ("Predictions with feedback", "none",
         [(f"max by (model, version) (predmesh_feedback_predictions{{{M}}})", "{{model}}@{{version}}")], "timeseries"),
        ("Feature drift per replica (PSI vs training: deciles, categories + unseen, missing; alert > 0.25)", "none",
         [(f"predmesh_feature_drift_psi{{{M}}}", "{{model}}@{{version}} {{feature}} {{instance}}")], "timeseries"),
        ("Category shares, live (drift window) vs training", "percentunit",
         [(f"predmesh_feature_category_share{{{M}}}", "{{model}}@{{version}} {{feature}}={{category}} {{source}}")],
         "timeseries"),
        ("Missing values (share of the drift window) and unseen categories/s", "short",
         [(f"predmesh_feature_missing_ratio{{{M}}}", "missing {{model}}@{{version}} {{feature}}"),
          (f"sum by (model, feature) (rate(predmesh_feature_unseen_categories_total{{{M}}}[{RI}]))",
           "unseen/s {{model}} {{feature}}")], "timeseries"),
        ("Values outside the training range", "percentunit",
         [(f"predmesh_feature_out_of_range_ratio{{{M}}}", "{{model}}@{{version}} {{feature}}")], "timeseries"),
        ("Class-share drift (total variation vs training balance)", "none",
         [(f"predmesh_class_drift{{{M}}}", "{{model}}@{{version}} {{instance}}")], "timeseries"),
        ("Rows in each replica's drift window (alerts need 200 in its smallest process window)", "none",
         [(f"predmesh_drift_window_rows{{{M}}}", "{{model}}@{{version}} {{instance}}"),
          (f"predmesh_drift_window_rows_min{{{M}}}", "smallest process window {{model}}@{{version}} {{instance}}")],
         "timeseries"),
    ]),
    "predmesh-pipeline": ("predmesh / pipeline health", [
        ("Queue depth (ready / unacked)", "none",
         [("sum by (queue) (rabbitmq_detailed_queue_messages_ready)", "{{queue}} ready"),
          ("sum by (queue) (rabbitmq_detailed_queue_messages_unacked)", "{{queue}} unacked")], "timeseries"),
        ("Dead letters", "none",
         [("max(predmesh_consumer_dlq_depth)", "consumer's view"),
          ("sum by (queue) (rabbitmq_detailed_queue_messages{queue=~\".*\\\\.dead\"})", "{{queue}}")], "timeseries"),
        ("Consumer throughput (jobs/s)", "reqps",
         [(f"sum(rate(predmesh_consumer_acked_total[{RI}]))", "acked"),
          (f"sum by (reason) (rate(predmesh_consumer_rejected_total[{RI}]))", "rejected {{reason}}"),
          (f"sum by (code) (rate(predmesh_consumer_retried_total[{RI}]))", "retried {{code}}")], "timeseries"),
        ("Consumer publish-to-ack p95", "s",
         [(f"histogram_quantile(0.95, sum by (le) (rate(predmesh_consumer_end_to_end_seconds_bucket[{RI}])))",
           "p95")], "timeseries"),
        ("Consumers connected", "none", [("sum(predmesh_consumer_connected)", "connected")], "stat"),
        ("Batch tasks (last day, luigid)", "none",
         [("sum by (family) (increase(luigi_task_done_total[1d]))", "{{family}} done"),
          ("sum by (family) (increase(luigi_task_failed_total[1d]))", "{{family}} failed")], "timeseries"),
        ("Since the last batch run, by status", "s",
         [("time() - max by (kind, model, status) (predmesh_batch_run_last_timestamp_seconds)",
           "{{kind}} {{model}} {{status}}")], "table"),
        ("Prediction spool (bytes / oldest record)", "short",
         [("sum by (instance) (predmesh_spool_bytes)", "bytes {{instance}}"),
          ("max by (instance) (predmesh_spool_oldest_seconds)", "oldest s {{instance}}")], "timeseries"),
        ("Database writer", "short",
         [("sum by (instance) (predmesh_prediction_queue)", "queued {{instance}}"),
          (f"sum(rate(predmesh_prediction_rows_written_total[{RI}]))", "rows written/s"),
          (f"sum(increase(predmesh_db_write_failures_total[{RI}]))", "write failures")], "timeseries"),
    ]),
    "predmesh-gateway": ("predmesh / gateway (Envoy)", [
        ("Healthy replicas", "none",
         [("sum by (envoy_cluster_name) (envoy_cluster_membership_healthy)", "healthy {{envoy_cluster_name}}"),
          ("sum by (envoy_cluster_name) (envoy_cluster_membership_total)", "total {{envoy_cluster_name}}")],
         "timeseries"),
        ("Requests/s by listener and status class", "reqps",
         [((f"sum by (envoy_http_conn_manager_prefix, envoy_response_code_class) "
            f"(rate(envoy_http_downstream_rq_xx{{envoy_http_conn_manager_prefix=~\"public|admin\"}}[{RI}]))"),
           "{{envoy_http_conn_manager_prefix}} {{envoy_response_code_class}}xx")], "timeseries"),
        ("4xx / 5xx ratio (public listener)", "percentunit",
         [((f"sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx"
            f"{{envoy_http_conn_manager_prefix=\"public\",envoy_response_code_class=~\"4|5\"}}[{RI}])) "
            f"/ ignoring (envoy_response_code_class) group_left "
            f"sum(rate(envoy_http_downstream_rq_total{{envoy_http_conn_manager_prefix=\"public\"}}[{RI}]))"),
           "{{envoy_response_code_class}}xx")], "timeseries"),
        ("Retries to the replicas", "reqps",
         [(f"sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_retry[{RI}]))",
           "retries {{envoy_cluster_name}}"),
          (f"sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_retry_overflow[{RI}]))",
           "retry overflow {{envoy_cluster_name}}")], "timeseries"),
        ("Rate-limited requests", "reqps",
         [(f"sum by (envoy_local_http_ratelimit_prefix) (rate(envoy_http_local_rate_limit_rate_limited[{RI}]))",
           "{{envoy_local_http_ratelimit_prefix}}")], "timeseries"),
        ("Upstream requests/s by status class", "reqps",
         [(f"sum by (envoy_cluster_name, envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx[{RI}]))",
           "{{envoy_cluster_name}} {{envoy_response_code_class}}xx")], "timeseries"),
    ]),
}


def panel(pid: int, title: str, unit: str, targets: list, kind: str) -> dict:
    width = 24 if kind == "table" else 12
    out = {
        "id": pid, "type": kind, "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": width, "x": 0 if width == 24 else 12 * ((pid - 1) % 2), "y": 8 * ((pid - 1) // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"},
                     **({"instant": True, "format": "table"} if kind == "table" else {})}
                    for i, (expr, legend) in enumerate(targets)],
    }
    return out


def dashboard(uid: str, title: str, panels: list) -> dict:
    return {
        "uid": uid, "title": title, "tags": ["predmesh"], "schemaVersion": 39, "version": 1, "editable": True,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "10s", "timezone": "utc",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
             "current": {}, "hide": 0},
            {"name": "model", "type": "query", "label": "model", "datasource": {"type": "prometheus",
                                                                                "uid": "${datasource}"},
             "query": {"query": "label_values(predmesh_model_info, model)", "refId": "model"},
             "definition": "label_values(predmesh_model_info, model)", "includeAll": True, "multi": True,
             "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "refresh": 2, "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": [panel(i + 1, *p) for i, p in enumerate(panels)],
    }


def render() -> dict[str, str]:
    return {f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
            for uid, (title, panels) in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [name for name, text in files.items()
                 if not (OUT / name).exists() or (OUT / name).read_text() != text]
        if stale:
            print(f"stale dashboards (run deploy/grafana/build_dashboards.py): {', '.join(stale)}")
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

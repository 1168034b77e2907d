"""MLServer 1.7 (sklearn runtime) for the benchmark: its own pinned virtualenv, model repository and process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"]  # newer uvloop breaks 1.7's workers


def ensure_venv(venv: Path) -> Path:
    """Create (once) the virtualenv with MLServer and the same scikit-learn as ours; returns its mlserver binary."""
    import sklearn

    mlserver = venv / "bin" / "mlserver"
    stamp = venv / ".predmesh-pins"
    wanted = "\n".join([*PINS, f"scikit-learn=={sklearn.__version__}"])
    if mlserver.exists() and stamp.exists() and stamp.read_text() == wanted:
        return mlserver
    print(f"installing MLServer into {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-U", "pip"], check=True)
    subprocess.run([*pip, *wanted.split("\n")], check=True)
    stamp.write_text(wanted)
    return mlserver


def write_repository(root: Path, models: dict[str, Any], *, batch_size: int, batch_ms: float,
                     signatures: dict[str, dict[str, Any]] | None = None) -> None:
    """One folder per model: model.joblib (the same fitted estimator predmesh serves) + model-settings.json.
    signatures[model] replaces the default settings' keys (inputs, outputs, parameters) for that model, e.g. a
    pipeline over a DataFrame: one input per column and the pandas content type (bench/penguins.py)."""
    import joblib

    for name, estimator in models.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(estimator, folder / "model.joblib")
        n_features = len(getattr(estimator, "feature_names_in_", [])) or estimator.n_features_in_
        # the signature (ModelMetadata), as perf_analyzer needs it to build requests
        settings: dict[str, Any] = {"name": name, "implementation": "mlserver_sklearn.SKLearnModel",
                    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, n_features]}],
                    "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]},
                                {"name": "predict_proba", "datatype": "FP64",
                                 "shape": [-1, len(getattr(estimator, "classes_", []))]}],
                    "parameters": {"uri": "./model.joblib", "version": "v1"}}
        settings.update((signatures or {}).get(name, {}))
        if batch_size > 1:
            settings.update(max_batch_size=batch_size, max_batch_time=batch_ms / 1000)
        (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))


class MLServer:
    """`mlserver start <repo>` bound to 127.0.0.1 with the given parallel_workers."""

    def __init__(self, binary: Path, repo: Path, *, http_port: int, grpc_port: int, metrics_port: int,
                 workers: int, log_path: Path, model_configs: dict[str, bytes] | None = None):
        self.binary, self.repo, self.log_path = binary, repo, log_path
        self.model_configs = model_configs  # Triton ModelConfigResponse per model: served for perf_analyzer
        self.http_port, self.grpc_port = http_port, grpc_port
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        (repo / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
            "parallel_workers": workers, "debug": False, "metrics_dir": str(repo / ".metrics"),
        }, indent=2))
        self.proc: subprocess.Popen | None = None

    def start(self, models: list[str], timeout: float = 120.0) -> MLServer:
        from predmesh.oip import grpc_predict_v2_pb2 as pb
        from predmesh.oip import grpc_predict_v2_pb2_grpc as pb_grpc

        self._log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMETHEUS_", "PREDMESH_"))}
        # One OpenMP thread per worker: HistGradientBoosting's predict otherwise runs 2 OpenMP threads per call,
        # which on 2 shared cores spin at their barriers for ~200 ms a row (10 ms with one thread, measured); the
        # Iris estimators do not use OpenMP. MLServer's best, not its default.
        env["OMP_NUM_THREADS"] = "1"
        argv = [str(self.binary), "start", str(self.repo)]
        if self.model_configs:  # MLServer plus Triton's ModelConfig RPC (bench/mlserver_modelconfig.py)
            configs = self.repo / "model-configs.json"
            configs.write_text(json.dumps({name: raw.hex() for name, raw in self.model_configs.items()}))
            env["MLSERVER_MODEL_CONFIGS"] = str(configs)
            launcher = Path(__file__).with_name("mlserver_modelconfig.py")
            argv = [str(self.binary.absolute().with_name("python")), str(launcher), "start", str(self.repo)]
        self.proc = subprocess.Popen(argv, cwd=self.repo, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"MLServer exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    if all(stub.ModelReady(pb.ModelReadyRequest(name=m), timeout=1).ready for m in models):
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.5)
        self.stop()
        raise SystemExit(f"MLServer not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        if self.proc:
            self._log.close()

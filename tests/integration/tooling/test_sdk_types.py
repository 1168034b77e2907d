"""The SDK's type hints take what its docs tell a user to pass: a user's script, checked with `mypy --strict`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

USER_SCRIPT = '''
import numpy as np
import numpy.typing as npt

from predmesh import AsyncClient, Client, Prediction, ScoredMatrix, StreamResult, jobs


def score(client: Client, table: npt.NDArray[np.float64], row: dict[str, np.float32]) -> None:
    # "Pass a number (int, float, numpy numbers)" (docs/sdk.md)
    p: Prediction = client.predict("iris", {"a": np.float32(5.1), "b": np.int64(3), "c": np.bool_(True), "d": None})
    client.predict("iris", row)
    each: list[StreamResult] = client.predict_each("iris", [{"a": np.float64(1.0), "c": "Month-to-month"}])
    # predict_matrix: the values row-major, e.g. a frame's numbers as one flat array
    m: ScoredMatrix = client.predict_matrix("iris", ["a", "b"], table.ravel())
    jobs.matrix_job("iris", ["a", "b"], table.ravel())
    print(p.label, each, m.labels)


async def score_async(client: AsyncClient, table: npt.NDArray[np.float64]) -> None:
    m: ScoredMatrix = await client.predict_matrix("iris", ["a", "b"], table.ravel())
    print(m.labels)
'''


def test_a_users_numpy_values_and_arrays_type_check_strictly(tmp_path):
    # before: np.float32/np.int64 values were "incompatible type ... expected Mapping[str, float | int | str | bool |
    # Value | None]" and an array for predict_matrix "incompatible type ndarray; expected Sequence[float]"
    script = tmp_path / "user.py"
    script.write_text(USER_SCRIPT)
    # the SDK is read from the checkout (MYPYPATH; mypy cannot follow the editable install's import hook), so its
    # own modules' findings (generated stubs under --strict) are the SDK's, not the user's: only user.py is judged
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\n\n[mypy-predmesh.*]\nignore_errors = True\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", str(config), str(script)],
        cwd=tmp_path, env={**os.environ, "MYPYPATH": str(ROOT)}, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr

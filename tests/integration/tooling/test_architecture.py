"""The architecture's import contracts (pyproject [tool.importlinter]) hold, and the check really catches a breach."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.procs import ROOT

LINT = Path(shutil.which("lint-imports") or ROOT / ".venv" / "bin" / "lint-imports")


def lint(cwd: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    args = [str(LINT), "--no-cache"] + ([str(config)] if config else [])
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_project_keeps_its_import_contracts():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_client_part_importing_the_server_breaks_the_contract(tmp_path):
    # a miniature project with the same rule: a client part may use the SDK, never the server or the database
    for package, body in {"predmesh": "", "inference": "", "database": "",
                          "consumer": "import predmesh\nfrom inference import x\n"}.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("x = 1\n" if package == "inference" else "")
        (tmp_path / package / "worker.py").write_text(body)
    config = tmp_path / ".importlinter"
    config.write_text(
        "[importlinter]\nroot_packages =\n    predmesh\n    inference\n    database\n    consumer\n"
        "[importlinter:contract:clients]\nname = clients use the SDK only\ntype = forbidden\n"
        "source_modules =\n    consumer\nforbidden_modules =\n    inference\n    database\n")
    result = lint(tmp_path, config)
    assert result.returncode != 0 and "consumer.worker -> inference" in result.stdout, result.stdout


def test_the_consumer_imports_only_the_sdk_and_the_sdk_core_does_not_need_pika():
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    for path in (root / "consumer").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("inference", "database", "sklearn", "peewee")], path
    probe = "import sys, predmesh.jobs, predmesh.client; print('pika' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip() == "False"

"""The import layering of docs/design.md, checked by import-linter's contracts in pyproject.toml."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})


def test_the_package_keeps_its_layers():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("trainables/engine.py", "import ray.tune\n", "engines never import Ray"),
    ("models/__init__.py", "import study.spaces\n", "study -> trainables -> models, data; never back"),
    ("data/labels.py", "from trainables import config as _c\n", "study -> trainables -> models, data; never back"),
])
def test_a_planted_violation_breaks_its_contract(tmp_path, module, line, contract):
    """The contracts can fail: a copy of the packages with one forbidden import planted."""
    for name in ("study", "trainables", "models", "data"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(line + target.read_text())
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout, result.stdout

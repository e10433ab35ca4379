"""The import layering of docs/design.md, checked by import-linter's contracts in pyproject.toml."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
STUDY_LAYERS = "study in layers: cli/commands > view > report | run > state > config > errors"


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})


def test_the_package_keeps_its_layers():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("trainables/engine.py", "import ray.tune\n", "engines never import Ray"),
    ("models/__init__.py", "import study.config.spaces\n", "study -> trainables -> models, data; never back"),
    ("data/labels.py", "from trainables import config as _c\n", "study -> trainables -> models, data; never back"),
    # an upward import deferred into a function is an import all the same
    ("study/state/location.py", "def _planted():\n    import study.run.tuner\n", STUDY_LAYERS),
    ("study/config/spaces.py", "def _planted():\n    from study.view import tensorboard\n", STUDY_LAYERS),
    ("study/report/collect.py", "import study.run.search\n", STUDY_LAYERS),  # readers never start Ray
    ("study/view/tensorboard.py", "from study.cli import main\n", STUDY_LAYERS),
    # a circle inside one layer: spaces <- preflight already
    ("study/config/spaces.py", "def _planted():\n    import study.config.preflight\n", "no import circles"),
    ("trainables/metrics.py", "import trainables.engine\n", "no import circles"),
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

"""The reliability suite reuses the study tests' helpers (tests/study/study_helpers.py)."""
from __future__ import annotations

import sys
from pathlib import Path

_STUDY_TESTS = str(Path(__file__).resolve().parents[1] / "study")
if _STUDY_TESTS not in sys.path:
    sys.path.insert(0, _STUDY_TESTS)

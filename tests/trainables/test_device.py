"""trainables.device: device resolution, and the evaluation layer importing neither the engine nor anything that
imports it back (the engine → evaluation → engine circle of issue 18)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from trainables.device import resolve_device


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"runtime.device = 'cuda:0' but torch sees no CUDA device"):
            resolve_device("cuda:0")


def test_engine_reexports_the_same_function():
    from trainables import engine

    assert engine.resolve_device is resolve_device


@pytest.mark.slow  # > 2 s: outside make test-quick
def test_evaluation_and_validators_load_without_the_engine():
    """Importing (and evaluating with) the evaluation and validator modules never loads trainables.engine: the
    evaluation takes its device from trainables.device, the validators their forward pass from the evaluation."""
    code = ("import sys, inspect\n"
            "import trainables.validators, trainables.evaluation\n"
            "assert 'trainables.engine' not in sys.modules, 'engine imported'\n"
            "src = inspect.getsource(trainables.evaluation.evaluate_checkpoint)\n"
            "assert 'trainables.engine' not in src, 'deferred engine import'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

"""Fixtures shared across test packages (keep this file small)."""
from __future__ import annotations

import pytest

# A tiny synthetic benchmark (about 1 s to write): 11 target train images per city, so that the
# between-city splits group{0,1}_{train,val} are all non-empty.
TINY_BENCHMARK = dict(seed=0, num_source=12, num_source_val=4, num_target_train=66, num_target_val=6,
                      source_size=(64, 40), target_size=(64, 32))


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    """Path of a tiny synthetic benchmark (OUT with source/, target/, manifest.json); treat it as read-only."""
    from data.synthetic import generate

    out = tmp_path_factory.mktemp("benchmark") / "synthetic"
    generate(out, **TINY_BENCHMARK)
    return out

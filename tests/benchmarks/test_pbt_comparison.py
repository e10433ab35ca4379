"""benchmarks/pbt_comparison.py: the DANN ramp it replays and the table it prints, against hand-computed values."""
from __future__ import annotations

import math

from benchmarks.pbt_comparison import INTERVAL, ITERATIONS, dann_ramp, summarise


def test_the_ramp_is_danns_at_each_segments_midpoint():
    segments = dann_ramp(0.01)
    assert [start for start, _ in segments] == list(range(0, ITERATIONS, INTERVAL))
    first = 0.01 * (2 / (1 + math.exp(-10 * (INTERVAL / 2) / ITERATIONS)) - 1)
    assert math.isclose(segments[0][1]["adapt.lambda_adv_main"], first, rel_tol=1e-12)
    values = [v["adapt.lambda_adv_main"] for _, v in segments]
    assert values == sorted(values) and values[-1] < 0.01


def _row(arm, seed, im, miou, iterations=120):
    return {"arm": arm, "seed": seed, "run": f"{arm}{im}", "uda/im": im, "val/mIoU16": miou,
            "iterations": iterations}


def test_each_arm_reports_its_label_free_pick_paired_by_seed():
    rows = [  # seed 1: constant picks 0.30 (im 0.9) though 0.32 is better by val; pbt picks 0.35
        _row("constant", 1, 0.9, 0.30), _row("constant", 1, 0.8, 0.32), _row("pbt", 1, 0.7, 0.35, 140),
        _row("pbt", 1, 0.6, 0.36),
        _row("constant", 2, 0.5, 0.20), _row("constant", 2, 0.4, 0.10), _row("pbt", 2, 0.9, 0.21),
        _row("pbt", 2, 0.1, 0.05)]
    table = summarise(rows)
    constant = next(line for line in table.splitlines() if line.startswith("| constant"))
    pbt = next(line for line in table.splitlines() if line.startswith("| pbt"))
    # picks: constant 30, 20 -> 25.00 ± 7.07; oracle 32, 20 -> 26.00 ± 8.49; pbt picks 35, 21 -> 28.00 ± 9.90
    assert "25.00 ± 7.07 (n = 2)" in constant and "26.00 ± 8.49 (n = 2)" in constant
    assert "28.00 ± 9.90 (n = 2)" in pbt
    # Δ by seed: +5, +1 -> mean 3, sd 2.83, half-width t(0.975, 1) 12.706 x 2.83 / sqrt(2) = 25.41
    assert "+3.00 [-22.41, +28.41] (n = 2)" in pbt
    assert pbt.rstrip(" |").endswith("500") and constant.rstrip(" |").endswith("480")  # iterations trained

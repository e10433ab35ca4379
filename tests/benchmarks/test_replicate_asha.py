"""benchmarks/replicate_asha.py replay: the event simulation drives the real schedulers as Ray does."""
from __future__ import annotations

import csv
import json

import pytest

from benchmarks import replicate_asha as R

A, B = json.dumps({"x": "A"}), json.dumps({"x": "B"})
# A is the true best at max_t = 2 (mean 0.6); B's mean is 0.5, but its seed 2 is lucky (0.9)
CURVES = {(A, 1): {1: 0.30, 2: 0.6}, (A, 2): {1: 0.30, 2: 0.6},
          (B, 1): {1: 0.05, 2: 0.1}, (B, 2): {1: 0.95, 2: 0.9}}


def test_fifo_trains_every_trial_to_the_end():
    trained = R.simulate(None, [(A, 1), (A, 2), (B, 1), (B, 2)], CURVES, max_t=2, concurrency=2, prefix="t")
    assert trained == {(A, 1): 2, (A, 2): 2, (B, 1): 2, (B, 2): 2}
    assert R.reported_best(trained, CURVES, max_t=2) == A


def test_plain_asha_keeps_a_lucky_seed_and_replicate_asha_decides_on_the_mean():
    from ray.tune.schedulers import ASHAScheduler

    from study.run.replicates import ReplicateASHA

    order = [(A, 1), (A, 2), (B, 1), (B, 2)]
    plain = R.simulate(ASHAScheduler(metric="m", mode="max", max_t=2, grace_period=1, reduction_factor=2),
                       order, CURVES, max_t=2, concurrency=2, prefix="p")
    assert plain == {(A, 1): 2, (A, 2): 2, (B, 1): 1, (B, 2): 2}  # B's seeds split by survival
    assert R.reported_best(plain, CURVES, max_t=2) == B  # its lucky seed alone: 0.9
    assert R.reported_best(plain, CURVES, max_t=2, min_n=2) == A
    grouped = R.simulate(ReplicateASHA(replicates=2, study_dir=None, max_t=2, grace_period=1, reduction_factor=2,
                                       metric="m", mode="max"), order, CURVES, max_t=2, concurrency=2, prefix="r")
    assert grouped == {(A, 1): 2, (A, 2): 2, (B, 1): 2, (B, 2): 2}  # B's rung-1 mean 0.5 >= A's 0.3: both go on
    assert R.reported_best(grouped, CURVES, max_t=2) == A  # B's mean 0.5 < A's 0.6


def test_wilson_interval_matches_the_textbook_value():
    low, high = R.wilson(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)


def test_load_curves_and_truth(tmp_path):
    path = tmp_path / "c.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["config", "seed", "trial", "evaluation", "iteration", "value"])
        writer.writeheader()
        for (config, seed), curve in CURVES.items():
            for evaluation, value in curve.items():
                writer.writerow({"config": config, "seed": seed, "trial": "t", "evaluation": evaluation,
                                 "iteration": 40 * evaluation, "value": value})
    curves, per_eval = R.load_curves(path)
    assert curves == CURVES and per_eval == 40
    assert R.true_means(curves, 2) == {A: pytest.approx(0.6), B: pytest.approx(0.5)}


def test_recordings_merge_and_a_seed_recorded_twice_must_agree(tmp_path):
    def write(name, rows):
        path = tmp_path / name
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["config", "seed", "trial", "evaluation", "iteration", "value"])
            writer.writeheader()
            writer.writerows({"config": c, "seed": s, "trial": "t", "evaluation": 1, "iteration": 40, "value": v}
                             for c, s, v in rows)
        return path

    first = write("a.csv", [(A, 1, 0.5), (B, 1, 0.4)])
    again = write("b.csv", [(A, 1, 0.5), (A, 2, 0.7)])
    curves, _ = R.load_curves(f"{first},{again}")
    assert curves == {(A, 1): {1: 0.5}, (B, 1): {1: 0.4}, (A, 2): {1: 0.7}}
    other = write("c.csv", [(A, 1, 0.6)])
    with pytest.raises(ValueError, match="recorded before with another curve"):
        R.load_curves(f"{first},{other}")

"""`study status`: seeds are replicates (the best configuration by its mean over seeds, not one lucky seed) and the
label-free validators of each trial's last evaluation are shown next to the study metric."""
from __future__ import annotations

import json

from study.commands.study import _best_configuration, _validator_scores, format_trials_table


def _trial(number, lam, seed, value, state="COMPLETE", validators=None):
    return {"number": number, "trial": f"trial_{number}", "state": state, "value": value, "step": 4,
            "params": {"adapt.lambda_adv": lam, "runtime.seed": seed}, "pruned_at": None, "reason": None,
            "validators": validators or {}}


def test_best_configuration_is_the_best_mean_over_seeds_not_the_luckiest_seed():
    trials = [_trial(0, 0.01, 0, 0.10), _trial(1, 0.01, 1, 0.30),  # one lucky seed, mean 0.20
              _trial(2, 0.1, 0, 0.24), _trial(3, 0.1, 1, 0.26)]    # mean 0.25: the better configuration
    best = _best_configuration(trials, mode="max")
    assert best["params"] == {"adapt.lambda_adv": 0.1}
    assert best["n"] == 2 and abs(best["mean"] - 0.25) < 1e-12
    assert abs(best["sd"] - 0.0141421356) < 1e-8  # sample sd of (0.24, 0.26)
    assert _best_configuration([_trial(0, 0.01, 0, 0.1), _trial(1, 0.1, 0, 0.2)], mode="max") is None  # no replicates
    assert _best_configuration(trials, mode="min")["params"] == {"adapt.lambda_adv": 0.01}


def test_status_table_shows_validators_and_the_best_configuration():
    trials = [_trial(0, 0.01, 0, 0.10, validators={"uda/snd": 1.5, "uda/im": 0.25}),
              _trial(1, 0.01, 1, 0.30, validators={"uda/snd": 1.25}),
              _trial(2, 0.1, 0, 0.24), _trial(3, 0.1, 1, 0.26)]
    info = {"metric": "val/mIoU16", "max_t": 4, "trials": trials, "num_samples": 4, "counts": {"COMPLETE": 4},
            "best": trials[1], "best_config": _best_configuration(trials, mode="max")}
    text = format_trials_table(info)
    header = text.splitlines()[0].split()
    assert "uda/im" in header and "uda/snd" in header
    row0 = text.splitlines()[2].split()
    assert "1.5" in row0 and "0.25" in row0
    assert "best configuration by its mean over seeds" in text and "25.00 ± 1.41 %" in text and "n = 2" in text


def test_validator_scores_come_from_the_last_evaluation_record(tmp_path):
    run = tmp_path / "trial_a" / "run"
    run.mkdir(parents=True)
    (run / "last_eval.json").write_text(json.dumps({"iteration": 40, "val/mIoU16": 0.2, "uda/snd": 2.0,
                                                    "uda/bnm": float("nan")}))
    assert _validator_scores(tmp_path, "trial_a") == {"uda/snd": 2.0}  # NaN dropped, labelled metrics not shown
    assert _validator_scores(tmp_path, "trial_missing") == {}
    assert _validator_scores(tmp_path, None) == {}

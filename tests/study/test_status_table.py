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


# ---------------------------------------------------------------------------------------------------------
# one identity per trial (issue 19): status names a trial by the label TensorBoard and the report use


def _report_fixture():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import test_report

    return test_report


def test_status_names_each_trial_by_its_label_with_its_directory_last(tmp_path):
    from study.commands.study import collect_trials
    from study.report import load_study, write_report
    from study.view.tensorboard import run_name

    fixture = _report_fixture()
    study_dir = fixture.make_study(tmp_path, trials=fixture.TRIALS, baseline=False)
    info = collect_trials(study_dir)
    text = format_trials_table(info)
    lines = text.splitlines()
    header = lines[0].split()
    assert header[0] == "trial" and header[-1] == "dir"
    dims = list(json.loads((study_dir / "space.json").read_text())["dimensions"])
    expected = {}
    for k, (name, lam, lr, seed, *_rest) in enumerate(fixture.TRIALS):
        label = f"#{k} λ={lam:.3g} lr={lr:.3g} seed={seed}"
        directory = f"trial_abc_{k:05d}_{name}"
        # the same string as TensorBoard's run name for that trial directory
        assert run_name(json.loads((study_dir / directory / "params.json").read_text()), dims, k) == label
        expected[directory] = label
    rows = lines[2:2 + len(fixture.TRIALS)]
    shown = {row.split()[-1]: row[:row.index("  ")] for row in rows}  # dir (last column) -> first column
    assert shown == expected
    assert not [row for row in rows if row.startswith("trial_")]
    # ... and as the report's trials table
    report = (write_report(study_dir), (study_dir / "report.md").read_text())[1]
    table = fixture._table(report, "## Trials")
    assert {r[table[0].index("dir")]: r[table[0].index("trial")] for r in table[1:]} == expected
    data = load_study(study_dir)
    assert {t.name: data.label(t) for t in data.trials} == expected
    assert {t["trial"]: t["label"] for t in info["trials"]} == expected  # --json carries both


def test_status_best_line_picks_by_the_reports_rule_and_names_the_trial_by_its_label(tmp_path):
    """A completed trial beats one stopped early at a higher intermediate value, in `study status` as in the report
    (the trials table ranks completed trials 1, 2, ... before the early-stopped ones); equal values go to the
    trial started first (the lower Optuna number) in both."""
    from study.commands.study import _best_trial, collect_trials
    from study.report import load_study, write_report

    fixture = _report_fixture()
    m = "deeplabv2_tiny"
    trials = [("c0", 1e-3, 0.01, 1, 4, "completed", m, 0.30), ("p1", 2e-3, 0.01, 1, 2, "pruned", m, 0.95),
              ("c2", 4e-3, 0.02, 1, 4, "completed", m, 0.40), ("c3", 5e-4, 0.005, 1, 4, "completed", m, 0.20)]
    study_dir = fixture.make_study(tmp_path, trials=trials, baseline=False)
    info = collect_trials(study_dir)
    by_dir = {t["trial"]: t for t in info["trials"]}
    pruned, best = by_dir[fixture._trial_dir(study_dir, "p1")], by_dir[fixture._trial_dir(study_dir, "c2")]
    assert pruned["state"] == "PRUNED" and pruned["value"] > best["value"]  # the premise
    assert info["best"] is best
    # the report's rank 1 is the same trial
    write_report(study_dir)
    header, *body = fixture._table((study_dir / "report.md").read_text(), "## Trials")
    first = [r for r in body if r[0] == "1"][0]
    assert first[header.index("dir")] == best["trial"] and first[header.index("trial")] == best["label"]
    assert load_study(study_dir).scored()[0].name != best["trial"]  # scored() alone would pick the pruned one
    # the best line names it by its label first, its directory after
    line = [ln for ln in format_trials_table(info).splitlines() if ln.startswith("best val/mIoU13 =")][0]
    assert best["label"] == "#2 λ=0.004 lr=0.02 seed=1 deeplabv2_tiny"  # space order; the backbone by its value
    assert line == (f"best val/mIoU13 = {100 * best['value']:.2f} % (#2 λ=0.004 lr=0.02 seed=1 deeplabv2_tiny in "
                    f"{best['trial']}; one trial, not a configuration)")
    # equal values: the trial started first, as StudyData.scored breaks ties (whatever order the rows come in)
    tie = [{**_trial(3, 0.1, 0, 0.25), "label": "#3"}, {**_trial(1, 0.01, 0, 0.25), "label": "#1"}]
    assert _best_trial(tie, mode="max")["number"] == 1 and _best_trial(tie, mode="min")["number"] == 1

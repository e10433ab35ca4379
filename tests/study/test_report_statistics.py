"""The report's statistics on study directories written by the report tests' fixture (no Ray): pairing by
configuration and by seed, no best configuration from one seed (at the budget it is ranked at), paired tests with
Holm's correction, scipy underneath, and one source-only number (the checkpoint the trials start from).

Every expected number is recomputed here from the trial files the fixture wrote, not taken from the report."""
from __future__ import annotations

import csv
import json
import math
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).parent))
from test_report import LAMBDA, LR, MODEL, SEED, _last, _start_eval, _table, _trial_dir, make_study  # noqa: E402

from study.report import load_study, write_report  # noqa: E402
from study.report.aggregate import (TIE_RULE, choose_best, completed_and_stopped, holm, paired_vs_control,  # noqa: E402
                                    rank_configs, aggregate, seeds_text, stats, t_quantile_975)
from study.report.collect import TrialRecord  # noqa: E402
from study.report.tables import param_label  # noqa: E402
from trainables.config import TrainConfig, from_dict  # noqa: E402

M = "deeplabv2_tiny"


def _value(study_dir: Path, name: str, key: str = "val/mIoU13") -> float:
    return _last(study_dir, _trial_dir(study_dir, name))[key]


def _t_interval(diffs) -> tuple[float, float, float]:
    """Mean and the 95 % t-interval of paired differences, by the textbook formula."""
    d = np.asarray(diffs)
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def _p_paired(diffs) -> float:
    """Two-sided paired t-test p-value from the t statistic (not through ttest_rel)."""
    d = np.asarray(diffs)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return float(2 * sps.t.sf(abs(t), len(d) - 1))


# ---------------------------------------------------------------------------------------------------------
# pairing by configuration: λ ∈ {0, 4e-3} × lr ∈ {0.01, 0.02} × seeds 1-3 (issue 18)

SEED_EFFECT = {1: 0.00, 2: 0.06, 3: 0.12}
LR_EFFECT = {0.01: 0.0, 0.02: 0.15}  # lr matters more than λ: pooling over lr would mix two very different arms
LAMBDA_EFFECT = {(0.0, 0.01): 0.0, (0.004, 0.01): 0.015, (0.0, 0.02): 0.0, (0.004, 0.02): 0.03}
GRID = [(f"l{lam}r{lr}s{s}", lam, lr, s, 4, "completed", M,
         0.30 + SEED_EFFECT[s] + LR_EFFECT[lr] + LAMBDA_EFFECT[(lam, lr)])
        for lam in (0.0, 0.004) for lr in (0.01, 0.02) for s in (1, 2, 3)]


def _as_search_seeds(study_dir):
    """The same trials declared as ``search.seeds`` replicates: the seed is in each trial's params.json but no
    dimension of space.json (a real study with search.seeds writes it so)."""
    space = json.loads((study_dir / "space.json").read_text())
    del space["dimensions"][SEED]
    (study_dir / "space.json").write_text(json.dumps(space))
    toml = study_dir / "study.toml"
    toml.write_text(toml.read_text().replace('[search]\n', '[search]\nseeds = [1, 2, 3]\n'))


@pytest.mark.parametrize("declared", [False, True], ids=["seed_searched", "search_seeds"])
def test_lambda_table_pairs_by_configuration_and_seed_never_pools(tmp_path, declared):
    study_dir = make_study(tmp_path, trials=GRID, baseline=True)
    if declared:  # before the fix every replicate read as seed None and no arm was paired
        _as_search_seeds(study_dir)
    write_report(study_dir)
    text = (study_dir / "report.md").read_text()
    header, *rows = _table(text, "## λ_adv × backbone")
    lr_col = header.index(param_label(LR))  # the other searched parameter is a column of the table
    assert [(r[header.index("λ_adv")], r[lr_col], r[header.index("seeds")]) for r in rows] == [
        ("0", "0.01", "1, 2, 3"), ("0.004", "0.01", "1, 2, 3"), ("0", "0.02", "1, 2, 3"), ("0.004", "0.02", "1, 2, 3")]
    expected_p = {}
    for row in rows:
        lam, lr = float(row[header.index("λ_adv")]), float(row[lr_col])
        if lam == 0:
            assert row[header.index("ΔmIoU13 vs λ=0, paired (95 % CI)")] == "control"
            continue
        diffs = [_value(study_dir, f"l{lam}r{lr}s{s}") - _value(study_dir, f"l0.0r{lr}s{s}") for s in (1, 2, 3)]
        mean, low, high = _t_interval(diffs)
        cell = row[header.index("ΔmIoU13 vs λ=0, paired (95 % CI)")]
        assert cell == (f"{100 * mean:+.2f} ± {100 * np.std(diffs, ddof=1):.2f} (3) "
                        f"[{100 * low:.2f}, {100 * high:.2f}]")
        expected_p[lr] = _p_paired(diffs)
    # Holm over the two arms, by hand: the smaller p times 2, the larger times 1, kept monotone
    small, large = sorted(expected_p.values())
    adjusted = {p: min(1.0, 2 * small) if p == small else max(min(1.0, 2 * small), large) for p in expected_p.values()}
    table = list(csv.DictReader((study_dir / "tables" / "lambda_backbone.csv").read_text().splitlines()))
    arms = [r for r in table if r["lambda_adv"] == "0.004"]
    assert len(table) == 4 and len(arms) == 2 and all(r["d_mIoU13_vs_lambda0_n"] == "3" for r in arms)
    for r in arms:
        p = expected_p[float(r[LR])]
        assert float(r["d_mIoU13_vs_lambda0_p"]) == pytest.approx(p, rel=1e-5)
        assert float(r["d_mIoU13_vs_lambda0_p_holm"]) == pytest.approx(adjusted[p], rel=1e-5)
    assert "Holm-adjusted over the 2 arm(s) of this table with a test" in text and "scipy.stats.ttest_rel" in text
    assert "no row pools over them" in text


# the control lists its seeds 3, 1, 2; the λ = 4e-3 arm lost seed 2 (failed): its seeds are 1 and 3
ORDER = ([("c3", 0.0, 0.01, 3, 4, "completed", M, 0.60), ("c1", 0.0, 0.01, 1, 4, "completed", M, 0.30),
          ("c2", 0.0, 0.01, 2, 4, "completed", M, 0.45)]
         + [("a1", 0.004, 0.01, 1, 4, "completed", M, 0.34), ("a2", 0.004, 0.01, 2, 2, "failed", M, 0.50),
            ("a3", 0.004, 0.01, 3, 4, "completed", M, 0.65)])


def test_control_is_paired_by_seed_not_by_position_and_the_sign_is_arm_minus_control(tmp_path):
    study_dir = make_study(tmp_path, trials=ORDER, baseline=False)
    write_report(study_dir)
    text = (study_dir / "report.md").read_text()
    diffs = [_value(study_dir, f"a{s}") - _value(study_dir, f"c{s}") for s in (1, 3)]
    by_position = [_value(study_dir, "a1") - _value(study_dir, "c1"), _value(study_dir, "a3") - _value(study_dir, "c2")]
    assert all(d > 0 for d in diffs) and abs(np.mean(by_position) - np.mean(diffs)) > 0.01  # the premise
    mean, low, high = _t_interval(diffs)
    # the study-metric section (completed configurations, the study metric at their final evaluation)
    header, *rows = _table(text, "### Against the λ_adv = 0 control")
    assert text.split("### Against the λ_adv = 0 control (paired by seed)\n\n", 1)[1].startswith(
        "Each adversarial configuration minus the λ_adv = 0 configuration with the same other parameters, seed by "
        "seed (same seed = same initialisation and data order), then mean ± sd (n) and the 95 % t-interval of the "
        "differences, in points of `val/mIoU13`.\n\n")
    assert len(rows) == 1 and rows[0][header.index("paired seeds")] == "1, 3"
    assert rows[0][header.index("Δ mean ± sd (n)")] == f"{100 * mean:+.2f} ± {100 * np.std(diffs, ddof=1):.2f} (2)"
    assert rows[0][header.index("95 % CI")] == f"[{100 * low:.2f}, {100 * high:.2f}]"
    assert float(rows[0][header.index("p")]) == pytest.approx(_p_paired(diffs), rel=0.05)  # 2 significant digits
    # the paper's table pairs the final val metrics the same way
    header, *rows = _table(text, "## λ_adv × backbone")
    arm = [r for r in rows if r[header.index("λ_adv")] == "0.004"][0]
    for key in ("mIoU16", "mIoU13"):
        d = [_value(study_dir, f"a{s}", f"val/{key}") - _value(study_dir, f"c{s}", f"val/{key}") for s in (1, 3)]
        mean, low, high = _t_interval(d)
        assert arm[header.index(f"Δ{key} vs λ=0, paired (95 % CI)")] == (
            f"{100 * mean:+.2f} ± {100 * np.std(d, ddof=1):.2f} (2) [{100 * low:.2f}, {100 * high:.2f}]")


# ---------------------------------------------------------------------------------------------------------
# no headline from one seed

# ASHA: λ = 4e-3's seeds 1 and 2 were stopped at round 2; its seed 3 survived and is the highest single run
ASHA = ([(f"z{s}", 0.0, 0.01, s, 4, "completed", M, 0.40 + 0.01 * s) for s in (1, 2, 3)]
        + [("h1", 0.004, 0.01, 1, 2, "pruned", M, 0.10), ("h2", 0.004, 0.01, 2, 2, "pruned", M, 0.12),
           ("h3", 0.004, 0.01, 3, 4, "completed", M, 0.90)])


def test_a_surviving_seed_is_never_the_best_configuration(tmp_path):
    from study.commands.study import collect_trials, format_trials_table

    study_dir = make_study(tmp_path, trials=ASHA, baseline=False)
    summary = write_report(study_dir)
    h3 = _value(study_dir, "h3")
    assert h3 > max(_value(study_dir, f"z{s}") for s in (1, 2, 3))  # the premise: the survivor is the top run
    assert summary.best_params[LAMBDA] == 0.0 and summary.best_seeds == (1, 2, 3) and summary.best_score.n == 3
    with open(study_dir / "best_config.toml", "rb") as fh:
        assert from_dict(TrainConfig, tomllib.load(fh), source="best_config.toml").adapt.lambda_adv_main == 0.0
    assert "over seeds [3]" not in str(summary) and "(1)" not in str(summary).splitlines()[-2]
    text = (study_dir / "report.md").read_text()
    header, *rows = _table(text, "### Completed: ranked at their final evaluation")
    survivor = [r for r in rows if r[header.index("lambda_adv")] == "0.004"][0]
    assert survivor[0] == "–" and survivor[header.index("val/mIoU13 mean ± sd (n)")] == f"{100 * h3:.2f} (1)†"
    assert survivor[header.index("replicates stopped early")] == "2"
    assert ("*Replicates stopped early*: seeds of the configuration the scheduler stopped; the mean is over the "
            "survivors only (a selected sample: compare at equal budget below).") in text
    # at equal budget (round 2) the configuration has its three replicates, early-stopped ones included
    header, *rows = _table(text, "### At equal budget")
    at2 = [[json.loads(ln) for ln in (study_dir / _trial_dir(study_dir, f"h{s}") / "result.json").read_text()
            .splitlines()][1]["val/mIoU13"] for s in (1, 2, 3)]
    row = [r for r in rows if r[header.index("lambda_adv")] == "0.004"][0]
    assert row[header.index("val/mIoU13 mean ± sd (n)")] == (
        f"{100 * np.mean(at2):.2f} ± {100 * np.std(at2, ddof=1):.2f} (3)")
    # `study status` picks by the same rule, from the Optuna journal
    info = collect_trials(study_dir)
    assert info["best_config"]["params"][LAMBDA] == 0.0 and info["best_config"]["n"] == 3
    assert "± 0.00" not in format_trials_table(info)


@pytest.mark.slow  # > 2 s: outside make test-quick
def test_without_two_completed_replicates_the_best_is_ranked_at_equal_budget(tmp_path):
    # no configuration completed twice; at round 2 (all reached it) λ = 1e-3 has 3 replicates and the best mean
    trials = ([("k1", 0.001, 0.01, 1, 4, "completed", M, 0.50), ("k2", 0.001, 0.01, 2, 2, "pruned", M, 0.52),
               ("k3", 0.001, 0.01, 3, 2, "pruned", M, 0.54)]
              + [("j1", 0.004, 0.01, 1, 4, "completed", M, 0.95), ("j2", 0.004, 0.01, 2, 2, "pruned", M, 0.05)])
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    summary = write_report(study_dir)
    assert summary.best_params[LAMBDA] == 0.001 and summary.best_seeds == (1, 2, 3)
    assert "ranked at round 2" in summary.best_note
    assert "at the round 2" in (study_dir / "best_config.toml").read_text()
    at2 = {s: [json.loads(ln) for ln in (study_dir / _trial_dir(study_dir, f"k{s}") / "result.json").read_text()
               .splitlines()][1]["val/mIoU13"] for s in (1, 2, 3)}
    assert summary.best_score.mean == pytest.approx(np.mean(list(at2.values())))
    median = sorted(at2, key=at2.get)[1]  # the median replicate at that budget
    assert summary.best_trial == _trial_dir(study_dir, f"k{median}")


def test_an_even_number_of_replicates_never_picks_the_luckier_seed(tmp_path):
    trials = [("e1", 0.001, 0.01, 1, 4, "completed", M, 0.50), ("e2", 0.001, 0.01, 2, 4, "completed", M, 0.70),
              ("f1", 0.002, 0.01, 1, 4, "completed", M, 0.40), ("f2", 0.002, 0.01, 2, 4, "completed", M, 0.45)]
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    summary = write_report(study_dir)
    lower = min(("e1", "e2"), key=lambda n: _value(study_dir, n))
    assert summary.best_params[LAMBDA] == 0.001 and summary.best_trial == _trial_dir(study_dir, lower)
    with open(study_dir / "best_config.toml", "rb") as fh:
        assert tomllib.load(fh)["runtime"]["seed"] == int(lower[1])


def _record(name, lam, seed, value, *, status="completed", order=0, curve=None):
    return TrialRecord(name=name, trial_id=name, params={LAMBDA: lam, "runtime.seed": seed}, status=status,
                       rounds=4, iteration=40, metric=value, final={}, curve=curve or ((4, value),), time_s=None,
                       run_dir=None, order=order)


def test_equal_means_rank_the_configuration_with_more_replicates_first():
    # B started first and has the same mean as A: only the replicate count tells them apart
    a = [_record(f"a{s}", 0.002, s, v, order=10 + s) for s, v in ((1, 0.25), (2, 0.5), (3, 0.75))]
    b = [_record(f"b{s}", 0.001, s, v, order=s) for s, v in ((1, 0.25), (2, 0.75))]
    ranked = rank_configs(aggregate(a + b, group="completed"), "max")
    assert ranked[0].score.mean == ranked[1].score.mean  # the premise: a tie on the mean
    assert [c.params[LAMBDA] for c in ranked] == [0.002, 0.001]
    assert choose_best(a + b, "max").config.params[LAMBDA] == 0.002
    assert choose_best(a + b, "min").config.params[LAMBDA] == 0.002  # the count rule does not depend on the mode
    # with equal counts the configuration started first wins
    ranked = rank_configs(aggregate(a[:2] + [_record("b3", 0.001, 3, 0.5, order=0), *b[:1]], group="c"), "max")
    assert ranked[0].params[LAMBDA] == 0.001 and "more replicates" in TIE_RULE


def test_running_trials_never_enter_the_equal_budget_ranking(tmp_path):
    trials = [("c1", 0.001, 0.01, 1, 4, "completed", M, 0.40), ("c2", 0.001, 0.01, 2, 4, "completed", M, 0.42),
              ("p1", 0.004, 0.01, 1, 2, "pruned", M, 0.30), ("p2", 0.004, 0.01, 2, 2, "pruned", M, 0.32),
              ("r1", 0.008, 0.01, 1, 1, "pruned", M, 0.99)]
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    state = study_dir / "experiment_state-2026-01-01_00-00-00.json"
    states = json.loads(state.read_text())
    last = json.loads(states["trial_data"][-1][0])
    states["trial_data"][-1][0] = json.dumps({**last, "status": "RUNNING"})  # r1 is still training
    state.write_text(json.dumps(states))
    write_report(study_dir)
    text = (study_dir / "report.md").read_text()
    # r1 reached round 1 only: counted, it would pull the shared budget down to round 1 and top that ranking
    assert "at round 2, the last evaluation all 4 scored trials reached" in text
    header, *rows = _table(text, "### At equal budget")
    assert sorted(r[header.index("lambda_adv")] for r in rows) == ["0.001", "0.004"]


def test_no_seed_is_never_printed_as_seeds_none():
    from study.report.tables import ReportSummary

    summary = ReportSummary(study="s", metric="val/mIoU13", mode="max", selection="val", counts={"completed": 2},
                            best_trial="trial_0", best_params={LAMBDA: 0.001}, best_metric=0.5, best_final={},
                            importances={}, report=Path("report.md"), figures=(), best_config=None,
                            best_seeds=(None, None), best_score=stats([0.4, 0.6]))
    assert "[None]" not in str(summary) and "None" not in str(summary).splitlines()[-2]
    assert "over 2 runs (no seed searched)" in str(summary)
    assert seeds_text((1, 2)) == "seeds 1, 2"


# ---------------------------------------------------------------------------------------------------------
# statistics from scipy; Holm

def test_holm_step_down_by_hand():
    # sorted: 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → kept monotone: 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, math.nan, 0.04])  # no test: out of the family (m = 2), stays NaN
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)


def test_t_quantiles_are_scipy_and_paired_tests_need_two_pairs():
    assert [round(t_quantile_975(df), 3) for df in (1, 2, 4, 30)] == [12.706, 4.303, 2.776, 2.042]
    assert math.isnan(t_quantile_975(0))
    a = [_record(f"a{s}", 0.002, s, v) for s, v in ((1, 0.5), (2, 0.6))]
    c = [_record(f"c{s}", 0.0, s, v) for s, v in ((1, 0.4), (3, 0.3))]
    (diff,) = paired_vs_control(aggregate(a + c, group="completed"))
    assert diff.seeds == (1,) and diff.difference.n == 1 and math.isnan(diff.p_value)
    assert diff.difference.mean == pytest.approx(0.1) and math.isnan(diff.p_holm)


# ---------------------------------------------------------------------------------------------------------
# one source-only number: the checkpoint the trials start from

def test_source_only_is_the_start_checkpoint_in_every_table_and_figure_input(tmp_path):
    study_dir = make_study(tmp_path, trials=GRID[:6], baseline=True, baseline_model=M)
    start = _start_eval(study_dir)
    last = json.loads((study_dir / "baseline" / "metrics.jsonl").read_text().splitlines()[-1])
    assert start["iteration"] == 20 and abs(start["val/mIoU13"] - last["val/mIoU13"]) > 0.01  # the premise
    data = load_study(study_dir)
    assert data.baseline["val/mIoU13"] == start["val/mIoU13"] and data.baseline_iteration == 20  # figures read it
    summary = write_report(study_dir)
    text = (study_dir / "report.md").read_text()
    rows = _table(text, "## Per-class IoU on target val (%)")
    assert rows[1][0] == "source only (baseline)" and rows[1][-1] == f"{100 * start['val/mIoU13']:.1f}"
    table = list(csv.DictReader((study_dir / "tables" / "lambda_backbone.csv").read_text().splitlines()))
    for r in table:
        values = [_value(study_dir, f"l{float(r['lambda_adv'])}r{float(r[LR])}s{s}") for s in (1, 2, 3)]
        assert float(r["d_mIoU13_vs_source_only"]) == pytest.approx(
            100 * (np.mean(values) - start["val/mIoU13"]), abs=1e-4)
    assert "selected at iteration 20" in text
    assert not any("older version" in n for n in summary.notes)


def test_an_old_baseline_without_its_best_iteration_falls_back_and_says_so(tmp_path):
    study_dir = make_study(tmp_path, trials=GRID[:6], baseline=True, baseline_result=False)
    summary = write_report(study_dir)
    last = json.loads((study_dir / "baseline" / "metrics.jsonl").read_text().splitlines()[-1])
    assert load_study(study_dir).baseline["val/mIoU13"] == last["val/mIoU13"]
    assert any("names no best_iteration" in n and "may not be the checkpoint" in n for n in summary.notes)


def test_a_baseline_scored_differently_from_the_trials_is_noted(tmp_path):
    study_dir = make_study(tmp_path, trials=GRID[:6], baseline=True)
    from study.config.files import dump_toml

    config = study_dir / "baseline" / "config.toml"
    data = tomllib.loads(config.read_text())
    data.setdefault("eval", {})["max_images"] = 7  # the baseline scored on 7 val images, the trials on all
    config.write_text(dump_toml(data))
    summary = write_report(study_dir)
    assert any("eval.max_images" in n and "not scored the way the trials are" in n for n in summary.notes)


def test_a_missing_final_value_never_enters_a_pair_and_untestable_arms_say_so(tmp_path):
    from study.report.paper import fmt_p

    trials = ([(f"c{s}", 0.0, 0.01, s, 4, "completed", M, 0.30 + 0.1 * s) for s in (1, 2, 3)]
              + [(f"a{s}", 0.004, 0.01, s, 4, "completed", M, 0.35 + 0.1 * s + 0.01 * s * s) for s in (1, 2, 3)]
              + [("b1", 0.008, 0.01, 1, 4, "completed", M, 0.50)])  # one seed: a difference, no test
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    result = study_dir / _trial_dir(study_dir, "a2") / "result.json"
    rows = [json.loads(ln) for ln in result.read_text().splitlines()]
    rows[-1]["val/mIoU16"] = None  # a2's final mIoU16 is missing (NaN): seeds 1 and 3 pair, seed 2 does not
    result.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(study_dir)
    table = {r["lambda_adv"]: r for r in csv.DictReader(
        (study_dir / "tables" / "lambda_backbone.csv").read_text().splitlines())}
    d = [_value(study_dir, f"a{s}", "val/mIoU16") - _value(study_dir, f"c{s}", "val/mIoU16") for s in (1, 3)]
    assert table["0.004"]["d_mIoU16_vs_lambda0_n"] == "2"
    assert float(table["0.004"]["d_mIoU16_vs_lambda0_p"]) == pytest.approx(_p_paired(d), rel=1e-5)
    assert table["0.008"]["d_mIoU16_vs_lambda0_n"] == "1" and table["0.008"]["d_mIoU16_vs_lambda0_p"] == ""
    # Holm's family holds the one arm that has a test: its adjusted p is its raw p
    assert table["0.004"]["d_mIoU16_vs_lambda0_p_holm"] == table["0.004"]["d_mIoU16_vs_lambda0_p"]
    header, *md = _table((study_dir / "report.md").read_text(), "## λ_adv × backbone")
    b1 = [r for r in md if r[header.index("λ_adv")] == "0.008"][0]
    assert b1[header.index("p mIoU16 (Holm)")] == "n/a (n/a)"
    assert [fmt_p(p) for p in (None, math.nan, 0.01234, 3e-5)] == ["n/a", "n/a", "0.012", "<1e-4"]


def test_identical_paired_differences_give_no_p_value_and_p_values_print_down_to_1e_4():
    from study.report.aggregate import paired_test
    from study.report.paper import fmt_p

    summary, p = paired_test([0.5, 0.75, 1.0], [0.25, 0.5, 0.75])  # every difference exactly 0.25: sd 0, no t-test
    assert (summary.mean, summary.sd, summary.n) == (0.25, 0.0, 3) and math.isnan(p)
    assert (fmt_p(1e-4), fmt_p(9.9e-5), fmt_p(0.0312), fmt_p(math.nan)) == ("0.0001", "<1e-4", "0.031", "n/a")


def test_per_class_deltas_mark_the_three_classes_outside_mIoU13_and_show_the_other_searched_parameters():
    from types import SimpleNamespace

    from study.report.paper import per_class_delta_rows

    row = SimpleNamespace(others={"lr": 0.01}, backbone="deeplabv2", lam=0.001, trials=["t1", "t2"],
                          per_class_vs_baseline={"val/IoU/road": 0.0125})
    header, body = per_class_delta_rows(SimpleNamespace(num_classes=16), [row])
    synthia16 = ["road", "sidewalk", "building", "wall*", "fence*", "pole*", "traffic_light", "traffic_sign",
                 "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle"]
    assert header == ["backbone", "λ_adv", "lr", "n", *synthia16]
    assert body == [["deeplabv2", "0.001", "0.01", "2", "+1.25", *["n/a"] * 15]]
    header, body = per_class_delta_rows(SimpleNamespace(num_classes=19), [])  # Cityscapes' 19: no mark, no rows
    assert header[:3] == ["backbone", "λ_adv", "n"] and len(header) == 22 and body == []
    assert [h for h in header if "*" in h] == [] and {"terrain", "truck", "train"} <= set(header)


def test_the_best_choice_says_the_budget_it_was_ranked_at():
    """choose_best's budget: "completed" for the full budget, "round N" for the shared budget, None without a best."""
    from study.report.aggregate import choose_best

    done = [_record(f"a{s}", 0.001, s, 0.3 + 0.01 * s) for s in (1, 2)]
    assert choose_best(done, "max").budget == "completed"
    curve = ((1, 0.1), (2, 0.2))
    stopped = [_record(f"b{s}", 0.002, s, 0.2, status="pruned", curve=curve) for s in (1, 2)]
    single = [_record("c1", 0.003, 1, 0.5, curve=((1, 0.1), (2, 0.2), (4, 0.5)))]
    choice = choose_best(stopped + single, "max")
    assert (choice.budget, choice.config.params[LAMBDA]) == ("round 2", 0.002)
    assert choose_best(single, "max").budget is None and choose_best([], "max").budget is None


def test_configurations_are_grouped_as_completed_or_stopped_early():
    from types import SimpleNamespace

    done = [_record(f"a{s}", 0.001, s, 0.3) for s in (1, 2)]
    stopped = [_record(f"b{s}", 0.002, s, 0.2, status="pruned") for s in (1, 2)]
    data = SimpleNamespace(trials=tuple(done + stopped), mode="max")
    completed, early = completed_and_stopped(data)
    assert [c.group for c in completed] == ["completed"] and [c.group for c in early] == ["stopped early"]

"""The λ_adv × backbone table (study/report/paper.py) cell by cell: what a row without a control says, what a
baseline that lacks a value gives, and the order of replicates inside a configuration. Studies written by the report
tests' fixture (no Ray); expected cells written by hand from the fixture's inputs."""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import LAMBDA, make_study  # noqa: E402

from study.report import load_study  # noqa: E402
from study.report.aggregate import aggregate  # noqa: E402
from study.report.collect import TrialRecord  # noqa: E402
from study.report.paper import paper_csv, paper_markdown, paper_rows, per_class_delta_rows  # noqa: E402

V2, V3 = "deeplabv2_tiny", "deeplabv3plus_tiny"


def _trials(model, lambdas, seeds=(1, 2, 3), base=0.40):
    return [(f"{model[8:11]}{lam}s{s}", lam, 0.01, s, 4, "completed", model, base + 0.05 * (lam > 0) + 0.02 * s)
            for lam in lambdas for s in seeds]


def test_a_row_without_a_control_says_so_and_the_control_row_says_what_it_is(tmp_path):
    """deeplabv2 has its λ = 0 arm, deeplabv3+ has none: its arm must read "no control", not an empty or a
    borrowed difference (the control is matched on the backbone too)."""
    study_dir = make_study(tmp_path, trials=_trials(V2, (0.0, 0.004)) + _trials(V3, (0.004,)), baseline=False)
    data = load_study(study_dir)
    rows = paper_rows(data)
    header, body = paper_markdown(data, rows)
    cells = {(line[0], line[1]): dict(zip(header, line)) for line in body}
    assert list(cells) == [(V2, "0"), (V2, "0.004"), (V3, "0.004")]
    for short in ("mIoU16", "mIoU13"):
        delta, p = f"Δ{short} vs λ=0, paired (95 % CI)", f"p {short} (Holm)"
        assert cells[(V2, "0")][delta] == "control" and cells[(V2, "0")][p] == ""
        assert cells[(V3, "0.004")][delta] == "no control" and cells[(V3, "0.004")][p] == ""
        assert cells[(V2, "0.004")][delta].startswith("+")
    assert [r.vs_control for r in rows][2] == {} and rows[1].vs_control["val/mIoU13"].n == 3
    csv_rows = paper_csv(data, rows).splitlines()
    assert csv_rows[3].split(",")[:4] == [V3, "0.004", "3", "1 2 3"]
    header_csv = csv_rows[0].split(",")
    start = header_csv.index("d_mIoU16_vs_lambda0_mean")
    assert csv_rows[3].split(",")[start:start + 7] == [""] * 7  # no control: seven empty cells, no zeros
    assert csv_rows[1].split(",")[start:start + 7] == [""] * 7  # the control itself


def test_a_study_without_any_control_has_no_control_columns(tmp_path):
    study_dir = make_study(tmp_path, trials=_trials(V2, (0.001, 0.004)), baseline=False)
    data = load_study(study_dir)
    header, body = paper_markdown(data, paper_rows(data))
    assert not [h for h in header if "vs λ=0" in h or h.startswith("p ")]
    assert [line[:3] for line in body] == [[V2, "0.001", "1, 2, 3"], [V2, "0.004", "1, 2, 3"]]


def test_a_baseline_value_that_is_missing_gives_no_difference_rather_than_a_crash(tmp_path):
    """An older baseline evaluation without per-class IoUs (or without mIoU16): those differences are n/a, the
    others are the mean minus the baseline's value."""
    study_dir = make_study(tmp_path, trials=_trials(V2, (0.004,)))
    data = load_study(study_dir)
    kept = {"val/mIoU13": 0.30, "val/IoU/road": 0.50}
    data = dataclasses.replace(data, baseline=kept, baseline_model=None)
    (row,) = paper_rows(data)
    assert math.isnan(row.vs_baseline["val/mIoU16"])
    assert row.vs_baseline["val/mIoU13"] == pytest.approx(row.means["val/mIoU13"].mean - 0.30)
    road = sum(t.final["val/IoU/road"] for t in row.trials) / 3 - 0.50
    assert row.per_class_vs_baseline["val/IoU/road"] == pytest.approx(road)
    assert math.isnan(row.per_class_vs_baseline["val/IoU/sky"])
    _, body = per_class_delta_rows(data, [row])
    assert body[0][:5] == [V2, "0.004", "3", f"{100 * road:+.2f}", "n/a"]
    header, body = paper_markdown(data, [row])
    assert body[0][header.index("ΔmIoU16 vs source only")] == "n/a"
    # a baseline of another backbone: no difference at all
    other = dataclasses.replace(data, baseline_model=V3)
    (row,) = paper_rows(other)
    assert all(math.isnan(v) for v in (*row.vs_baseline.values(), *row.per_class_vs_baseline.values()))


def _record(name, seed, value):
    return TrialRecord(name=name, trial_id=name, params={LAMBDA: 0.001, "runtime.seed": seed}, status="completed",
                       rounds=4, iteration=40, metric=value, final={}, curve=((4, value),), time_s=None,
                       run_dir=None, order=0)


def test_replicates_of_a_configuration_are_listed_by_seed_then_by_name():
    """Names that sort against the seeds: the members (and their values) still follow the seeds."""
    trials = [_record("a_seed3", 3, 0.3), _record("z_seed1", 1, 0.1), _record("m_seed2", 2, 0.2),
              _record("b_seed2", 2, 0.25)]
    (config,) = aggregate(trials, group="completed")
    assert [t.name for t in config.trials] == ["z_seed1", "b_seed2", "m_seed2", "a_seed3"]
    assert config.values == (0.1, 0.25, 0.2, 0.3)
    assert config.params == {LAMBDA: 0.001}  # the seed is no parameter of the configuration


def test_holms_family_is_the_arms_with_a_test_counted_per_metric():
    """An arm of one paired seed has a difference but no p-value: it is not one of Holm's m tests, and the note
    under the table must not say it is (with a metric missing in one run the families differ per metric)."""
    from types import SimpleNamespace

    from study.report.paper import control_note, holm_family

    def row(p16, p13):
        return SimpleNamespace(p_value={"val/mIoU16": p16, "val/mIoU13": p13})

    nan = math.nan
    note = control_note([row(0.01, 0.02), row(0.03, 0.04), row(nan, nan), SimpleNamespace(p_value={})])
    assert "Holm-adjusted over the 2 arm(s) of this table with a test (per metric); n/a = fewer than 2 pairs, " \
           "no test." in note
    note = control_note([row(0.01, 0.02), row(nan, 0.04), row(nan, nan)])
    assert "Holm-adjusted over the arms of this table with a test, per metric (mIoU16: 1, mIoU13: 2); n/a" in note
    note = control_note([row(nan, nan)])  # every arm has one paired seed: there is no family, not "0 arm(s)"
    assert "Holm-adjusted over no arm of this table (none has 2 paired seeds); n/a" in note
    assert holm_family({"val/mIoU13": 3}) == "the 3 arm(s) of this table with a test"  # one metric: no "per metric"
    assert holm_family({}) == "no arm of this table (none has 2 paired seeds)"


def _drop(study_dir: Path, key: str, *, trials: str = "") -> None:
    """Remove ``key`` from the params.json of the trials whose directory name contains ``trials`` (and from
    space.json when it goes from every trial)."""
    import json

    for params_file in study_dir.glob(f"trial_*{trials}*/params.json" if trials else "trial_*/params.json"):
        params = json.loads(params_file.read_text())
        params.pop(key, None)
        params_file.write_text(json.dumps(params))
    if not trials:
        space = json.loads((study_dir / "space.json").read_text())
        del space["dimensions"][key]
        (study_dir / "space.json").write_text(json.dumps(space))


def test_a_study_that_searches_neither_lambda_nor_the_backbone_has_no_lambda_table(tmp_path):
    """An lr-only search: a λ × backbone table would pool every trial into one row; the report says why there is
    none and writes no CSV."""
    from test_report import TRIALS

    from study.report import write_report

    study_dir = make_study(tmp_path, trials=TRIALS[:3], baseline=False)
    _drop(study_dir, LAMBDA)
    write_report(study_dir)
    text = (study_dir / "report.md").read_text()
    section = text.split("## λ_adv × backbone (the seed's Table 3 layout)\n\n", 1)[1].split("\n", 1)[0]
    assert section == "The study searches neither `adapt.lambda_adv_main` nor `model.name`: no table."
    assert not (study_dir / "tables" / "lambda_backbone.csv").exists()


def test_a_parameter_one_backbone_does_not_have_is_an_empty_cell(tmp_path):
    """A conditional learning rate (``optim.lr@deeplabv2_tiny`` exists for one backbone only): the other backbone's
    rows leave that cell empty in the configuration and control tables, never a placeholder."""
    from test_report import LR, _table

    from study.report import write_report

    study_dir = make_study(tmp_path, trials=_trials(V2, (0.0, 0.004), seeds=(1, 2))
                           + _trials(V3, (0.0, 0.004), seeds=(1, 2)), baseline=False)
    _drop(study_dir, LR, trials="_3pl")  # the deeplabv3plus trials' directories: trial_abc_000NN_3pl…
    write_report(study_dir)
    text = (study_dir / "report.md").read_text()
    header, *rows = _table(text, "### Against the λ_adv = 0 control (paired by seed)")
    cells = {r[header.index("backbone")]: r[header.index("lr")] for r in rows}
    assert cells == {V2: "0.01", V3: ""}
    header, *rows = _table(text, "### Completed: ranked at their final evaluation")
    assert sorted(r[header.index("lr")] for r in rows) == ["", "", "0.01", "0.01"]


def test_a_19_class_study_reports_mIoU19_first_and_an_empty_table_has_no_other_columns(tmp_path):
    from types import SimpleNamespace

    from study.report.paper import mean_keys

    assert mean_keys(SimpleNamespace(num_classes=19)) == ["val/mIoU19", "val/mIoU16", "val/mIoU13"]
    assert mean_keys(SimpleNamespace(num_classes=16)) == ["val/mIoU16", "val/mIoU13"]
    assert mean_keys(SimpleNamespace(num_classes=20)) == ["val/mIoU16", "val/mIoU13"]
    study_dir = make_study(tmp_path, trials=_trials(V2, (0.004,), seeds=(1, 2)), baseline=False)
    data = dataclasses.replace(load_study(study_dir), num_classes=19)
    header, body = paper_markdown(data, [])
    assert header == ["backbone", "λ_adv", "seeds", "mIoU19 mean ± sd (n)", "mIoU16 mean ± sd (n)",
                      "mIoU13 mean ± sd (n)"] and body == []


def test_a_trial_without_lambda_is_a_row_of_its_own(tmp_path):
    """Trials of an earlier layout that name no λ_adv (and no base λ in study.toml): their configuration's λ is
    unknown ("n/a"), a row of its own, never mixed into a λ = 0 control."""
    study_dir = make_study(tmp_path, trials=_trials(V2, (0.0, 0.004), seeds=(1, 2)), baseline=False)
    _drop(study_dir, LAMBDA, trials="0.004s2")  # trial_abc_00003_2_t0.004s2: no λ any more
    data = load_study(study_dir)
    rows = paper_rows(data)
    assert [(r.lam, r.seeds) for r in rows] == [(0.0, (1, 2)), (None, (2,)), (0.004, (1,))]  # unknown sorts as 0
    header, body = paper_markdown(data, rows)
    assert [line[1] for line in body] == ["0", "n/a", "0.004"]
    assert body[1][header.index("ΔmIoU13 vs λ=0, paired (95 % CI)")] == "no control"

"""PBT studies in the report: each member's learned schedule (donors' segments included) as a figure and a CSV,
read from the members' lineage files (trainables/lineage.py), checked against hand-built lineages."""
from __future__ import annotations

import csv
import json
import math
import warnings

import pytest

from study.report import load_study, write_report
from study.report.schedules import member_schedules, schedule_rows
from test_report import TRIALS, make_study

LAM = "adapt.lambda_adv_main"
LR = "optim.lr"


def _lineage(run_dir, records):
    with open(run_dir / "lineage.jsonl", "w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")


def _eval(iteration, time, lam, lr, value):
    return {"event": "eval", "iteration": iteration, "time": time, "hparams": {LAM: lam, LR: lr},
            "metric": "val/mIoU13", "value": value}


@pytest.fixture
def pbt_study(tmp_path):
    """Three members over 40 iterations (evaluations every 10): B clones A at 20 with λ doubled; C clones B at 30
    with lr halved (so C's schedule runs through A, then B, then itself)."""
    study_dir = make_study(tmp_path, trials=TRIALS[:3], baseline=False)
    toml = study_dir / "study.toml"
    toml.write_text(toml.read_text().replace('kind = "asha"', 'kind = "pbt"'))
    a, b, c = sorted(p.name for p in study_dir.iterdir() if p.name.startswith("trial_"))
    _lineage(study_dir / a / "run", [
        {"event": "start", "iteration": 0, "time": 1.0, "hparams": {LAM: 1e-3, LR: 0.01}},
        _eval(10, 2.0, 1e-3, 0.01, 0.30), _eval(20, 3.0, 1e-3, 0.01, 0.35), _eval(30, 5.0, 1e-3, 0.01, 0.37),
        _eval(40, 7.0, 1e-3, 0.01, 0.38)])
    _lineage(study_dir / b / "run", [
        {"event": "start", "iteration": 0, "time": 1.0, "hparams": {LAM: 5e-3, LR: 0.02}},
        _eval(10, 2.0, 5e-3, 0.02, 0.20), _eval(20, 3.0, 5e-3, 0.02, 0.22),  # this segment is lost at the clone
        {"event": "clone", "iteration": 20, "time": 3.5, "hparams": {LAM: 2e-3, LR: 0.01}, "donor": a,
         "donor_iteration": 20},
        _eval(30, 5.0, 2e-3, 0.01, 0.40), _eval(40, 7.0, 2e-3, 0.01, 0.41)])
    _lineage(study_dir / c / "run", [
        {"event": "start", "iteration": 0, "time": 1.0, "hparams": {LAM: 1e-4, LR: 0.03}},
        _eval(10, 2.0, 1e-4, 0.03, 0.10), _eval(20, 3.0, 1e-4, 0.03, 0.12), _eval(30, 5.0, 1e-4, 0.03, 0.13),
        {"event": "clone", "iteration": 30, "time": 5.5, "hparams": {LAM: 2e-3, LR: 0.005}, "donor": b,
         "donor_iteration": 30},
        _eval(40, 7.0, 2e-3, 0.005, 0.42)])
    return study_dir, (a, b, c)


def test_each_member_schedule_runs_through_its_donors(pbt_study):
    study_dir, (a, b, c) = pbt_study
    members = {m.name: m for m in member_schedules(study_dir, load_study(study_dir))}
    assert members[a].segments == ((0, {LAM: 1e-3, LR: 0.01}),) and members[a].clones == ()
    assert members[b].segments == ((0, {LAM: 1e-3, LR: 0.01}), (20, {LAM: 2e-3, LR: 0.01}))
    assert members[b].clones == ((20, a),)
    # C: A's values to 20, B's after its clone to 30, then its own halved lr
    assert members[c].segments == ((0, {LAM: 1e-3, LR: 0.01}), (20, {LAM: 2e-3, LR: 0.01}),
                                   (30, {LAM: 2e-3, LR: 0.005}))
    assert members[c].clones == ((30, b),) and {m.end for m in members.values()} == {40}


def test_schedule_rows_are_one_per_segment_best_member_first(pbt_study):
    study_dir, _ = pbt_study
    data = load_study(study_dir)
    members = member_schedules(study_dir, data)
    scores = [m.score for m in members]
    assert scores == sorted(scores, reverse=True)  # mode max: best first
    header, rows = schedule_rows(members)
    assert header == ["member", "score", "from_iteration", "to_iteration", LAM, LR]
    assert len(rows) == 1 + 2 + 3
    by_member = {}
    for row in rows:
        by_member.setdefault(row[0], []).append((row[2], row[3]))
    assert all(spans[0][0] == 0 and spans[-1][1] == 40 for spans in by_member.values())
    assert all(a[1] == b[0] for spans in by_member.values() for a, b in zip(spans, spans[1:]))


def test_the_report_of_a_pbt_study_draws_the_schedules_and_writes_their_table(pbt_study, tmp_path):
    study_dir, (a, b, c) = pbt_study
    summary = write_report(study_dir, out_dir=tmp_path / "out")
    names = {p.name for p in summary.figures}
    assert "pbt_schedules.png" in names and (tmp_path / "out" / "figures" / "pbt_schedules.pdf").is_file()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Learned schedules (PBT)" in report and "tables/pbt_schedules.csv" in report
    with open(tmp_path / "out" / "tables" / "pbt_schedules.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["member"], r["from_iteration"], r["to_iteration"], float(r[LR])) for r in rows if r["member"] == c] \
        == [(c, "0", "20", 0.01), (c, "20", "30", 0.01), (c, "30", "40", 0.005)]


def test_a_study_that_is_not_pbt_has_no_schedules(tmp_path):
    study_dir = make_study(tmp_path, trials=TRIALS[:3], baseline=False)
    summary = write_report(study_dir, out_dir=tmp_path / "out")
    assert "pbt_schedules.png" not in {p.name for p in summary.figures}
    assert not (tmp_path / "out" / "tables" / "pbt_schedules.csv").exists()


def test_the_schedule_figure_draws_each_member_through_its_donors(pbt_study):
    """Read back from the figure: one panel per mutated key (λ_adv, lr; log axes), one step line per member over SGD
    iterations through its donors' segments, coloured by its final score (viridis over the members' range, the best
    drawn thickest), a dot where the member itself cloned, labels and the colour bar in percent."""
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    from study.report.schedules import schedule_figure

    study_dir, (a, b, c) = pbt_study
    data = load_study(study_dir)
    members = member_schedules(study_dir, data)
    fig = schedule_figure(study_dir, data)
    try:
        assert tuple(fig.get_size_inches()) == pytest.approx((6.4, 1.2 + 2.2 * 2))
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert len(panels) == 2
        scores = [100 * m.score for m in members]
        norm = mcolors.Normalize(min(scores), max(scores))
        for ax, key in zip(panels, [LAM, LR]):
            assert ax.get_yscale() == "log" and ax.get_ylabel() == {LAM: "lambda_adv", LR: "lr"}[key]
            steps = [line for line in ax.lines if line.get_linestyle() == "-"]
            dots = [line for line in ax.lines if line.get_marker() == "o"]
            assert len(steps) == 3 and len(dots) == 2  # B and C cloned once each
            for line, member in zip(steps, list(reversed(members))):  # the best drawn last, on top
                bounds = [s for s, _ in member.segments[1:]] + [member.end]
                xs = [x for (start, _), stop in zip(member.segments, bounds) for x in (start, stop)]
                ys = [float(v[key]) for _, v in member.segments for _ in (0, 1)]
                assert list(line.get_xdata()) == xs and list(line.get_ydata()) == ys
                assert mcolors.to_hex(line.get_color()) == mcolors.to_hex(plt.get_cmap("viridis")(
                    norm(100 * member.score)))
                assert line.get_linewidth() == (1.6 if member is members[0] else 1.0)
            by_member = {m.name: m for m in members}
            expected_dots = sorted((it, float(next(v[key] for s, v in reversed(by_member[name].segments)
                                                  if s <= it)))
                                   for name in (b, c) for it, _ in by_member[name].clones)
            assert sorted((d.get_xdata()[0], d.get_ydata()[0]) for d in dots) == expected_dots
            assert all(d.get_markersize() == 3 for d in dots)
        assert panels[-1].get_xlabel() == "SGD iteration" and panels[0].get_xlabel() == ""
        assert panels[0].get_title() == "PBT schedules of 3 members (dots: clones)"
        assert bar.get_ylabel() == f"final {data.metric} (%)"
    finally:
        plt.close(fig)


MOM = "optim.momentum"  # a mutated key that is neither a λ nor a learning rate: a linear axis


def _scored(data, mode=None, metric=None, **scores):
    """``data`` with the members' final scores (by trial name) and the study's mode/metric replaced."""
    import dataclasses

    trials = tuple(dataclasses.replace(t, metric=scores.get(t.name, t.metric)) for t in data.trials)
    return dataclasses.replace(data, trials=trials, mode=mode or data.mode, metric=metric or data.metric)


def test_members_are_ordered_by_score_for_the_study_mode_unscored_last_by_name(pbt_study):
    study_dir, (a, b, c) = pbt_study
    data = load_study(study_dir)
    members = member_schedules(study_dir, _scored(data, mode="min", **{a: 0.5, b: 0.2, c: 0.3}))
    assert [(m.name, m.score) for m in members] == [(b, 0.2), (c, 0.3), (a, 0.5)]  # min: lowest first
    members = member_schedules(study_dir, _scored(data, mode="max", **{a: math.nan, b: None, c: 0.1}))
    assert [m.name for m in members] == [c, a, b]  # NaN and None: no score, last, by name


def test_member_schedules_find_lineages_in_any_run_layout_and_donors_without_run_files(pbt_study):
    """A's engine files sit in its trial directory itself (no run/), B's run/ kept only its lineage (so the report
    does not list B as a member, yet C's schedule still runs through B's, read from <B>/run)."""
    import shutil

    study_dir, (a, b, c) = pbt_study
    for path in (study_dir / a / "run").iterdir():
        shutil.move(str(path), str(study_dir / a / path.name))
    (study_dir / a / "run").rmdir()
    for name in ("config.toml", "metrics.jsonl"):
        (study_dir / b / "run" / name).unlink()
    data = load_study(study_dir)
    assert {t.name: t.run_dir for t in data.trials if t.name != c} == {a: a, b: None}
    members = {m.name: m for m in member_schedules(study_dir, data)}
    assert sorted(members) == [a, c]
    assert members[a].segments == ((0, {LAM: 1e-3, LR: 0.01}),) and members[a].end == 40
    assert members[c].segments == ((0, {LAM: 1e-3, LR: 0.01}), (20, {LAM: 2e-3, LR: 0.01}),
                                   (30, {LAM: 2e-3, LR: 0.005}))
    assert members[c].clones == ((30, b),)


def test_member_schedules_skip_members_without_lineage_and_tolerate_lost_donors(pbt_study):
    """A wrote no lineage (skipped; B's clone of it keeps only B's own segment); C cloned a member whose directory
    is gone, in a record without an iteration (read as 0)."""
    study_dir, (a, b, c) = pbt_study
    (study_dir / a / "run" / "lineage.jsonl").unlink()
    _lineage(study_dir / c / "run", [
        {"event": "start", "iteration": 0, "time": 1.0, "hparams": {LAM: 1e-4, LR: 0.03}},
        _eval(10, 2.0, 1e-4, 0.03, 0.10),
        {"event": "clone", "time": 2.5, "hparams": {LAM: 3e-3, LR: 0.004}, "donor": "trial_gone"},
        _eval(20, 3.0, 3e-3, 0.004, 0.11), _eval(40, 7.0, 3e-3, 0.004, 0.12)])
    members = {m.name: m for m in member_schedules(study_dir, load_study(study_dir))}
    assert sorted(members) == [b, c]
    assert members[b].segments == ((0, {LAM: 2e-3, LR: 0.01}),) and members[b].clones == ((20, a),)
    assert members[c].segments == ((0, {LAM: 3e-3, LR: 0.004}),) and members[c].clones == ((0, "trial_gone"),)
    assert members[c].end == 40


def _drawn(ax):
    """(step lines, clone dots) of a panel: ([(xs, ys, colour, linewidth)], [(x, y, colour, markersize)])."""
    import matplotlib.colors as mcolors

    steps = [(list(ln.get_xdata()), list(ln.get_ydata()), mcolors.to_hex(ln.get_color()), ln.get_linewidth())
             for ln in ax.lines if ln.get_linestyle() == "-"]
    dots = [(ln.get_xdata()[0], ln.get_ydata()[0], mcolors.to_hex(ln.get_color()), ln.get_markersize())
            for ln in ax.lines if ln.get_marker() == "o"]
    return steps, dots


def test_the_schedule_figure_of_a_min_study_with_an_unscored_member_and_keys_some_records_lack(pbt_study):
    """Mode min, a validator metric (not a percentage), A without a score (grey), three mutated keys: A never had
    λ_adv; C cloned A at 10 and got λ_adv when it resumed at 20 (no λ value at its clone: no dot there)."""
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt
    from matplotlib.collections import QuadMesh
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from study.report.schedules import schedule_figure

    study_dir, (a, b, c) = pbt_study

    def ev(iteration, time, hparams):
        return {"event": "eval", "iteration": iteration, "time": time, "hparams": hparams, "metric": "uda/entropy",
                "value": 0.3}

    a_hp, b_hp = {LR: 0.01, MOM: 0.9}, {LAM: 1e-3, LR: 0.02, MOM: 0.8}
    _lineage(study_dir / a / "run", [{"event": "start", "iteration": 0, "time": 1.0, "hparams": a_hp},
                                     *[ev(10 * k, 1.0 + k, a_hp) for k in (1, 2, 3, 4)]])
    _lineage(study_dir / b / "run", [{"event": "start", "iteration": 0, "time": 1.0, "hparams": b_hp},
                                     *[ev(10 * k, 1.0 + k, b_hp) for k in (1, 2, 3, 4)]])
    c_late = {LAM: 2e-3, LR: 0.005, MOM: 0.9}
    _lineage(study_dir / c / "run", [
        {"event": "start", "iteration": 0, "time": 1.0, "hparams": {LR: 0.03, MOM: 0.9}},
        ev(10, 2.0, {LR: 0.03, MOM: 0.9}),
        {"event": "clone", "iteration": 10, "time": 2.5, "hparams": {LR: 0.005, MOM: 0.9}, "donor": a,
         "donor_iteration": 10},
        ev(20, 3.5, {LR: 0.005, MOM: 0.9}),
        {"event": "resume", "iteration": 20, "time": 4.0, "hparams": c_late},
        ev(30, 5.0, c_late), ev(40, 6.0, c_late)])
    data = _scored(load_study(study_dir), mode="min", metric="uda/entropy", **{a: None, b: 0.5, c: 0.2})
    plt.close("all")  # figures other tests left open would make pyplot warn from the 21st on, about them, not this one
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # drawing it warns about nothing (e.g. contradictory grid arguments)
        fig = schedule_figure(study_dir, data)
    try:
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert [ax.get_ylabel() for ax in panels] == ["lambda_adv", "lr", "optim.momentum"]
        assert [ax.get_yscale() for ax in panels] == ["log", "log", "linear"]
        assert [ax.get_xlabel() for ax in panels] == ["", "", "SGD iteration"]
        assert panels[0].get_title() == "PBT schedules of 3 members (dots: clones)"
        # drawn worst first: A (no score: grey), B (0.5: the worst end of viridis_r), C (0.2, the best: thickest)
        grey, worst, best = "#999999", "#440154", "#fde725"
        c_x = [0, 10, 10, 20, 20, 40]
        assert _drawn(panels[0]) == ([([0, 40], [1e-3, 1e-3], worst, 1.0), ([20, 40], [2e-3, 2e-3], best, 1.6)], [])
        assert _drawn(panels[1]) == ([([0, 40], [0.01, 0.01], grey, 1.0), ([0, 40], [0.02, 0.02], worst, 1.0),
                                      (c_x, [0.01, 0.01, 0.005, 0.005, 0.005, 0.005], best, 1.6)],
                                     [(10, 0.005, best, 3.0)])
        assert _drawn(panels[2]) == ([([0, 40], [0.9, 0.9], grey, 1.0), ([0, 40], [0.8, 0.8], worst, 1.0),
                                      (c_x, [0.9] * 6, best, 1.6)], [(10, 0.9, best, 3.0)])
        assert all(panels[0].get_shared_x_axes().joined(panels[0], ax) for ax in panels[1:])
        for ax in panels:
            assert all(line.get_visible() and line.get_alpha() == 0.3 for line in ax.get_ygridlines())
        # the colour bar: the scores as they are (no percent), lowest (best) yellow, a slim bar
        assert bar.get_ylabel() == "final uda/entropy"
        assert tuple(bar.get_ylim()) == pytest.approx((0.2, 0.5))
        (mesh,) = [coll for coll in bar.collections if isinstance(coll, QuadMesh)]
        assert mcolors.to_hex(mesh.get_cmap()(0.0)) == best
        assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
        fig.canvas.draw()
        assert bar.get_position().width / panels[0].get_position().width == pytest.approx(0.05, abs=0.01)
    finally:
        plt.close(fig)


def test_the_schedule_figure_without_any_score_is_grey_on_a_unit_colour_bar(pbt_study):
    """No member has a score yet: every line grey, the colour bar 0..1; pixel accuracy is shown in percent."""
    import matplotlib.pyplot as plt

    from study.report.schedules import schedule_figure

    study_dir, (a, b, c) = pbt_study
    data = _scored(load_study(study_dir), metric="val/pixel_acc", **{a: None, b: None, c: None})
    fig = schedule_figure(study_dir, data)
    try:
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert len(panels) == 2
        for ax in panels:
            steps, dots = _drawn(ax)
            assert {colour for _, _, colour, _ in steps + dots} == {"#999999"} and len(steps) == 3 and len(dots) == 2
        assert bar.get_ylabel() == "final val/pixel_acc (%)"
        assert tuple(bar.get_ylim()) == (0.0, 1.0)
    finally:
        plt.close(fig)

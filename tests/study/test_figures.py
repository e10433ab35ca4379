"""The report's figures as a paper would use them: read back from the saved files (PNG resolution, PDF beside it)
and from the matplotlib objects that drew them (legends, lines, error bars, axes)."""
from __future__ import annotations

import json
import struct
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import LAMBDA, LR, LUCKY, MODEL, PAPER, SEED, TRIALS, make_study  # noqa: E402

from study.report import load_study, write_report  # noqa: E402
from study.report.aggregate import completed_and_stopped  # noqa: E402


def png_dpi(path: Path) -> tuple[float, float]:
    """(x, y) dots per inch from the PNG's pHYs chunk (unit 1 = pixels per metre); raises when it has none."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    offset = 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])[0]
        if kind == b"pHYs":
            x, y, unit = struct.unpack(">IIB", body)
            assert unit == 1, f"{path}: pHYs unit {unit} is not metres"
            return round(x * 0.0254, 1), round(y * 0.0254, 1)  # pixels per metre are whole numbers
        offset += 12 + length
    raise AssertionError(f"{path}: no pHYs chunk (resolution unknown)")


def _capture(monkeypatch):
    import matplotlib

    import study.report.figures as figures

    matplotlib.use("Agg", force=True)
    kept = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: kept.append(fig) or path)
    return figures, kept


def _legend(fig) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def _panel(fig, label: str):
    return [ax for ax in fig.axes if ax.get_xlabel().startswith(label)][0]


def _means(ax):
    """The configuration means of a panel: (errorbar container, its line)."""
    return [(c, c.lines[0]) for c in ax.containers if hasattr(c, "has_yerr")]


def _grid_sensitivity(tmp_path, monkeypatch, trials, lambdas):
    """The sensitivity figure of a grid study over ``lambdas`` (as a grid study writes space.json: the λ dimension a
    list of grid values, no "log" flag), and the completed configurations it draws."""
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    space = json.loads((study_dir / "space.json").read_text())
    space["dimensions"][LAMBDA] = [{"type": "grid", "choices": list(lambdas), "applies_to": LAMBDA, "when": []}]
    (study_dir / "space.json").write_text(json.dumps(space))
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    completed, _ = completed_and_stopped(data)
    figures._sensitivity(tmp_path / "s.png", data, [LAMBDA, LR, MODEL, SEED], figures._space_dimensions(study_dir),
                         completed)
    return kept[0], completed


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    study_dir = make_study(tmp_path_factory.mktemp("figures"), trials=PAPER)
    return study_dir, write_report(study_dir)


def test_every_figure_is_a_png_at_200_dpi_with_a_pdf_beside_it(report, tmp_path):
    study_dir, summary = report
    assert sorted(p.name for p in summary.figures) == ["importance.png", "learning_curves.png",
                                                       "per_class_iou.png", "sensitivity.png"]
    for png in summary.figures:
        assert min(png_dpi(png)) >= 200, png
        from PIL import Image

        width, height = Image.open(png).size
        assert width >= 6 * 200 and height >= 2.5 * 200, (png, width, height)  # ≥ 6 x 2.5 inches at 200 dpi
        pdf = png.with_suffix(".pdf")
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF"), pdf
        assert len(data) > 5_000, (pdf, len(data))
        assert b"/Font" in data  # text kept as text (a vector figure), not a raster in a PDF wrapper
        assert b"matplotlib" not in data.lower() and b"/CreationDate" not in data  # no version, no clock
    # regenerated elsewhere: the PDFs are byte-identical too
    import shutil

    moved = shutil.copytree(study_dir, tmp_path / "moved")
    write_report(moved)
    for png in summary.figures:
        pdf = png.with_suffix(".pdf")
        assert (moved / "figures" / pdf.name).read_bytes() == pdf.read_bytes(), pdf.name


def test_a_grid_over_lambda_joins_configurations_that_share_the_rest_with_intervals(tmp_path, monkeypatch):
    """λ × backbone with three seeds each (PAPER, lr fixed): one joined series per backbone, each mean with its
    95 % t-interval (n = 3) as the error bar, the λ = 0 control a line; the old legend ("mean ± sd over seeds")
    is gone."""
    fig, completed = _grid_sensitivity(
        tmp_path, monkeypatch, PAPER + [("x", 0.002, 0.01, 1, 4, "completed", "deeplabv2_tiny", 0.5),
                                        ("y", 0.0005, 0.01, 1, 4, "completed", "deeplabv2_tiny", 0.5)],
        [0.0, 0.0005, 0.001, 0.002, 0.004])
    labels = _legend(fig)
    assert not [lb for lb in labels if "sd over seeds" in lb or "None" in lb]
    assert "deeplabv3plus_tiny: lr=0.01: mean ± 95 % t-interval, n = 3" in labels
    # deeplabv2_tiny has x and y with one seed: its legend says the n range, not a promise for all points
    assert "deeplabv2_tiny: lr=0.01: mean ± 95 % t-interval where n ≥ 2 (n = 1–3)" in labels
    for model in ("deeplabv2_tiny", "deeplabv3plus_tiny"):
        assert any(lb.startswith(f"{model}: lr=0.01: λ = 0 control (n=3)") for lb in labels)
    lam_ax = _panel(fig, "lambda_adv")
    assert lam_ax.get_xscale() == "log"
    by_x = {}
    for c in completed:
        by_x[(c.params[MODEL], c.params[LAMBDA])] = c
    for container, line in _means(lam_ax):
        assert line.get_linestyle() == "-"  # a series of configurations that differ in λ only
        assert line.get_markersize() >= 6 and line.get_markeredgewidth() > 0  # visible over the faded trials
        model = "deeplabv3plus_tiny" if "deeplabv3plus" in container.get_label() else "deeplabv2_tiny"
        xs, ys = line.get_data()
        segments = container.lines[2][0].get_segments() if container.lines[2] else []
        halves = {round(seg[0][0], 12): (seg[1][1] - seg[0][1]) / 2 for seg in segments}
        for x, y in zip(xs, ys):
            config = by_x[(model, x)]
            assert y == pytest.approx(100 * config.score.mean)
            if config.score.n >= 2:
                assert halves[round(x, 12)] == pytest.approx(100 * config.score.ci95)  # the t-interval, not sd
            else:
                assert round(x, 12) not in halves or halves[round(x, 12)] == 0  # no interval from one seed
    fig.canvas.draw()
    ticks = [t.get_text() for t in lam_ax.get_xticklabels() if t.get_text()]
    assert ticks == ["0.0005", "0.001", "0.002", "0.004"]
    renderer = fig.canvas.get_renderer()
    width, height = fig.canvas.get_width_height()
    box = fig.legends[0].get_window_extent(renderer)  # the legend is not cut off
    assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height


def test_points_that_differ_in_another_parameter_are_never_joined(tmp_path, monkeypatch):
    """TRIALS: λ and lr change together from trial to trial (a TPE search). A line along λ would show lr's
    effect as λ's: the means stand alone and the legend says why; one seed per configuration is called so."""
    study_dir = make_study(tmp_path, trials=[t for t in TRIALS if t[0] != "t1"], baseline=False)
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    completed, _ = completed_and_stopped(data)
    figures._sensitivity(tmp_path / "s.png", data, [LAMBDA, LR, SEED], figures._space_dimensions(study_dir),
                         completed)
    fig = kept[0]
    for name, other in (("lambda_adv", "lr"), ("lr", "lambda_adv")):
        means = _means(_panel(fig, name))
        assert means and all(line.get_linestyle() == "None" for _, line in means)
        assert all(not c.has_yerr for c, _ in means)  # n = 1 everywhere: no bar pretends to be an interval
    labels = _legend(fig)
    assert "one seed each, no interval (not joined: lr differs)" in labels
    assert "one seed each, no interval (not joined: lambda_adv differs)" in labels


def test_a_narrow_log_axis_gets_several_labelled_ticks(tmp_path, monkeypatch):
    """Seven learning rates within 1.3 decades (more than are written out one by one): 1-2-5 ticks, not the lone
    "10^-2" of one label per decade."""
    lrs = [0.004, 0.006, 0.009, 0.013, 0.02, 0.03, 0.045]
    trials = [(f"l{k}", 1e-3, lr, 1, 4, "completed") for k, lr in enumerate(lrs)]
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    completed, _ = completed_and_stopped(data)
    figures._sensitivity(tmp_path / "s.png", data, [LR], figures._space_dimensions(study_dir), completed)
    ax = _panel(kept[0], "lr")
    kept[0].canvas.draw()
    low, high = ax.get_xlim()
    labelled = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
    assert len(labelled) >= 3, labelled
    assert {"0.005", "0.01", "0.02"} <= set(labelled)


def test_learning_curves_run_over_iterations_with_trial_labels_and_a_band_for_replicates(tmp_path, monkeypatch):
    study_dir = make_study(tmp_path, trials=TRIALS, baseline=False)
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    figures._learning_curves(tmp_path / "c.png", data, [1, 2, 4], [LAMBDA, LR, SEED])
    fig = kept[0]
    ax = fig.axes[0]
    assert ax.get_xlabel() == "iteration (SGD steps)"
    by_label = {line.get_label(): line for line in ax.get_lines()}
    # make_study evaluates every 10 iterations: round r is iteration 10 r
    first = by_label["#0 λ=0.001 lr=0.01 seed=1 (completed)"]
    assert list(first.get_xdata()) == [10, 20, 30, 40]
    assert first.get_marker() == "o" and first.get_markersize() >= 3
    assert "#3 λ=0.0005 lr=0.005 seed=1 (pruned)" in by_label
    assert not [lb for lb in _legend(fig) if "trial_" in lb or "abc_" in lb]  # no hash ids
    # t0 and t1 are seeds 1 and 2 of one configuration: their mean with a t-interval band
    band_label = "λ=0.001 lr=0.01: mean ± 95 % t-interval (n = 2)"
    mean = by_label[band_label]
    t0, t1 = [t for t in data.trials if t.name.endswith(("_t0", "_t1"))]
    expected = [100 * (a + b) / 2 for (_, a), (_, b) in zip(t0.curve, t1.curve)]
    assert list(mean.get_ydata()) == pytest.approx(expected)
    (band,) = ax.collections[:1]
    vertices = band.get_paths()[0].vertices
    from study.report.aggregate import stats

    last = stats([t0.curve[-1][1], t1.curve[-1][1]])
    at_40 = vertices[np.isclose(vertices[:, 0], 40)][:, 1]
    assert max(at_40) - min(at_40) == pytest.approx(2 * 100 * last.ci95)
    # the rungs (rounds 1, 2, 4) are drawn at their iterations
    fig.canvas.draw()
    top = [a for a in ax.child_axes][0]
    assert [t.get_position()[0] for t in top.get_xticklabels() if t.get_text()] == [10, 20, 40]


def test_report_figures_never_show_seeds_none(tmp_path):
    """A study without a seed dimension: no legend or label speaks of seeds it does not have."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    trials = [(f"s{k}", lam, 0.01, 1, 4, "completed", "deeplabv2_tiny", 0.4 + 0.02 * k)
              for k, lam in enumerate((5e-4, 1e-3, 2e-3))]
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    space = json.loads((study_dir / "space.json").read_text())
    del space["dimensions"][SEED]
    (study_dir / "space.json").write_text(json.dumps(space))
    for trial_dir in study_dir.glob("trial_*"):
        params = json.loads((trial_dir / "params.json").read_text())
        del params[SEED]
        (trial_dir / "params.json").write_text(json.dumps(params))
    summary = write_report(study_dir)
    import study.report.figures as figures

    data = load_study(study_dir)
    completed, _ = completed_and_stopped(data)
    svg = tmp_path / "s.svg"
    original = figures.save_figure
    try:
        figures.save_figure = lambda fig, path: fig.savefig(svg) or path
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text: the legend can be read back
            figures._sensitivity(tmp_path / "s.png", data, [LAMBDA, LR, MODEL],
                                 figures._space_dimensions(study_dir), completed)
    finally:
        figures.save_figure = original
    svg_texts = svg.read_text()
    assert "lr=0.01: one seed each, no interval" in svg_texts
    assert "None" not in svg_texts and "seeds [" not in svg_texts
    assert summary.figures


def test_per_class_bars_of_a_replicated_best_configuration_carry_their_interval(tmp_path, monkeypatch):
    from study.report.aggregate import stats

    study_dir = make_study(tmp_path, trials=LUCKY, baseline=True)
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    completed, _ = completed_and_stopped(data)
    best = completed[0]
    figures._per_class_figure(tmp_path / "p.png", data, best)
    ax = kept[0].axes[0]
    (container,) = [c for c in ax.containers if getattr(c, "errorbar", None) is not None
                    and "t-interval" in c.get_label()]
    assert f"mean of {len(best.trials)} seeds" in container.get_label()
    segments = container.errorbar.lines[2][0].get_segments()
    road = stats(t.final["val/IoU/road"] for t in best.trials)
    assert (segments[0][1][1] - segments[0][0][1]) / 2 == pytest.approx(100 * road.ci95)
    miou13 = stats(t.final["val/mIoU13"] for t in best.trials)
    assert (segments[-1][1][1] - segments[-1][0][1]) / 2 == pytest.approx(100 * miou13.ci95)


def test_series_of_one_backbone_differ_in_colour_and_each_control_is_drawn_in_its_series_colour(tmp_path,
                                                                                                 monkeypatch):
    """λ {0, 0.001, 0.01} × lr {0.005, 0.02} × 2 seeds on one backbone: one coloured series per lr (a marker alone
    did not tell them apart in the λ study of docs/results.md), and each lr's λ = 0 control a dotted line in
    that series' colour, labelled with its lr (one control line for both had hidden the second)."""
    import matplotlib.colors as mcolors

    trials = [(f"l{lam}r{lr}s{s}", lam, lr, s, 4, "completed", "deeplabv2_tiny", 0.3 + 10 * lam + 2 * lr + 0.01 * s)
              for lam in (0.0, 0.001, 0.01) for lr in (0.005, 0.02) for s in (1, 2)]
    fig, completed = _grid_sensitivity(tmp_path, monkeypatch, trials, [0.0, 0.001, 0.01])
    lam_ax = _panel(fig, "lambda_adv")
    series = {c.get_label().split(":")[0]: mcolors.to_hex(c.lines[0].get_color()) for c, _ in _means(lam_ax)}
    assert set(series) == {"lr=0.005", "lr=0.02"} and len(set(series.values())) == 2
    controls = {line.get_label().split(":")[0]: (mcolors.to_hex(line.get_color()), line.get_ydata()[0])
                for line in lam_ax.lines if "λ = 0 control" in line.get_label()}
    assert {k: colour for k, (colour, _) in controls.items()} == series
    means = {lr: 100 * next(c.score.mean for c in completed if c.params[LAMBDA] == 0.0 and c.params[LR] == lr)
             for lr in (0.005, 0.02)}
    assert {k: y for k, (_, y) in controls.items()} == {f"lr={lr}": pytest.approx(v) for lr, v in means.items()}


def test_importance_bars_put_the_most_important_parameter_on_top(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    study_dir = make_study(tmp_path, trials=TRIALS[:3], baseline=False)
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    assert figures._importance_figure(tmp_path / "i.png", data, {}) is None and not kept
    figures._importance_figure(tmp_path / "i.png", data, {"b.lr": 0.2, "a.lam": 0.7, "c.seedless": 0.1,
                                                          "a.tie": 0.2})
    ax = kept[0].axes[0]
    bars = sorted(ax.patches, key=lambda p: p.get_y())  # barh: bottom to top
    assert [p.get_width() for p in bars] == pytest.approx([0.1, 0.2, 0.2, 0.7])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c.seedless", "a.tie", "b.lr", "a.lam"]  # ties by name
    assert ax.get_xlabel() == "importance (PED-ANOVA over configuration means, seed left out)"
    assert ax.get_title() == "fixture: hyperparameter importance for val/mIoU13"
    assert kept[0].get_size_inches()[1] == pytest.approx(0.5 * 4 + 1.6)  # a row of height per parameter
    plt.close(kept[0])


def test_per_class_bars_are_the_tables_rows_in_percent_side_by_side(tmp_path, monkeypatch):
    """Source only (grey) and the best trial (blue) per class, missing IoUs drawn as 0, the class names under the
    bars (with * for the three classes outside mIoU13), no error bar for one run."""
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    study_dir = make_study(tmp_path, trials=TRIALS[:3], baseline=True)
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    assert figures._per_class_figure(tmp_path / "p.png", replace(data, baseline=None), None) is None
    best = data.scored()[0]
    final = dict(best.final)
    del final["val/IoU/sky"]  # a class this run never scored
    best = replace(best, final=final)
    figures._per_class_figure(tmp_path / "p.png", data, best)
    ax = kept[-1].axes[0]
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names[:6] == ["road", "sidewalk", "building", "wall*", "fence*", "pole*"] and names[-2:] == ["mIoU16",
                                                                                                        "mIoU13"]
    containers = [c for c in ax.containers if hasattr(c, "patches")]
    assert [c.get_label() for c in containers] == ["source only (baseline)", f"best trial ({data.label(best)})"]
    grey, blue = containers
    assert {mcolors.to_hex(p.get_facecolor()[:3]) for p in grey.patches} == {mcolors.to_hex("tab:gray")}
    assert {mcolors.to_hex(p.get_facecolor()[:3]) for p in blue.patches} == {mcolors.to_hex("tab:blue")}
    keys = [f"val/IoU/{n.rstrip('*')}" for n in names[:-2]] + ["val/mIoU16", "val/mIoU13"]
    assert [p.get_height() for p in grey.patches] == pytest.approx([100 * data.baseline[k] for k in keys])
    assert [p.get_height() for p in blue.patches] == pytest.approx([100 * final.get(k, 0.0) for k in keys])
    assert blue.patches[names.index("sky")].get_height() == 0.0
    width = grey.patches[0].get_width()
    assert width == pytest.approx(0.4)
    assert grey.patches[0].get_x() + width == pytest.approx(blue.patches[0].get_x())  # side by side, no overlap
    assert all(c.errorbar is None for c in containers)  # one run each: no interval
    assert ax.get_ylabel() == "IoU on target val (%)"
    assert ax.get_title() == "fixture: per-class IoU (* = not in mIoU13)"
    for fig in kept:
        plt.close(fig)



def test_draw_all_returns_the_drawn_figures_in_the_reports_order(tmp_path, monkeypatch):
    import study.report.figures as figures

    drawn_order = []

    def fake(name, result=True):
        def draw(path, *args, **kwargs):
            drawn_order.append(name)
            if result:
                path.write_bytes(b"png")
                return path
            return None
        return draw

    monkeypatch.setattr(figures, "_sensitivity", fake("sensitivity"))
    monkeypatch.setattr(figures, "_learning_curves", fake("learning_curves"))
    monkeypatch.setattr(figures, "_importance_figure", fake("importance", result=False))  # nothing to draw
    monkeypatch.setattr(figures, "_per_class_figure", fake("per_class_iou"))
    monkeypatch.setattr(figures, "_schedules", fake("pbt_schedules"))
    study_dir = make_study(tmp_path, trials=TRIALS[:3], baseline=False)
    data = load_study(study_dir)
    (study_dir / "figures").mkdir()
    got = figures._draw_all(study_dir / "figures", data, best=None, searched=[LAMBDA], importances={}, rungs=[])
    assert list(got) == ["sensitivity", "learning_curves", "per_class_iou"]
    assert got["sensitivity"] == study_dir / "figures" / "sensitivity.png"
    assert drawn_order == ["sensitivity", "learning_curves", "importance", "per_class_iou"]  # no PBT: no schedules
    drawn_order.clear()
    got = figures._draw_all(study_dir / "figures", replace(data, scheduler="pbt"), best=None,
                            searched=[LAMBDA], importances={}, rungs=[])
    assert list(got) == ["pbt_schedules", "sensitivity", "learning_curves", "per_class_iou"]  # schedules first
    assert drawn_order[-1] == "pbt_schedules"


def test_learning_curves_of_trials_with_other_intervals_fall_back_to_rounds_without_rung_lines(tmp_path, monkeypatch):
    """Rungs are in evaluation rounds: drawn at iterations only when every trial evaluates at the same interval. A
    trial without its iteration puts the whole figure in rounds; the end marker of a failed trial is red, of a
    stopped one black."""
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    study_dir = make_study(tmp_path, trials=TRIALS, baseline=False)
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    t0 = data.trials[0]
    odd = replace(t0, iteration=80)  # evaluates every 20 iterations
    figures._learning_curves(tmp_path / "c.png", replace(data, trials=(odd, *data.trials[1:])), [1, 2, 4])
    ax = kept[-1].axes[0]
    assert ax.get_xlabel() == "iteration (SGD steps)"
    assert not [line for line in ax.get_lines() if line.get_linestyle() == ":"] and not ax.child_axes
    first = [line for line in ax.get_lines() if line.get_label().startswith("#0 ")][0]
    assert list(first.get_xdata()) == [20, 40, 60, 80]
    no_iteration = replace(t0, iteration=None)
    figures._learning_curves(tmp_path / "c.png", replace(data, trials=(no_iteration, *data.trials[1:])),
                             [1, 2, 4])
    ax = kept[-1].axes[0]
    assert ax.get_xlabel() == "training_iteration (evaluation rounds)"
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"] == [1, 2, 4]
    assert ax.get_ylabel() == "val/mIoU13 (%)"
    assert ax.get_title() == "fixture: learning curves (dashed = stopped early; x = last report)"
    ends = {mcolors.to_hex(c.get_facecolor()[0][:3]): c.get_offsets().tolist() for c in ax.collections
            if len(c.get_offsets()) and len(c.get_sizes()) and c.get_sizes()[0] == 36}
    by_name = {t.name[-2:]: t for t in data.trials}

    def end(name):
        t = by_name[name]
        return [t.curve[-1][0], pytest.approx(100 * t.curve[-1][1])]

    assert ends[mcolors.to_hex("tab:red")] == [end("t5")]  # failed
    assert ends[mcolors.to_hex("black")] == [end("t3"), end("t4"), end("t6")]  # pruned and diverged
    legend = ax.get_legend()
    assert len(legend.get_texts()) == 8  # 7 trials and one replicate mean
    for fig in kept:
        plt.close(fig)


@pytest.mark.parametrize("n, lines", [(16, True), (17, False)])
def test_up_to_sixteen_trials_get_a_labelled_line_each(tmp_path, monkeypatch, n, lines):
    """Sixteen learning curves are still one labelled line each; from seventeen on, two line collections (solid and
    dashed) without per-trial labels."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    trials = [(f"n{k}", 1e-4 * (k + 1), 0.01, 1, 4 if k % 4 else 2, "completed" if k % 4 else "pruned")
              for k in range(n)]
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    figures, kept = _capture(monkeypatch)
    figures._learning_curves(tmp_path / "c.png", load_study(study_dir), [1, 2, 4])
    ax = kept[0].axes[0]
    labelled = [line for line in ax.get_lines() if "(completed)" in line.get_label() or "(pruned)" in line.get_label()]
    collections = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert (len(labelled), len(collections)) == ((n, 0) if lines else (0, 2))
    plt.close(kept[0])

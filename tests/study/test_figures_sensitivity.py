"""The sensitivity figure read back from the matplotlib objects that draw it: which trials each panel shows and how
(faded completed trials, grey early scores, failed ones left out and counted in the title), the configuration
means and their legends, the λ = 0 control and the source-only line, the axes (log ticks, categories, labels) and
the layout; and the small decisions behind it (log axis or not, interval wording, series keys)."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_figures import _capture, _legend, _means, _panel  # noqa: E402
from test_report import LAMBDA, LR, MODEL, SEED, make_study  # noqa: E402

from study.report import load_study  # noqa: E402
from study.report.aggregate import ConfigAggregate, Stats, completed_and_stopped  # noqa: E402

A, B = "deeplabv2_tiny", "deeplabv3plus_tiny"
EXTRA = "train.extra"
BLUE, ORANGE, GREEN, GRAY, RED = "#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f", "#d62728"


def _hex(colour) -> str:
    import matplotlib.colors as mcolors

    return mcolors.to_hex(colour)


def _draw(tmp_path, monkeypatch, trials, searched, *, baseline=False, statuses=None, extra=None, space=None,
          keep=None, edit=None, extra_name=EXTRA):
    """Draw the sensitivity figure of a fixture study. ``statuses``: trial short name → a status make_study
    cannot write (stopped, running); ``extra``: short name → a value of a further searched parameter
    ``extra_name``; ``space``: replaces space.json's dimensions; ``keep``: short names of the trials the figure
    is given (the completed configurations still come from all of them); ``edit``: data → data before drawing.
    Returns (figure, data as drawn, trial metrics by short name)."""
    study_dir = make_study(tmp_path, trials=trials, baseline=baseline)
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    short = {t.name: t.name.split("_", 3)[3] for t in data.trials}
    changed = []
    for t in data.trials:
        name = short[t.name]
        if statuses and name in statuses:
            t = replace(t, status=statuses[name])
        if extra and name in extra:
            t = replace(t, params={**t.params, extra_name: extra[name]})
        changed.append(t)
    data = replace(data, trials=tuple(changed))
    if edit is not None:
        data = edit(data)
    completed, _ = completed_and_stopped(data)
    if keep is not None:
        data = replace(data, trials=tuple(t for t in data.trials if short[t.name] in keep))
    drawn = figures._sensitivity(tmp_path / "s.png", data, searched, space if space is not None else
                                 figures._space_dimensions(study_dir), completed)
    assert drawn == tmp_path / "s.png"  # the path the figure was saved to, for the report to link
    metrics = {short[t.name]: t.metric for t in data.trials}
    return kept[0], data, metrics


def _scatters(ax) -> dict[str, object]:
    from matplotlib.collections import PathCollection

    return {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}


def _points(collection) -> list[tuple[float, float]]:
    return sorted((round(float(x), 12), round(float(y), 9)) for x, y in collection.get_offsets())


def _expected(pairs) -> list[tuple[float, float]]:
    return sorted((round(float(x), 12), round(float(y), 9)) for x, y in pairs)


def _suptitle(fig):
    """The figure's title as a Text (``Figure.suptitle`` adds it to ``fig.texts``; its string is public)."""
    return [t for t in fig.texts if t.get_text() == fig.get_suptitle()][0]


def _columns(fig, legend) -> int:
    """How many columns a legend's entries are laid out in, read from where they are drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return len({round(t.get_window_extent(renderer).x0) for t in legend.get_texts()})


def _is_marker(collection, marker: str) -> bool:
    import numpy as np
    from matplotlib.markers import MarkerStyle

    style = MarkerStyle(marker)
    ref = style.get_path().transformed(style.get_transform())
    path = collection.get_paths()[0]
    return path.vertices.shape == ref.vertices.shape and np.allclose(path.vertices, ref.vertices)


def _hlines(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}


# one backbone: λ {0, 0.001, 0.004} completed, three early scores (pruned, stopped, running), two failed
MIXED = [
    ("c1", 1e-3, 0.01, 1, 4, "completed", A, 0.40),
    ("c2", 1e-3, 0.01, 2, 4, "completed", A, 0.44),
    ("c3", 4e-3, 0.01, 1, 4, "completed", A, 0.50),
    ("z1", 0.0, 0.01, 1, 4, "completed", A, 0.30),
    ("z2", 0.0, 0.01, 2, 4, "completed", A, 0.34),
    ("p1", 2e-3, 0.01, 1, 2, "pruned", A, 0.20),
    ("p0", 0.0, 0.01, 2, 2, "pruned", A, 0.21),  # λ = 0: no point on the log axis
    ("s1", 3e-3, 0.01, 1, 2, "pruned", A, 0.22),
    ("r1", 5e-3, 0.01, 1, 1, "pruned", A, 0.24),
    ("f1", 1e-2, 0.01, 1, 1, "failed", A, 0.25),
    ("d1", 8e-3, 0.01, 2, 2, "diverged", A, 0.26),
]
MIXED_STATUS = {"s1": "stopped", "r1": "running"}


def test_each_trial_is_drawn_where_and_as_its_fate_says(tmp_path, monkeypatch):
    """Completed trials faded in their backbone's colour; early scores grey with their own marker and label
    (a pruned score is not a final one); failed/diverged trials not drawn but counted in the title; the λ = 0
    trials not as points on the log axis. A wrong x, y, marker or label misplaces or mislabels a trial."""
    fig, data, m = _draw(tmp_path, monkeypatch, MIXED, [LAMBDA, LR, SEED], statuses=MIXED_STATUS)
    assert _suptitle(fig).get_text() == "fixture: val/mIoU13 at each trial's last report (2 failed/diverged, not shown)"
    lam = _panel(fig, "lambda_adv")
    dots = _scatters(lam)
    assert set(dots) == {"each completed trial", "pruned (early score)", "stopped (early score)",
                         "running (early score)"}
    done = dots["each completed trial"]
    assert _points(done) == _expected([(1e-3, 100 * m["c1"]), (1e-3, 100 * m["c2"]), (4e-3, 100 * m["c3"])])
    assert done.get_alpha() == 0.3 and list(done.get_sizes()) == [18] and list(done.get_linewidths()) == [0]
    assert [_hex(c) for c in done.get_facecolor()] == [BLUE] and _is_marker(done, "o")
    for label, name, x, marker, alpha in (("pruned (early score)", "p1", 2e-3, "x", 0.8),
                                          ("stopped (early score)", "s1", 3e-3, "x", 0.8),
                                          ("running (early score)", "r1", 5e-3, "^", 0.6)):
        early = dots[label]
        assert _points(early) == _expected([(x, 100 * m[name])]), label
        assert early.get_alpha() == alpha and list(early.get_sizes()) == [28], label
        assert [_hex(c) for c in early.get_edgecolor()] == [GRAY] and _is_marker(early, marker), label
    # the lr panel (every trial at lr = 0.01): the λ = 0 trials are points there
    lr_done = _scatters(_panel(fig, "lr"))["each completed trial"]
    assert _points(lr_done) == _expected([(0.01, 100 * m[n]) for n in ("c1", "c2", "c3", "z1", "z2")])
    assert lam.get_ylabel() == "val/mIoU13 (%)" and _panel(fig, "lr").get_ylabel() == "val/mIoU13 (%)"
    assert lam.get_xlabel() == "lambda_adv (log)" and _panel(fig, "lr").get_xlabel() == "lr (log)"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_study_without_failures_has_a_plain_title(tmp_path, monkeypatch):
    """No "(0 failed/diverged, not shown)": a reader would look for failures that never happened."""
    fig, _, _ = _draw(tmp_path, monkeypatch, MIXED[:3], [LAMBDA])
    assert _suptitle(fig).get_text() == "fixture: val/mIoU13 at each trial's last report"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_the_legend_of_one_backbone_names_series_controls_and_the_source_only_line(tmp_path, monkeypatch):
    """One backbone: no "<backbone>: " prefix; the joined λ series says lr and its n range, the λ = 0 control its
    n, the source-only line its value; on the lr panel the means are not joined (no other value of lr)."""
    fig, data, m = _draw(tmp_path, monkeypatch, MIXED, [LAMBDA, LR, SEED], statuses=MIXED_STATUS, baseline=True)
    labels = _legend(fig)
    assert sorted(labels) == sorted([
        "each completed trial", "pruned (early score)", "stopped (early score)", "running (early score)",
        "lr=0.01: mean ± 95 % t-interval where n ≥ 2 (n = 1–2)", "lr=0.01: λ = 0 control (n=2)", "source only",
        "mean ± 95 % t-interval where n ≥ 2 (n = 1–2)"])
    legend = fig.legends[0]
    assert _columns(fig, legend) == 2 and not legend.get_frame_on()
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D

    handles = dict(zip(labels, legend.legend_handles))  # each label beside its own artist
    assert isinstance(handles["each completed trial"], PathCollection)
    assert isinstance(handles["source only"], Line2D) and _hex(handles["source only"].get_color()) == RED
    for means in ("lr=0.01: mean ± 95 % t-interval where n ≥ 2 (n = 1–2)",
                  "mean ± 95 % t-interval where n ≥ 2 (n = 1–2)"):
        assert not isinstance(handles[means], PathCollection), means  # an error bar, not a trial scatter
    for ax in fig.axes:
        source = _hlines(ax)["source only"]
        assert _hex(source.get_color()) == RED and source.get_linestyle() == "--" and source.get_linewidth() == 1
        assert list(source.get_ydata()) == [pytest.approx(100 * data.baseline["val/mIoU13"])] * 2
    lam = _panel(fig, "lambda_adv")
    control = _hlines(lam)["lr=0.01: λ = 0 control (n=2)"]
    assert list(control.get_ydata()) == [pytest.approx(100 * (m["z1"] + m["z2"]) / 2)] * 2
    assert control.get_linestyle() == ":" and control.get_linewidth() == 1.2 and _hex(control.get_color()) == BLUE
    assert "lr=0.01: λ = 0 control (n=2)" not in _hlines(_panel(fig, "lr"))  # lr's axis has no λ = 0 to set apart
    ((container, line),) = _means(lam)
    assert list(line.get_xdata()) == [1e-3, 4e-3]
    assert list(line.get_ydata()) == pytest.approx([100 * (m["c1"] + m["c2"]) / 2, 100 * m["c3"]])
    assert line.get_linestyle() == "-" and line.get_marker() == "s" and _hex(line.get_color()) == BLUE
    ((container, line),) = _means(_panel(fig, "lr"))
    assert line.get_linestyle() == "None" and line.get_marker() == "s" and _hex(line.get_color()) == BLUE
    assert sorted(line.get_ydata()) == pytest.approx(sorted([100 * (m["c1"] + m["c2"]) / 2, 100 * m["c3"],
                                                            100 * (m["z1"] + m["z2"]) / 2]))
    # two panels in one row: 9.6 inches wide; 8 labels in 2 columns = 4 rows: 3.9 + 0.3 + 4 x 0.2 inches high
    assert list(fig.get_size_inches()) == pytest.approx([9.6, 5.0])
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("baseline", [{"val/mIoU13": math.nan}, {"val/mIoU16": 0.5}, None])
def test_no_source_only_line_without_a_finite_baseline_score(tmp_path, monkeypatch, baseline):
    """A baseline without the study metric (or NaN) draws no "source only" line: it would sit at a made-up
    height."""
    fig, _, _ = _draw(tmp_path, monkeypatch, MIXED[:3], [LAMBDA], baseline=True,
                      edit=lambda data: replace(data, baseline=baseline))
    assert "source only" not in _legend(fig)
    assert not [line for ax in fig.axes for line in ax.lines if line.get_label() == "source only"]
    import matplotlib.pyplot as plt

    plt.close(fig)


# two backbones, lr fixed, a further categorical parameter EXTRA (one value): four panels
TWO = [
    ("a1", 1e-3, 0.01, 1, 4, "completed", A, 0.40),
    ("a2", 1e-3, 0.01, 2, 4, "completed", A, 0.42),
    ("a3", 4e-3, 0.01, 1, 4, "completed", A, 0.50),
    ("a01", 0.0, 0.01, 1, 4, "completed", A, 0.30),
    ("a02", 0.0, 0.01, 2, 4, "completed", A, 0.31),
    ("a03", 0.0, 0.01, 3, 4, "completed", A, 0.35),
    ("b1", 1e-3, 0.01, 1, 4, "completed", B, 0.45),
    ("b2", 4e-3, 0.01, 1, 4, "completed", B, 0.55),
    ("b3", 4e-3, 0.01, 2, 4, "completed", B, 0.57),
]
TWO_EXTRA = {t[0]: "a" for t in TWO}


def test_nothing_to_draw_without_a_searched_parameter_or_a_scored_trial(tmp_path, monkeypatch):
    """Only the seed searched, or every trial failed: no figure at all (empty panels on degenerate axes)."""
    trials = [("a", 1e-3, 0.01, 1, 4, "completed", A, 0.40), ("f", 2e-3, 0.01, 1, 1, "failed", A, 0.30)]
    study_dir = make_study(tmp_path, trials=trials, baseline=False)
    figures, kept = _capture(monkeypatch)
    data = load_study(study_dir)
    completed, _ = completed_and_stopped(data)
    assert figures._sensitivity(tmp_path / "s.png", data, [SEED], {}, completed) is None
    failed_only = replace(data, trials=tuple(t for t in data.trials if t.status == "failed"))
    assert figures._sensitivity(tmp_path / "s.png", failed_only, [LAMBDA, SEED], {}, ()) is None
    assert kept == []


def test_two_backbones_are_two_colours_with_prefixed_labels_on_a_grid_of_panels(tmp_path, monkeypatch):
    """Two backbones: each label starts with its backbone, tab:blue/tab:orange by name; four panels on a 3 x 2
    grid with the two spare axes switched off; the backbone and EXTRA panels are categorical (a tick per value,
    half a step of margin). A wrong colour or prefix gives one backbone's points to the other."""
    fig, data, m = _draw(tmp_path, monkeypatch, TWO, [LAMBDA, LR, MODEL, EXTRA, SEED], extra=TWO_EXTRA)
    series = "lr=0.01 train.extra=a"
    assert sorted(_legend(fig)) == sorted([
        f"{A}: each completed trial", f"{B}: each completed trial",
        f"{A}: {series}: mean ± 95 % t-interval where n ≥ 2 (n = 1–2)",
        f"{B}: {series}: mean ± 95 % t-interval where n ≥ 2 (n = 1–2)",
        f"{A}: {series}: λ = 0 control (n=3)",
        f"{A}: mean ± 95 % t-interval where n ≥ 2 (n = 1–3)",
        f"{B}: mean ± 95 % t-interval where n ≥ 2 (n = 1–2)"])
    axes = fig.axes
    assert len(axes) == 6 and [ax.axison for ax in axes] == [True] * 4 + [False] * 2
    assert [ax.get_xlabel() for ax in axes[:4]] == ["lambda_adv (log)", "lr (log)", "backbone", "train.extra"]
    # 3 columns of 4.8 inches; 2 rows of 3.9 inches and 7 labels in 2 columns (4 rows): 0.3 + 4 x 0.2
    assert list(fig.get_size_inches()) == pytest.approx([14.4, 7.8 + 1.1])
    assert _columns(fig, fig.legends[0]) == 2
    lowest = min(ax.get_position().y0 for ax in axes[:4])
    assert lowest >= 1.1 / 8.9 - 1e-9  # the legend's strip is kept free of panels
    lam = _panel(fig, "lambda_adv")
    dots = _scatters(lam)
    assert _points(dots[f"{A}: each completed trial"]) == _expected(
        [(1e-3, 100 * m["a1"]), (1e-3, 100 * m["a2"]), (4e-3, 100 * m["a3"])])
    assert _points(dots[f"{B}: each completed trial"]) == _expected(
        [(1e-3, 100 * m["b1"]), (4e-3, 100 * m["b2"]), (4e-3, 100 * m["b3"])])
    assert [_hex(c) for c in dots[f"{A}: each completed trial"].get_facecolor()] == [BLUE]
    assert [_hex(c) for c in dots[f"{B}: each completed trial"].get_facecolor()] == [ORANGE]
    colours = {c.get_label().split(":")[0]: _hex(line.get_color()) for c, line in _means(lam)}
    assert colours == {A: BLUE, B: ORANGE}
    control = _hlines(lam)[f"{A}: {series}: λ = 0 control (n=3)"]
    assert _hex(control.get_color()) == BLUE
    assert list(control.get_ydata()) == [pytest.approx(100 * (m["a01"] + m["a02"] + m["a03"]) / 3)] * 2
    model = _panel(fig, "backbone")
    assert list(model.get_xticks()) == [0, 1] and [t.get_text() for t in model.get_xticklabels()] == [A, B]
    assert model.get_xlim() == pytest.approx((-0.5, 1.5)) and model.get_xscale() == "linear"
    dots = _scatters(model)
    assert _points(dots[f"{A}: each completed trial"]) == _expected(
        [(0, 100 * m[n]) for n in ("a1", "a2", "a3", "a01", "a02", "a03")])
    assert _points(dots[f"{B}: each completed trial"]) == _expected([(1, 100 * m[n]) for n in ("b1", "b2", "b3")])
    extra = _panel(fig, "train.extra")
    assert list(extra.get_xticks()) == [0] and [t.get_text() for t in extra.get_xticklabels()] == ["a"]
    assert extra.get_xlim() == pytest.approx((-0.5, 0.5))
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_backbone_known_only_from_its_completed_configurations_still_gets_its_colour(tmp_path, monkeypatch):
    """The colour groups are those of the scored trials and of the completed configurations together: B's means
    are drawn (in tab:orange, prefixed) even when none of its trials is among those the figure scatters."""
    fig, _, _ = _draw(tmp_path, monkeypatch, TWO, [LAMBDA], extra=TWO_EXTRA,
                      keep={"a1", "a2", "a3", "a01", "a02", "a03"})
    lam = _panel(fig, "lambda_adv")
    assert set(_scatters(lam)) == {f"{A}: each completed trial"}
    colours = {c.get_label().split(":")[0]: _hex(line.get_color()) for c, line in _means(lam)}
    assert colours == {A: BLUE, B: ORANGE}
    assert f"{B}: lr=0.01 train.extra=a: mean ± 95 % t-interval where n ≥ 2 (n = 1–2)" in _legend(fig)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_one_panel_is_seven_inches_wide_with_a_one_column_legend(tmp_path, monkeypatch):
    """A single panel: 7 inches (not 4.8), the legend in one column below it, one 0.2-inch row per label."""
    fig, _, _ = _draw(tmp_path, monkeypatch, MIXED[:3], [LAMBDA, SEED])
    assert len(fig.axes) == 1 and _columns(fig, fig.legends[0]) == 1
    labels = _legend(fig)
    assert sorted(labels) == ["each completed trial", "lr=0.01: mean ± 95 % t-interval where n ≥ 2 (n = 1–2)"]
    assert list(fig.get_size_inches()) == pytest.approx([7.0, 3.9 + 0.3 + 2 * 0.2])
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_series_of_one_backbone_have_their_own_marker_and_a_single_point_no_line(tmp_path, monkeypatch):
    """λ series per lr: lr=0.01 (two λ, a line, square markers, tab:blue) and lr=0.02 (one λ: a point with no
    line to nowhere, diamonds, tab:orange)."""
    trials = [("a", 1e-3, 0.01, 1, 4, "completed", A, 0.40), ("b", 4e-3, 0.01, 1, 4, "completed", A, 0.45),
              ("c", 1e-3, 0.02, 1, 4, "completed", A, 0.50)]
    fig, _, m = _draw(tmp_path, monkeypatch, trials, [LAMBDA])
    lam = _panel(fig, "lambda_adv")
    got = {c.get_label(): (line.get_marker(), line.get_linestyle(), _hex(line.get_color()), list(line.get_ydata()))
           for c, line in _means(lam)}
    assert got == {"lr=0.01: one seed each, no interval": ("s", "-", BLUE, [100 * m["a"], 100 * m["b"]]),
                   "lr=0.02: one seed each, no interval": ("D", "None", ORANGE, [100 * m["c"]])}
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_each_lambda_aux_series_and_its_control_keep_one_colour(tmp_path, monkeypatch):
    """λ {0, 0.001, 0.01} × λ_aux {0.0002, 0.002}: the second λ_aux series and its λ = 0 control are both
    tab:orange (the colours are counted over the series, not over the controls' own keys)."""
    trials = [(f"l{lam}a{k}", lam, 0.01, 1, 4, "completed", A, 0.3 + 10 * lam + 0.05 * k)
              for lam in (0.0, 0.001, 0.01) for k in (0, 1)]
    aux = {name: (0.0002, 0.002)[int(name[-1])] for name, *_ in trials}
    fig, _, _ = _draw(tmp_path, monkeypatch, trials, [LAMBDA], extra=aux, extra_name="adapt.lambda_adv_aux")
    lam = _panel(fig, "lambda_adv")
    means = {c.get_label(): _hex(line.get_color()) for c, line in _means(lam)}
    assert means == {"λ_aux=0.0002 lr=0.01: one seed each, no interval": BLUE,
                     "λ_aux=0.002 lr=0.01: one seed each, no interval": ORANGE}
    controls = {label: _hex(line.get_color()) for label, line in _hlines(lam).items()}
    assert controls == {"λ_aux=0.0002 lr=0.01: λ = 0 control (n=1)": BLUE,
                        "λ_aux=0.002 lr=0.01: λ = 0 control (n=1)": ORANGE}
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_study_of_lambda_alone_names_no_other_parameter(tmp_path, monkeypatch):
    """Only λ searched (lr not in the trials' parameters): the series and the control are labelled without an
    empty "…: " in front."""
    trials = [("a", 1e-3, 0.01, 1, 4, "completed", A, 0.40), ("b", 4e-3, 0.01, 1, 4, "completed", A, 0.45),
              ("z", 0.0, 0.01, 1, 4, "completed", A, 0.30)]

    def lambda_only(data):
        return replace(data, trials=tuple(replace(t, params={k: v for k, v in t.params.items() if k != LR})
                                          for t in data.trials))

    fig, _, _ = _draw(tmp_path, monkeypatch, trials, [LAMBDA], edit=lambda_only)
    assert sorted(_legend(fig)) == ["each completed trial", "one seed each, no interval", "λ = 0 control (n=1)"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_means_not_joined_name_every_parameter_that_differs(tmp_path, monkeypatch):
    """λ, lr and EXTRA all change from configuration to configuration: the legend names both others
    ("differ"), and the means are unjoined squares in the backbone's colour."""
    trials = [("a", 1e-3, 0.01, 1, 4, "completed", A, 0.40), ("b", 4e-3, 0.02, 1, 4, "completed", A, 0.45)]
    fig, _, _ = _draw(tmp_path, monkeypatch, trials, [LAMBDA], extra={"a": "x", "b": "y"})
    ((container, line),) = _means(_panel(fig, "lambda_adv"))
    assert container.get_label() == "one seed each, no interval (not joined: lr, train.extra differ)"
    assert line.get_linestyle() == "None" and line.get_marker() == "s" and _hex(line.get_color()) == BLUE
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("count, joined", [(6, True), (7, False)])
def test_more_than_six_series_are_drawn_unjoined(tmp_path, monkeypatch, count, joined):
    """Six lr series of two λ each are six lines; a seventh makes a legend nobody can read: unjoined means."""
    lrs = [0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035][:count]
    trials = [(f"l{lam}r{lr}", lam, lr, 1, 4, "completed", A, 0.3 + lam * 10 + lr) for lam in (1e-3, 4e-3)
              for lr in lrs]
    constant = None if joined else {name: "a" for name, *_ in trials}  # the same everywhere: not named as differing
    fig, _, _ = _draw(tmp_path, monkeypatch, trials, [LAMBDA], extra=constant)
    means = _means(_panel(fig, "lambda_adv"))
    if joined:  # one colour and one marker per series, in the order of their lr
        got = [(c.get_label().split(":")[0], line.get_marker(), _hex(line.get_color()), line.get_linestyle())
               for c, line in sorted(means, key=lambda cl: cl[0].get_label().split(":")[0])]
        assert got == [("lr=0.005", "s", BLUE, "-"), ("lr=0.01", "D", ORANGE, "-"), ("lr=0.015", "^", GREEN, "-"),
                       ("lr=0.02", "v", "#9467bd", "-"), ("lr=0.025", "P", "#8c564b", "-"),
                       ("lr=0.03", "*", "#e377c2", "-")]
    else:
        ((container, line),) = means
        assert line.get_linestyle() == "None"
        assert container.get_label() == "one seed each, no interval (not joined: lr differs)"
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_nine_backbones_take_the_eight_colours_in_turn(tmp_path, monkeypatch):
    """Backbones sorted by name take tab:blue … tab:cyan; a ninth starts again at tab:blue (not an error)."""
    trials = [(f"g{k}", 1e-3, 0.01, 1, 4, "completed", A, 0.3 + 0.01 * k) for k in range(1, 10)]

    def nine(data):
        return replace(data, trials=tuple(replace(t, params={**t.params, MODEL: "g" + t.name.rsplit("_g", 1)[1]})
                                          for t in data.trials))

    fig, _, _ = _draw(tmp_path, monkeypatch, trials, [LAMBDA], edit=nine)
    dots = _scatters(_panel(fig, "lambda_adv"))
    got = {label.split(":")[0]: _hex(c.get_facecolor()[0]) for label, c in dots.items()}
    nine_colours = {"g1": BLUE, "g2": ORANGE, "g3": GREEN, "g4": "#9467bd", "g5": "#8c564b", "g6": "#e377c2",
                    "g7": "#bcbd22", "g8": "#17becf", "g9": BLUE}
    assert got == nine_colours
    means = {c.get_label().split(":")[0]: _hex(line.get_color()) for c, line in _means(_panel(fig, "lambda_adv"))}
    assert means == nine_colours  # one configuration each: unjoined, in the backbone's colour
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_text_sizes_grid_and_the_legend_strip(tmp_path, monkeypatch):
    """A 10-pt title, an 8-pt legend centred below the panels in a strip of its own (no tick label reaches into
    it), the category names rotated 20° in 8 pt, a light grid; nothing drawn outside the figure."""
    fig, _, _ = _draw(tmp_path, monkeypatch, TWO, [LAMBDA, LR, MODEL, EXTRA, SEED], extra=TWO_EXTRA)
    assert _suptitle(fig).get_fontsize() == 10
    legend = fig.legends[0]
    assert [t.get_fontsize() for t in legend.get_texts()] == [8] * 7
    fig.canvas.draw()
    box = legend.get_window_extent(fig.canvas.get_renderer())  # "lower center": centred, below every panel
    assert (box.x0 + box.x1) / 2 == pytest.approx(fig.bbox.width / 2, abs=2)
    assert box.y1 <= min(ax.get_window_extent().y0 for ax in fig.axes if ax.axison)
    renderer = fig.canvas.get_renderer()
    dpi = fig.dpi
    for ax in fig.axes[:4]:
        box = ax.get_tightbbox(renderer)
        if ax in fig.axes[3:6]:  # the lower row: just above the 1.1-inch strip (0.3 + 4 rows of 0.2), no gap
            assert 1.1 - 1e-6 <= box.y0 / dpi <= 1.1 + 0.3, ax.get_xlabel()
        assert box.x1 / dpi <= 14.4 + 1e-6 and box.y1 / dpi <= 8.9 + 1e-6, ax.get_xlabel()
        grid = ax.xaxis.get_gridlines()
        assert grid and all(line.get_alpha() == 0.3 and line.get_visible() for line in grid)
    model = _panel(fig, "backbone")
    assert [(t.get_rotation(), t.get_fontsize()) for t in model.get_xticklabels()] == [(20, 8), (20, 8)]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_panel_with_nothing_to_show_has_no_legend_and_a_thin_strip(tmp_path, monkeypatch):
    """EXTRA searched but absent from every trial, no baseline: no legend (nothing to label) and only the
    0.3-inch margin below the panel."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty category axis: identical x limits
        fig, _, _ = _draw(tmp_path, monkeypatch, MIXED[:3], [EXTRA])
    assert fig.legends == [] and _legend(fig) == []
    assert list(fig.get_size_inches()) == pytest.approx([7.0, 3.9 + 0.3])
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_zero_on_a_linear_axis_is_a_point(tmp_path, monkeypatch):
    """EXTRA {0, 0.01, 0.012} on a space without a log flag: a linear axis (a zero is no log value and EXTRA is no
    λ), and the EXTRA = 0 trial a point at x = 0, not left out."""
    trials = [(n, 1e-3, 0.01, 1, 4, "completed", A, q) for n, q in (("a", 0.40), ("b", 0.45), ("c", 0.47))]
    fig, _, m = _draw(tmp_path, monkeypatch, trials, [EXTRA], space={}, extra={"a": 0.0, "b": 0.01, "c": 0.012})
    ax = _panel(fig, "train.extra")
    assert ax.get_xlabel() == "train.extra" and ax.get_xscale() == "linear"
    assert _points(_scatters(ax)["each completed trial"]) == _expected(
        [(0.0, 100 * m["a"]), (0.01, 100 * m["b"]), (0.012, 100 * m["c"])])
    ((container, line),) = _means(ax)  # the zero is on the line too
    assert list(line.get_xdata()) == [0.0, 0.01, 0.012] and line.get_linestyle() == "-"
    assert container.get_label() == "λ=0.001 lr=0.01: one seed each, no interval"
    assert _hlines(ax) == {}  # a zero on a linear axis is no λ = 0 control line
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_few_lambda_values_are_the_ticks_of_the_log_axis(tmp_path, monkeypatch):
    """λ {0, 0.001, 0.01}: the ticks are the two positive values written as they are, the axis padded by
    10^0.08 either side (so no point sits on the frame); the zero is no tick."""
    trials = [("a", 1e-3, 0.01, 1, 4, "completed", A, 0.40), ("b", 1e-2, 0.01, 1, 4, "completed", A, 0.45),
              ("z", 0.0, 0.01, 1, 4, "completed", A, 0.30)]
    fig, _, _ = _draw(tmp_path, monkeypatch, trials, [LAMBDA])
    ax = _panel(fig, "lambda_adv")
    assert ax.get_xscale() == "log"
    assert list(ax.xaxis.get_major_locator().locs) == [1e-3, 1e-2]
    pad = 10 ** 0.08
    assert ax.get_xlim() == pytest.approx((1e-3 / pad, 1e-2 * pad))
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.01"]
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------ the helpers, called directly


def _ax():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots()


def test_log_ticks_of_up_to_six_values_are_those_values(monkeypatch):
    """Six values: ticks at exactly those values, labelled "{v:g}", rotated 35° in 8 pt, padded by
    (high/low)^0.08; one value: padded by a factor 2 either side; no minor labels."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter

    import study.report.figures as figures

    fig, ax = _ax()
    values = [0.002, 0.001, 0.004, 0.008, 0.016, 0.032, 0.004, 0.0, -1.0]
    figures._log_ticks(ax, values)
    assert ax.get_xscale() == "log"
    locator = ax.xaxis.get_major_locator()
    assert isinstance(locator, FixedLocator) and list(locator.locs) == [0.001, 0.002, 0.004, 0.008, 0.016, 0.032]
    formatter = ax.xaxis.get_major_formatter()
    assert [formatter(v, 0) for v in (0.001, 0.25, 3e-05)] == ["0.001", "0.25", "3e-05"]
    assert isinstance(ax.xaxis.get_minor_formatter(), NullFormatter)
    assert ax.get_xlim() == pytest.approx((0.001 / 32 ** 0.08, 0.032 * 32 ** 0.08))
    fig.canvas.draw()
    label = ax.get_xticklabels()[0]
    assert label.get_rotation() == 35 and label.get_fontsize() == 8
    assert {(t.get_rotation(), t.get_fontsize()) for t in ax.get_yticklabels()} == {(0, 10)}  # only x is rotated
    plt.close(fig)
    fig, ax = _ax()
    figures._log_ticks(ax, [0.01])
    assert list(ax.xaxis.get_major_locator().locs) == [0.01]
    assert ax.get_xlim() == pytest.approx((0.005, 0.02))
    plt.close(fig)


def test_log_ticks_of_many_values_in_under_three_decades_are_1_2_5(monkeypatch):
    """Seven values spanning 999x: 1-2-5 ticks in "{v:g}", rotated; a lone decade label would leave the axis
    unreadable."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, LogLocator

    import study.report.figures as figures

    fig, ax = _ax()
    figures._log_ticks(ax, [0.001, 0.002, 0.004, 0.008, 0.016, 0.1, 0.999])
    locator = ax.xaxis.get_major_locator()
    assert isinstance(locator, LogLocator) and not isinstance(locator, FixedLocator)
    ticks = [float(f"{v:.3g}") for v in locator.tick_values(0.001, 0.999) if 0.001 <= v <= 1.0]
    assert ticks == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5] and locator.numticks == 12
    assert ax.xaxis.get_major_formatter()(0.002, 0) == "0.002"
    fig.canvas.draw()
    label = [t for t in ax.get_xticklabels() if t.get_text()][0]
    assert label.get_rotation() == 35 and label.get_fontsize() == 8
    assert {(t.get_rotation(), t.get_fontsize()) for t in ax.get_yticklabels()} == {(0, 10)}  # only x is rotated
    plt.close(fig)


@pytest.mark.parametrize("values", [[0.001, 0.002, 0.004, 0.008, 0.016, 0.1, 1.0], []])
def test_log_ticks_over_three_decades_or_more_are_one_per_decade(monkeypatch, values):
    """Seven values spanning exactly 1000x (or none): one tick per decade in scientific notation, unrotated."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

    import study.report.figures as figures

    fig, ax = _ax()
    figures._log_ticks(ax, values)
    locator = ax.xaxis.get_major_locator()
    assert type(locator) is LogLocator
    ticks = [float(f"{v:.3g}") for v in locator.tick_values(0.001, 1.0) if 0.001 <= v <= 1.0]
    assert ticks == [0.001, 0.01, 0.1, 1.0] and locator.numticks == 8  # one per decade, base 10
    assert type(ax.xaxis.get_major_formatter()) is LogFormatterSciNotation
    assert isinstance(ax.xaxis.get_minor_formatter(), NullFormatter)
    fig.canvas.draw()
    label = [t for t in ax.get_xticklabels() if t.get_text()][0]
    assert label.get_rotation() == 0
    plt.close(fig)


def _config(mean: float, n: int, ci95: float, **params) -> ConfigAggregate:
    return ConfigAggregate(params=params, trials=(), score=Stats(mean, 0.0, n, ci95), group="completed")


def test_means_draw_intervals_only_where_there_are_replicates(monkeypatch):
    """Error bars 100 x ci95 where n ≥ 2 and the interval is finite, none for one seed; 6.5-pt markers with a
    0.6-pt black edge, caps, a 1.2-pt line when joined, over the trials (zorder 3)."""
    import matplotlib.pyplot as plt

    import study.report.figures as figures

    fig, ax = _ax()
    configs = [_config(0.40, 3, 0.02), _config(0.50, 1, math.nan), _config(0.45, 2, math.nan), _config(0.42, 2, 0.01)]
    figures._means(ax, [1.0, 2.0, 3.0, 4.0], configs, "tab:green", "D", line=True, label="L")
    ((container, line),) = _means(ax)
    assert container.has_yerr and not container.has_xerr and container.get_label() == "L"
    assert list(line.get_xdata()) == [1.0, 2.0, 3.0, 4.0]
    assert list(line.get_ydata()) == pytest.approx([40, 50, 45, 42])
    segments = container.lines[2][0].get_segments()
    halves = [(seg[1][1] - seg[0][1]) / 2 for seg in segments]
    assert halves == pytest.approx([2.0, 0.0, 0.0, 1.0])
    assert line.get_linestyle() == "-" and line.get_marker() == "D" and line.get_linewidth() == 1.2
    assert line.get_markersize() == 6.5 and line.get_markeredgewidth() == 0.6
    assert _hex(line.get_markeredgecolor()) == "#000000" and _hex(line.get_color()) == GREEN
    assert line.get_zorder() == pytest.approx(3.1)  # errorbar draws its line 0.1 above the zorder asked for
    caps = container.lines[1]
    assert caps and caps[0].get_markersize() == 6  # capsize 3: caps 6 points wide
    plt.close(fig)


@pytest.mark.parametrize("count, size, edge", [(40, 6.5, 0.6), (41, 3.5, 0.25)])
def test_means_of_hundreds_of_configurations_are_smaller(monkeypatch, count, size, edge):
    """Up to 40 configurations: 6.5-pt markers with a 0.6-pt edge; more: 3.5 pt and 0.25 pt (else a blot). One
    seed each: no error bars at all, and unjoined when not asked."""
    import matplotlib.pyplot as plt

    import study.report.figures as figures

    fig, ax = _ax()
    configs = [_config(0.3 + 0.001 * k, 1, math.nan) for k in range(count)]
    figures._means(ax, [float(k) for k in range(count)], configs, "tab:blue", "s", line=False, label="L")
    ((container, line),) = _means(ax)
    assert line.get_markersize() == size and line.get_markeredgewidth() == edge
    assert not container.has_yerr and line.get_linestyle() == "None" and line.get_marker() == "s"
    plt.close(fig)


@pytest.mark.parametrize("ns, text", [
    ([], "one seed each, no interval"),
    ([1, 1], "one seed each, no interval"),
    ([2], "mean ± 95 % t-interval, n = 2"),
    ([3, 3, 3], "mean ± 95 % t-interval, n = 3"),
    ([3, 1, 2, 1], "mean ± 95 % t-interval where n ≥ 2 (n = 1–3)"),
    ([2, 4], "mean ± 95 % t-interval where n ≥ 2 (n = 2–4)"),
])
def test_interval_text_says_what_the_error_bars_are(ns, text):
    """The legend's wording follows the replicate counts: an interval promised for single seeds is a lie."""
    import study.report.figures as figures

    assert figures._interval_text(ns) == text


@pytest.mark.parametrize("name, values, space, log", [
    ("lr", [1.0, 2.0], {"lr": [{"type": "float"}, {"log": True}]}, True),  # the space says so
    ("lr", [1.0, 2.0], {"lr": [{"log": False}, "x"]}, False),
    ("lr", [1.0, 20.0], {}, True),  # 20x: wide enough for a log axis
    ("lr", [1.0, 19.9], {}, False),
    ("lr", [0.01, 0.5], {}, True),  # 50x (a ratio, not a product)
    ("lr", [20.0, 1.0, "a", None], {"other": [{"log": True}]}, True),
    ("lr", [0.0, 1.0, 100.0], {}, False),  # a zero has no place on a log axis of lr
    ("adapt.lambda_adv_main", [0.0, 1e-3, 2e-3], {}, True),  # λ = 0: the control line, the rest on a log axis
    ("adapt.lambda_adv_main", [1e-3, 2e-3], {}, True),
    ("adapt.lambda_adv_main", [0.0, 0.0], {}, False),  # nothing positive
    ("adapt.lambda_adv_main", [-1e-3, 1e-3, 2e-3], {}, False),  # a negative value: linear
    ("lr", [], {}, False),
    ("lr", ["a", "b"], {}, False),
    ("lr", [True, 50.0], {}, False),  # a bool is no number: one value left
])
def test_log_scale_decisions(name, values, space, log):
    """Log axis only where the space says so, for λ, or over a ratio of 20 or more of positive values."""
    import study.report.figures as figures

    assert figures._log_scale(name, values, space) is log


def test_space_dimensions_read_space_json_or_nothing(tmp_path):
    """The dimensions of space.json; a missing, broken or odd file gives none (the figure still draws)."""
    import study.report.figures as figures

    assert figures._space_dimensions(tmp_path) == {}
    (tmp_path / "space.json").write_text(json.dumps({"dimensions": {"x": [{"log": True}]}}))
    assert figures._space_dimensions(tmp_path) == {"x": [{"log": True}]}
    for text in ("{not json", json.dumps({"dimensions": [1, 2]}), json.dumps([1, 2]), json.dumps({"name": "s"})):
        (tmp_path / "space.json").write_text(text)
        assert figures._space_dimensions(tmp_path) == {}, text


def test_group_of_is_the_searched_backbone_else_the_base_one(tmp_path):
    """The colour group: the trial's model.name, else the study's base model, else "runs"."""
    import study.report.figures as figures

    data = load_study(make_study(tmp_path, trials=[("a", 1e-3, 0.01, 1, 4, "completed", A, 0.4),
                                                   ("b", 1e-3, 0.01, 2, 4, "completed", A, 0.4)], baseline=False))
    trial = data.trials[0]
    assert figures._group_of(data, trial) == A
    bare = replace(trial, params={LAMBDA: 1e-3})
    assert figures._group_of(replace(data, model="deeplabv2_resnet101"), bare) == "deeplabv2_resnet101"
    assert figures._group_of(replace(data, model=None), bare) == "runs"


def test_series_are_keyed_by_the_other_parameters_without_seed_and_backbone():
    """Configurations that differ only in the panel's parameter share a key "λ=… lr=…" (sorted names, seed and
    backbone left out); a parameter without a symbol keeps its name."""
    import study.report.figures as figures

    one = _config(0.4, 1, math.nan, **{LAMBDA: 1e-3, LR: 0.01, EXTRA: "a", MODEL: A, SEED: 1})
    two = _config(0.4, 1, math.nan, **{LAMBDA: 2e-3, LR: 0.01, EXTRA: "a", MODEL: B, SEED: 2})
    three = _config(0.4, 1, math.nan, **{LAMBDA: 2e-3, LR: 0.02, EXTRA: "a"})
    assert figures._series([one, two, three], LAMBDA) == {"lr=0.01 train.extra=a": [one, two],
                                                          "lr=0.02 train.extra=a": [three]}
    assert figures._series([one, three], LR) == {"λ=0.001 train.extra=a": [one], "λ=0.002 train.extra=a": [three]}
    assert figures._values_text({MODEL: A, LR: 0.0125, LAMBDA: 0.0}, [MODEL, LR, LAMBDA, "absent"]) == \
        "deeplabv2_tiny lr=0.0125 λ=0"

"""Every artist of the report's learning-curve, per-class and importance figures, written out as text and compared
with tests/study/golden/figures/: what each line, marker, band, bar, label and axis shows and how it is styled
(colour, width, dash, size, alpha), for two fixture studies (7 trials; 30 trials, where the curves become two line
collections). The targeted tests in test_figures.py say why each property matters; these catch any other change.

After an intended change to a figure, regenerate with ``python tests/study/test_figures_golden.py`` and read the
diff of the golden files before committing them."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import GOLDEN, TRIALS, make_study  # noqa: E402

GOLDEN_DIR = Path(__file__).parent / "golden" / "figures"
STUDIES = {"fixture": dict(trials=TRIALS, baseline=True), "paper": GOLDEN["report_paper.md"]}  # 7 and 30 trials
FIGURES = ("learning_curves", "per_class_iou", "importance")


def _num(value) -> str:
    return f"{float(value):.5g}"


def _nums(values) -> str:
    return "[" + " ".join(_num(v) for v in np.asarray(values, dtype=float).ravel()) + "]"


def _colour(value) -> str:
    import matplotlib.colors as mcolors

    colours = np.atleast_2d(mcolors.to_rgba_array(value))
    return "[" + " ".join(mcolors.to_hex(c, keep_alpha=True) for c in colours) + "]"


def _marker(collection) -> str:
    """The marker a scatter draws, recognised from its path (matplotlib keeps the path, not the marker's name)."""
    from matplotlib.markers import MarkerStyle

    path = collection.get_paths()[0]
    for name in ("o", "x", "s", "D", "^", "v", "P", "*", "+", "."):
        style = MarkerStyle(name)
        ref = style.get_path().transformed(style.get_transform())
        if path.vertices.shape == ref.vertices.shape and np.allclose(path.vertices, ref.vertices):
            return name
    return "other"


def _label(artist) -> str:
    label = artist.get_label()
    return "_" if label.startswith("_") else repr(label)  # matplotlib's own "_childN" names count artists


def _text(t) -> str:
    return f"{t.get_text()!r} size={_num(t.get_fontsize())} rot={_num(t.get_rotation())} colour={_colour(t.get_color())}"


def describe(fig) -> list[str]:
    """The figure as lines of text: sizes, titles, axes, ticks, lines, collections, patches, legends."""
    from matplotlib.collections import LineCollection, PathCollection, PolyCollection

    fig.canvas.draw()
    out = [f"figure {_nums(fig.get_size_inches())}"]
    for text in fig.texts:
        out.append(f"figure text {_text(text)}")
    for legend in fig.legends:
        out += [f"figure legend {_text(t)}" for t in legend.get_texts()]
    for k, ax in enumerate(fig.axes):
        out.append(f"axes {k} on={ax.axison} title={_text(ax.title)}")
        out.append(f"  x {ax.get_xscale()} {ax.get_xlabel()!r} y {ax.get_yscale()} {ax.get_ylabel()!r}")
        for axis_name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            grid = [line for line in axis.get_gridlines() if line.get_visible()]
            if grid:
                out.append(f"  {axis_name} grid alpha={_num(grid[0].get_alpha())}")
            labels = [t for t in axis.get_ticklabels() if t.get_text()]
            if labels:
                out.append(f"  {axis_name} ticks " + " | ".join(_text(t) for t in labels))
        for line in ax.get_lines():
            out.append(f"  line {_label(line)} colour={_colour(line.get_color())} ls={line.get_linestyle()} "
                       f"lw={_num(line.get_linewidth())} marker={line.get_marker()} ms={_num(line.get_markersize())} "
                       f"mec={_colour(line.get_markeredgecolor())} mew={_num(line.get_markeredgewidth())} "
                       f"alpha={line.get_alpha()} z={_num(line.get_zorder())}")
            out.append(f"    x={_nums(line.get_xdata())} y={_nums(line.get_ydata())}")
        for c in ax.collections:
            kind = type(c).__name__
            out.append(f"  {kind} {_label(c)} face={_colour(c.get_facecolor())} edge={_colour(c.get_edgecolor())} "
                       f"lw={_nums(c.get_linewidths())} alpha={c.get_alpha()} z={_num(c.get_zorder())}")
            if isinstance(c, PathCollection):
                out.append(f"    marker={_marker(c)} sizes={_nums(c.get_sizes())} offsets={_nums(c.get_offsets())}")
            elif isinstance(c, LineCollection):
                styles = ["solid" if dashes is None else f"dashes {_nums(dashes)}" for _, dashes in c.get_linestyles()]
                out.append(f"    styles={styles}")
                out += [f"    segment {_nums(seg)}" for seg in c.get_segments()]
            elif isinstance(c, PolyCollection):
                out += [f"    path {_nums(p.vertices)}" for p in c.get_paths()]
        for p in ax.patches:
            box = p.get_bbox()
            out.append(f"  patch {type(p).__name__} {_label(p)} face={_colour(p.get_facecolor())} "
                       f"box={_nums([box.x0, box.y0, box.x1, box.y1])}")
        for child in ax.child_axes:
            labels = [t for t in child.xaxis.get_ticklabels() if t.get_text()]
            out.append(f"  top axis ticks {_nums([t.get_position()[0] for t in labels])} "
                       + " | ".join(_text(t) for t in labels))
        legend = ax.get_legend()
        if legend is not None:
            out += [f"  legend {_text(t)}" for t in legend.get_texts()]
    return out


def _figures(root: Path, study: str) -> dict[str, list[str]]:
    """Each figure of the study's report, described (drawn by the report's own code path, not saved)."""
    import matplotlib

    import study.report.figures as figures
    from study.report import write_report

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    study_dir = make_study(root, name=study, **STUDIES[study])
    kept: dict[str, list[str]] = {}
    original = figures.save_figure

    def keep(fig, path):
        kept[Path(path).stem] = describe(fig)
        plt.close(fig)
        return path

    figures.save_figure = keep
    try:
        write_report(study_dir)
    finally:
        figures.save_figure = original
    return {name: kept[name] for name in FIGURES if name in kept}


@pytest.mark.parametrize("study", STUDIES)
def test_every_artist_of_the_figures_as_before(study, tmp_path):
    got = _figures(tmp_path, study)
    assert sorted(got) == sorted(p.stem.split("_", 1)[1] for p in GOLDEN_DIR.glob(f"{study}_*.txt"))
    for name, lines in got.items():
        expected = (GOLDEN_DIR / f"{study}_{name}.txt").read_text().splitlines()
        assert lines == expected, f"{study}_{name}.txt"


if __name__ == "__main__":  # regenerate the golden files
    import tempfile

    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for study in STUDIES:
        with tempfile.TemporaryDirectory() as tmp:
            for name, lines in _figures(Path(tmp), study).items():
                (GOLDEN_DIR / f"{study}_{name}.txt").write_text("\n".join(lines) + "\n")

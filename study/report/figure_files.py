"""How every report figure is written: a PNG at :data:`DPI` dpi (for report.md) and a vector PDF beside it (for
LaTeX), both without version or date stamps, so that a regenerated figure is byte-identical."""
from __future__ import annotations

from pathlib import Path

__all__ = ["DPI", "save_figure"]

DPI = 200  # PNG resolution: a column-wide figure (3.3 in) keeps ~650 pixels, enough for print
_PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}  # no version or clock in the file


def save_figure(fig, path: Path) -> Path:
    """``path`` (PNG, :data:`DPI` dpi) and the same figure as ``path.with_suffix('.pdf')``; closes ``fig``."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    # "Software" would stamp the matplotlib version; the Agg PNG writer adds no date of its own.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    fig.savefig(path.with_suffix(".pdf"), metadata=_PDF_METADATA)
    plt.close(fig)
    return path

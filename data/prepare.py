"""``dastudy data prepare``: one-off conversion of SYNTHIA's 16-bit labels to 8-bit trainId PNGs.

Decoding a 16-bit SYNTHIA label with pypng takes 0.1-1.3 s (pure Python; depends on the PNG filters used), far
too slow to repeat every epoch. This converts ``GT/LABELS/NNNNNNN.png`` once into ``GT/LABELS_TRAINID/NNNNNNN.png``
(8-bit greyscale, 19-space Cityscapes trainIds, 255 = ignore) next to the originals, which are only read. The
readers use the converted files automatically once ``GT/LABELS_TRAINID/prepared.json`` exists; that marker is
written last, so an interrupted conversion is never used (rerun with ``existing="skip"`` to finish it).
Following DAFormer's offline converter (``tools/convert_datasets/synthia.py``), done once per dataset copy.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import labels as L
from .io import DatasetError, read_synthia_label, write_image
from .layouts import PREPARED_LABEL_DIR, PREPARED_MARKER

__all__ = ["prepare_synthia", "PrepareResult", "EXISTING_POLICIES"]

EXISTING_POLICIES = ("error", "skip", "overwrite")


@dataclass(frozen=True)
class PrepareResult:
    root: Path
    out_dir: Path
    written: int
    skipped: int
    seconds: float


def _convert_one(source: Path, target: Path) -> str | None:
    """Convert one label; returns an error message instead of raising (runs in worker processes)."""
    try:
        ids = read_synthia_label(source)
        write_image(target, L.synthia_lut(19)[np.minimum(ids, 255).astype(np.uint8)])
        return None
    except DatasetError as err:
        return str(err)


def prepare_synthia(root: str | Path, *, existing: str = "error", workers: int | None = None,
                    progress: bool = False) -> PrepareResult:
    """Convert every ``ROOT/GT/LABELS/*.png`` to ``ROOT/GT/LABELS_TRAINID/*.png``.

    Args:
        root: the SYNTHIA-RAND-CITYSCAPES folder.
        existing: what to do with converted files that already exist: ``"error"`` (refuse, the default),
            ``"skip"`` (keep them; resumes an interrupted run) or ``"overwrite"``.
        workers: processes to decode with (default: all CPUs; 0 or 1 = in this process).
        progress: show a progress bar with ETA.

    Raises:
        DatasetError: missing folders, or labels that cannot be decoded (all listed; no marker is written).
        FileExistsError: converted files exist and ``existing="error"``.
    """
    if existing not in EXISTING_POLICIES:
        raise ValueError(f"existing = {existing!r}; allowed: {' | '.join(EXISTING_POLICIES)}")
    root = Path(root)
    labels_dir, out_dir = root / "GT" / "LABELS", root / PREPARED_LABEL_DIR
    if not labels_dir.is_dir():
        raise DatasetError(f"{labels_dir}: missing folder; expected the SYNTHIA layout GT/LABELS/NNNNNNN.png")
    sources = sorted(labels_dir.glob("*.png"))
    if not sources:
        raise DatasetError(f"{labels_dir}: holds no *.png label files")
    start = time.perf_counter()
    present = {p.name for p in out_dir.glob("*.png")} if out_dir.is_dir() else set()
    clash = [s for s in sources if s.name in present]
    if clash and existing == "error":
        raise FileExistsError(f"{out_dir}: {len(clash)} converted label(s) already exist (e.g. {clash[0].name}); "
                              "nothing was written. Use --skip-existing to finish an interrupted conversion, or "
                              "--overwrite to convert again")
    todo = [s for s in sources if existing == "overwrite" or s.name not in present]
    out_dir.mkdir(exist_ok=True)
    marker = out_dir / PREPARED_MARKER
    jobs = [(s, out_dir / s.name) for s in todo]
    if workers is None:
        workers = os.cpu_count() or 1
    errors = _run(jobs, workers, progress)
    if errors:
        shown = "\n  ".join(errors[:10])
        raise DatasetError(f"{len(errors)} of {len(sources)} SYNTHIA labels could not be converted "
                           f"(no {PREPARED_MARKER} written):\n  {shown}")
    marker.write_text(json.dumps({
        "source": "GT/LABELS (16-bit, class id in channel 0)", "format": "8-bit greyscale PNG",
        "classes": "Cityscapes trainIds 0-18, 255 = ignore", "mapping": {str(k): v for k, v in L.SYNTHIA_ID_TO_TRAINID.items()},
        "files": len(sources), "version": 1}, indent=1) + "\n")
    return PrepareResult(root, out_dir, len(jobs), len(sources) - len(jobs), time.perf_counter() - start)


def _run(jobs: list[tuple[Path, Path]], workers: int, progress: bool) -> list[str]:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="converting SYNTHIA labels", unit="file")
    errors: list[str] = []
    try:
        if workers <= 1 or len(jobs) < 2:
            results = (_convert_one(s, t) for s, t in jobs)
            for message in results:
                errors += [message] if message else []
                bar and bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for message in pool.map(_convert_one, *zip(*jobs), chunksize=8):
                    errors += [message] if message else []
                    bar and bar.update()
    finally:
        if bar is not None:
            bar.close()
    return errors

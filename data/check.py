"""``dastudy data check``: verify a dataset folder before spending GPU hours on it.

:func:`check_dataset` looks at the layout, counts images per split against the expected numbers (published counts
for the real datasets; ``manifest.json`` for the synthetic benchmark), pairs every image with its label, decodes a
sample of labels and images (all with ``full=True``), and builds a class histogram. It collects *every* problem
(each names the path and what was expected) instead of stopping at the first, and it never writes anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import labels as L
from .io import DatasetError, read_image, read_label, read_synthia_label
from .layouts import (CITYSCAPES_CITY_GROUPS, PREPARED_LABEL_DIR, PREPARED_MARKER, SYNTHIA_STANDARD_SPLITS,
                      cityscapes_label_path, read_split_list)

__all__ = ["check_dataset", "CheckReport", "SplitCount", "PUBLISHED_COUNTS", "SAMPLE_SIZE"]

# Published image counts (Cityscapes gtFine; SYNTHIA-RAND-CITYSCAPES with the MaxSquareLoss split lists;
# GTA5 "Playing for Data", all images).
PUBLISHED_COUNTS = {"cityscapes": {"train": 2975, "val": 500}, "synthia": {"train": 9000, "val": 400},
                    "gta5": {"all": 24966}}
SAMPLE_SIZE = 20  # label maps decoded per split without --full


@dataclass(frozen=True)
class SplitCount:
    split: str
    found: int
    expected: int | None
    basis: str  # where the expectation comes from: "published", "manifest.json" or "-"


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`. ``ok`` is True when no problem was found."""

    root: Path
    dataset: str
    full: bool
    counts: list[SplitCount] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)  # split → pixels per trainId (+ ignore at 19)
    labels_decoded: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def histogram(self) -> np.ndarray:
        """Pixels per trainId (19 entries) and ignored pixels (index 19), over all checked splits."""
        total = np.zeros(20, dtype=np.int64)
        for counts in self.histograms.values():
            total += counts
        return total

    def present_classes(self) -> list[str]:
        hist = self.histogram()
        return [name for i, name in enumerate(L.CITYSCAPES_CLASSES) if hist[i] > 0]

    def format(self, *, max_problems: int = 50) -> str:
        """The report as text: counts, class histogram per split, notes and problems. A table with nothing in it
        (no split found, no label decoded: a missing root) is left out rather than printed empty."""
        lines = [f"dataset {self.dataset} at {self.root} ({'all files' if self.full else 'sampled'} decoding)", ""]
        if self.counts:
            lines.append(f"{'split':<14}{'found':>8}{'expected':>10}  basis")
            for c in self.counts:
                mark = "" if c.expected is None or c.found == c.expected else "   <-- mismatch"
                lines.append(f"{c.split:<14}{c.found:>8}{'-' if c.expected is None else c.expected:>10}  "
                             f"{c.basis}{mark}")
            lines.append("")
        splits = sorted(self.histograms)
        if self.labels_decoded and splits:
            lines.append(f"class histogram over {self.labels_decoded} decoded label maps (pixels, share of all "
                         "pixels):")
            lines.append(f"{'class':<15}" + "".join(f"{s:>22}" for s in splits))
            totals = {s: max(1, int(self.histograms[s].sum())) for s in splits}
            for index, name in enumerate(list(L.CITYSCAPES_CLASSES) + ["(ignored)"]):
                cells = "".join(f"{int(self.histograms[s][index]):>14} "
                                f"{100 * self.histograms[s][index] / totals[s]:6.2f}%" for s in splits)
                lines.append(f"{name:<15}{cells}")
            lines.append("")
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"  ... and {len(self.problems) - max_problems} more (report.problems holds all)")
        else:
            lines.append("no problems found")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Pair:
    split: str
    image: Path
    label: Path


def _manifest_counts(root: Path, dataset: str) -> dict[str, int] | None:
    """Counts of the synthetic-benchmark domain stored at ``root``, from manifest.json in root or its parent."""
    for folder in (root, root.parent):
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        for domain in (manifest.get("domains") or {}).values():
            if domain.get("dataset") == dataset and (folder / domain.get("path", "")).resolve() == root.resolve():
                return {str(k): int(v) for k, v in domain.get("counts", {}).items()}
    return None


def _sample(pairs: list[_Pair], full: bool) -> list[_Pair]:
    """All pairs, or about SAMPLE_SIZE per split, spread evenly (over cities, ids)."""
    if full:
        return pairs
    chosen = []
    for split in dict.fromkeys(p.split for p in pairs):
        members = [p for p in pairs if p.split == split]
        picks = np.linspace(0, len(members) - 1, min(SAMPLE_SIZE, len(members))).round().astype(int)
        chosen += [members[i] for i in sorted(set(picks.tolist()))]
    return chosen


class _Checker:
    def __init__(self, root: Path, dataset: str, full: bool, progress: bool):
        self.report = CheckReport(root=root, dataset=dataset, full=full)
        self.root, self.progress = root, progress
        manifest = _manifest_counts(root, dataset)
        self.expected, self.basis = (manifest, "manifest.json") if manifest else (PUBLISHED_COUNTS[dataset], "published")

    def problem(self, message: str) -> None:
        self.report.problems.append(message)

    def folder(self, relative: str, what: str) -> bool:
        path = self.root / relative
        if not path.is_dir():
            self.problem(f"{path}: missing folder ({what})")
            return False
        return True

    def count(self, split: str, found: int) -> None:
        expected = self.expected.get(split)
        self.report.counts.append(SplitCount(split, found, expected, self.basis if expected is not None else "-"))
        if expected is not None and found != expected:
            self.problem(f"{self.root}: split {split!r} has {found} images, expected {expected} ({self.basis})")

    def pairs_exist(self, pairs: list[_Pair]) -> list[_Pair]:
        good = []
        for pair in pairs:
            missing = [p for p in (pair.image, pair.label) if not p.is_file()]
            for path in missing:
                kind = "image" if path == pair.image else f"label for image {pair.image.name}"
                self.problem(f"{path}: missing {kind}")
            if not missing:
                good.append(pair)
        return good

    def decode(self, pairs: list[_Pair], read_ids, lut: np.ndarray, valid_ids, size_mismatch_is_problem=True):
        chosen = _sample(pairs, self.report.full)
        if self.progress and len(chosen) > SAMPLE_SIZE:
            from tqdm import tqdm

            chosen = tqdm(chosen, desc=f"decoding {self.report.dataset}", unit="file")
        unexpected: dict[int, Path] = {}
        for pair in chosen:
            try:
                ids = read_ids(pair.label)
            except DatasetError as err:
                self.problem(str(err))
                continue
            try:
                image = read_image(pair.image)
                if image.size != (ids.shape[1], ids.shape[0]):
                    message = (f"{pair.label}: label is {ids.shape[1]}x{ids.shape[0]} but image {pair.image.name} "
                               f"is {image.size[0]}x{image.size[1]}")
                    (self.problem if size_mismatch_is_problem else self.report.notes.append)(message)
            except DatasetError as err:
                self.problem(str(err))
            for value in np.unique(ids).tolist():
                if value not in valid_ids:
                    unexpected.setdefault(int(value), pair.label)
            hist = self.report.histograms.setdefault(pair.split, np.zeros(20, dtype=np.int64))
            mapped = lut[np.minimum(ids, 255).astype(np.uint8)]
            counts = np.bincount(mapped.ravel(), minlength=256)
            hist[:19] += counts[:19]
            hist[19] += counts[255]
            self.report.labels_decoded += 1
        if unexpected:
            listed = ", ".join(f"{v} (e.g. {p.name})" for v, p in sorted(unexpected.items())[:10])
            self.report.notes.append(f"label values outside the {self.report.dataset} id range, counted as ignored: "
                                     f"{listed}")


def _check_cityscapes(c: _Checker) -> None:
    if not (c.folder("leftImg8bit", "images: leftImg8bit/{split}/{city}/*_leftImg8bit.png")
            & c.folder("gtFine", "labels: gtFine/{split}/{city}/*_gtFine_labelIds.png")):
        return
    pairs: list[_Pair] = []
    for split in ("train", "val"):
        folder = c.root / "leftImg8bit" / split
        images = sorted(folder.glob("*/*_leftImg8bit.png")) if folder.is_dir() else []
        if not folder.is_dir():
            c.problem(f"{folder}: missing folder of split {split!r}")
        c.count(split, len(images))
        pairs += [_Pair(split, p, cityscapes_label_path(c.root, p)) for p in images]
        label_folder = c.root / "gtFine" / split
        expected_labels = {pair.label for pair in pairs if pair.split == split}
        for orphan in sorted(set(label_folder.glob("*/*_gtFine_labelIds.png")) - expected_labels)[:20]:
            c.problem(f"{orphan}: label without image (expected {folder / orphan.parent.name}/"
                      f"{orphan.name.replace('_gtFine_labelIds', '_leftImg8bit')})")
    train_folder = c.root / "leftImg8bit" / "train"
    train_cities = {p.name for p in train_folder.iterdir() if p.is_dir()} if train_folder.is_dir() else set()
    for group, cities in CITYSCAPES_CITY_GROUPS.items():
        present = [city for city in cities if city in train_cities]
        c.report.notes.append(f"between-city split {group}: {len(present)} of {len(cities)} cities present "
                              f"({', '.join(present) or 'none'})")
    pairs = c.pairs_exist(pairs)
    c.decode(pairs, read_label, L.labelid_lut(19), L.CITYSCAPES_VALID_LABELIDS | {255})


def _check_synthia(c: _Checker) -> None:
    if not (c.folder("RGB", "images: RGB/NNNNNNN.png") & c.folder("GT/LABELS", "16-bit labels: GT/LABELS/NNNNNNN.png")):
        return
    pairs: list[_Pair] = []
    for split in ("train", "val"):
        try:
            names = read_split_list(c.root, split, 7)
        except DatasetError as err:
            c.problem(str(err))
            continue
        if names is None:
            names = [f"{i:07d}" for i in SYNTHIA_STANDARD_SPLITS[split]]
        else:
            c.report.notes.append(f"split {split!r} from {c.root / 'lists' / (split + '.txt')}")
        present = [n for n in names if (c.root / "RGB" / f"{n}.png").is_file()]
        c.count(split, len(present))
        pairs += [_Pair(split, c.root / "RGB" / f"{n}.png", c.root / "GT" / "LABELS" / f"{n}.png") for n in names]
    pairs = c.pairs_exist(pairs)
    valid = set(range(L.SYNTHIA_MAX_ID + 1))
    c.decode(pairs, read_synthia_label, L.synthia_lut(19), valid)
    _check_prepared(c, pairs)


def _check_prepared(c: _Checker, pairs: list[_Pair]) -> None:
    prepared = c.root / PREPARED_LABEL_DIR
    if not prepared.is_dir():
        c.report.notes.append(f"no converted labels in {prepared} (optional: `dastudy data prepare` speeds up loading)")
        return
    if not (prepared / PREPARED_MARKER).is_file():
        c.problem(f"{prepared}: conversion incomplete ({PREPARED_MARKER} missing); rerun `dastudy data prepare "
                  f"{c.root} --skip-existing`")
    converted = [p for p in pairs if (prepared / p.label.name).is_file()]
    c.report.notes.append(f"{len(converted)} of {len(pairs)} labels have a converted trainId copy in {prepared}")
    for pair in converted[:3]:  # the copy must equal a fresh conversion of the original
        try:
            fresh = L.synthia_lut(19)[np.minimum(read_synthia_label(pair.label), 255).astype(np.uint8)]
            if not np.array_equal(read_label(prepared / pair.label.name), fresh):
                c.problem(f"{prepared / pair.label.name}: differs from the conversion of {pair.label}")
        except DatasetError as err:
            c.problem(str(err))


def _check_gta5(c: _Checker) -> None:
    if not (c.folder("images", "images: images/NNNNN.png") & c.folder("labels", "labels: labels/NNNNN.png")):
        return
    names = sorted(p.stem for p in (c.root / "images").glob("*.png"))
    c.count("all", len(names))
    pairs = c.pairs_exist([_Pair("all", c.root / "images" / f"{n}.png", c.root / "labels" / f"{n}.png") for n in names])
    c.decode(pairs, read_label, L.labelid_lut(19), L.CITYSCAPES_VALID_LABELIDS | {34, 255},
             size_mismatch_is_problem=False)  # a few GTA5 pairs differ in size; transforms resize both


_CHECKS = {"cityscapes": _check_cityscapes, "synthia": _check_synthia, "gta5": _check_gta5}


def check_dataset(root: str | Path, dataset: str, *, full: bool = False, progress: bool = False) -> CheckReport:
    """Check the dataset folder ``root`` (read-only); returns a :class:`CheckReport` listing every problem.

    Args:
        root: the dataset folder (e.g. ``datasets/cityscapes``, or ``OUT/source`` of the synthetic benchmark).
        dataset: ``cityscapes``, ``synthia`` or ``gta5``.
        full: decode every label and image instead of a sample of about 20.
        progress: show a progress bar while decoding (useful with ``full``).
    """
    if dataset not in _CHECKS:
        raise DatasetError(f"dataset {dataset!r} is not known; available: {', '.join(sorted(_CHECKS))}")
    root = Path(root)
    checker = _Checker(root, dataset, full, progress)
    if not root.is_dir():
        checker.problem(f"{root}: {dataset} root folder does not exist")
        checker.report.notes.append("docs/data.md gives each dataset's layout and where to download it; "
                                    "`dastudy data synth OUT` writes the synthetic stand-in")
        return checker.report
    _CHECKS[dataset](checker)
    return checker.report

"""Readers for Cityscapes, SYNTHIA-RAND-CITYSCAPES and GTA5, and the dataset registry.

Every reader is a ``torch.utils.data.Dataset`` whose items are
``{"image": FloatTensor[3, H, W] (normalised), "label": LongTensor[H, W] (255 = ignore), "name": str}``.
Raw ids are mapped to 19- or 16-class indices right after decoding (:mod:`data.labels`).
Layouts (the ones MaxSquareLoss/AdaptSegNet expect, see ``docs/data.md``):

- Cityscapes: ``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` and
  ``gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png``. Splits ``train`` (2975), ``val`` (500)
  and the seed's between-city splits ``group{0,1}_{train,val}`` built from the *train* cities (the first 10
  images of each city, sorted, are the group's val).
- SYNTHIA: ``RGB/{id:07d}.png`` and ``GT/LABELS/{id:07d}.png`` (16-bit, class id in channel 0). Splits from
  ``lists/{split}.txt`` when present, else train = ids 0-8999 and val = ids 9000-9399. Labels converted by
  ``dastudy data prepare`` (``GT/LABELS_TRAINID``) are used instead of the 16-bit files when present.
- GTA5: ``images/{id:05d}.png`` and ``labels/{id:05d}.png`` (Cityscapes labelIds). Split ``all`` (every image,
  24966) and ``train`` (``lists/train.txt`` when present, else every image, as AdaptSegNet); other splits need
  ``lists/{split}.txt``.

Datasets open files read-only and never write into the dataset folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import labels as L
from .io import DatasetError, read_image, read_label, read_synthia_label
from .layouts import (CITYSCAPES_CITY_GROUPS, GROUP_VAL_PER_CITY, PREPARED_LABEL_DIR, PREPARED_MARKER,
                      SYNTHIA_STANDARD_SPLITS, cityscapes_city_images, cityscapes_label_path, read_split_list)

__all__ = ["Sample", "SegmentationDataset", "CityscapesDataset", "SynthiaDataset", "GTA5Dataset",
           "create_dataset", "list_datasets", "dataset_class"]

@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    label: Path


Transform = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class SegmentationDataset(torch.utils.data.Dataset):
    """Common part: a list of samples, decoding, optional in-memory cache, transforms.

    With ``cache=True`` the decoded and *prepared* (resized, uint8) sample is kept in memory after its first use,
    and only the random augmentation and normalisation run again. DataLoader workers each hold their own cache;
    call :meth:`preload` before creating the loader to fill it once in the main process (shared copy-on-write).
    """

    dataset_name = "?"
    splits_help = ""

    def __init__(self, *, root: str | Path, split: str, num_classes: int, transforms: Transform | None,
                 cache: bool = False, max_items: int | None = None):
        if num_classes not in (16, 19):
            raise ValueError(f"num_classes = {num_classes!r} is not supported; allowed: 16, 19")
        if max_items is not None and max_items <= 0:
            raise ValueError(f"max_items = {max_items!r}; expected a positive integer or None")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: {self.dataset_name} root folder does not exist")
        self.split = split
        self.num_classes = num_classes
        if transforms is None:
            from .transforms import EvalPreset

            transforms = EvalPreset(size=None)
        if cache and not (hasattr(transforms, "prepare") and hasattr(transforms, "augment")):
            raise ValueError("cache=True needs a transform with prepare()/augment() stages (TrainPreset/EvalPreset)")
        self.transforms = transforms
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        samples = self._list_samples()
        if not samples:
            raise DatasetError(f"{self.root}: split {split!r} of {self.dataset_name} holds no images")
        self.samples: list[Sample] = samples[:max_items] if max_items else samples

    # subclasses: list the split, and decode one label map to class indices
    def _list_samples(self) -> list[Sample]:
        raise NotImplementedError

    def load_label(self, index: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def class_names(self) -> tuple[str, ...]:
        return L.class_names(self.num_classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load_pair(self, index: int):
        """The decoded RGB image (PIL) and label map ((H, W) uint8 class indices) of one sample, unresized.

        Raises :class:`DatasetError` naming both files when their sizes differ: resizing each to the configured
        size would silently train on labels that do not line up with the pixels."""
        sample = self.samples[index]
        image, label = read_image(sample.image), self.load_label(index)
        if label.shape[:2] != (image.height, image.width):
            raise DatasetError(f"{sample.label}: label is {label.shape[1]}x{label.shape[0]} but its image "
                               f"{sample.image} is {image.width}x{image.height} (dataset {self.dataset_name}, "
                               f"split {self.split!r}); `dastudy data check {self.root} --dataset "
                               f"{self.dataset_name}` lists every such pair")
        return image, label

    def _prepared(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        pair = self.transforms.prepare(*self.load_pair(index))
        self._cache[index] = pair
        return pair

    def preload(self, *, progress: bool = False) -> None:
        """Fill the cache for every item (only with ``cache=True``)."""
        if not self.cache:
            raise ValueError("preload() needs cache=True")
        indices = range(len(self))
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"caching {self.dataset_name}/{self.split}", unit="img")
        for index in indices:
            self._prepared(index)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if self.cache:
            image, label = self.transforms.augment(*self._prepared(index))
        else:
            image, label = self.transforms(*self.load_pair(index))
        return {"image": image, "label": label, "name": self.samples[index].name}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"num_classes={self.num_classes}, items={len(self)}, cache={self.cache})")

    def _missing(self, path: Path, what: str) -> DatasetError:
        return DatasetError(f"{path}: missing {what} (dataset {self.dataset_name}, split {self.split!r}, "
                            f"root {self.root})")


def _check_pairs(dataset: SegmentationDataset, samples: list[Sample]) -> list[Sample]:
    for sample in samples:  # stat only; a missing label is reported before training starts, not mid-epoch
        if not sample.image.is_file():
            raise dataset._missing(sample.image, "image file")
        if not sample.label.is_file():
            raise dataset._missing(sample.label, f"label file for image {sample.image.name}")
    return samples


class CityscapesDataset(SegmentationDataset):
    """Cityscapes gtFine (https://www.cityscapes-dataset.com), labelIds mapped to trainIds."""

    dataset_name = "cityscapes"
    splits_help = ("train, val, test, group0_train, group0_val, group1_train, group1_val (and the seed's exact lists: "
                   "group0_train_seed, ..., see data/splits.py)")

    def _list_samples(self) -> list[Sample]:
        from .splits import parse_between_city_split

        between = parse_between_city_split(self.split)
        if between is not None:
            images = self._group_images(*between)
        else:
            folder = self.root / "leftImg8bit" / self.split
            if not folder.is_dir():
                raise DatasetError(f"{folder}: missing folder of split {self.split!r}; expected "
                                   f"leftImg8bit/{self.split}/<city>/*_leftImg8bit.png (splits: {self.splits_help})")
            images = sorted(folder.glob("*/*_leftImg8bit.png"))
        samples = [Sample(p.name[: -len("_leftImg8bit.png")], p, cityscapes_label_path(self.root, p)) for p in images]
        return _check_pairs(self, samples)

    def _group_images(self, group: str, part: str, variant: str = "clean") -> list[Path]:
        # clean = the first 10 images per city as val; seed = the seed's published list files (data/splits.py)
        from .splits import between_city_images

        try:
            return between_city_images(self.root, group, part, variant)
        except DatasetError as err:
            raise DatasetError(f"{err} (split {self.split!r})") from None

    def load_label(self, index: int) -> np.ndarray:
        return labelid_lut_cached(self.num_classes)[read_label(self.samples[index].label)]


class SynthiaDataset(SegmentationDataset):
    """SYNTHIA-RAND-CITYSCAPES (https://synthia-dataset.net), class ids mapped to trainIds (19 or 16 classes)."""

    dataset_name = "synthia"
    splits_help = "train, val (or any ROOT/lists/<split>.txt)"

    def _list_samples(self) -> list[Sample]:
        names = read_split_list(self.root, self.split, 7)
        if names is None:
            if self.split not in SYNTHIA_STANDARD_SPLITS:
                raise DatasetError(f"{self.root / 'lists' / (self.split + '.txt')}: missing list for split "
                                   f"{self.split!r}; without lists/ the splits are train (ids 0-8999) and val (9000-9399)")
            names = [f"{i:07d}" for i in SYNTHIA_STANDARD_SPLITS[self.split]]
        for folder in ("RGB", "GT/LABELS"):
            if not (self.root / folder).is_dir():
                raise DatasetError(f"{self.root / folder}: missing folder; expected the SYNTHIA-RAND-CITYSCAPES "
                                   "layout RGB/NNNNNNN.png and GT/LABELS/NNNNNNN.png")
        prepared = self.root / PREPARED_LABEL_DIR
        self.uses_prepared_labels = (prepared / PREPARED_MARKER).is_file()
        samples = []
        for name in names:
            label = prepared / f"{name}.png" if self.uses_prepared_labels else None
            if label is None or not label.is_file():
                label = self.root / "GT" / "LABELS" / f"{name}.png"
            samples.append(Sample(name, self.root / "RGB" / f"{name}.png", label))
        return _check_pairs(self, samples)

    def load_label(self, index: int) -> np.ndarray:
        path = self.samples[index].label
        if path.parent.name == Path(PREPARED_LABEL_DIR).name:
            return trainid_lut_cached(self.num_classes)[read_label(path)]
        ids = read_synthia_label(path)
        ids = np.where(ids <= 255, ids, 0).astype(np.uint8)  # ids > 255 do not exist; treat as void
        return synthia_lut_cached(self.num_classes)[ids]


class GTA5Dataset(SegmentationDataset):
    """GTA5 "Playing for Data" (https://download.visinf.tu-darmstadt.de/data/from_games/), Cityscapes labelIds."""

    dataset_name = "gta5"
    splits_help = "all, train (or any ROOT/lists/<split>.txt)"

    def _list_samples(self) -> list[Sample]:
        for folder in ("images", "labels"):
            if not (self.root / folder).is_dir():
                raise DatasetError(f"{self.root / folder}: missing folder; expected images/NNNNN.png and labels/NNNNN.png")
        names = read_split_list(self.root, self.split, 5)
        if names is None:
            if self.split not in ("all", "train"):
                raise DatasetError(f"{self.root / 'lists' / (self.split + '.txt')}: missing list for split "
                                   f"{self.split!r}; without lists/ the splits are 'all' and 'train' (every image)")
            names = sorted(p.stem for p in (self.root / "images").glob("*.png"))
        samples = [Sample(n, self.root / "images" / f"{n}.png", self.root / "labels" / f"{n}.png") for n in names]
        return _check_pairs(self, samples)

    def load_label(self, index: int) -> np.ndarray:
        return labelid_lut_cached(self.num_classes)[read_label(self.samples[index].label)]


_LUTS: dict[tuple[str, int], np.ndarray] = {}


def _lut(kind: str, num_classes: int) -> np.ndarray:
    key = (kind, num_classes)
    if key not in _LUTS:
        _LUTS[key] = {"labelid": L.labelid_lut, "synthia": L.synthia_lut, "trainid": L.trainid_lut}[kind](num_classes)
    return _LUTS[key]


def labelid_lut_cached(num_classes: int) -> np.ndarray:
    return _lut("labelid", num_classes)


def synthia_lut_cached(num_classes: int) -> np.ndarray:
    return _lut("synthia", num_classes)


def trainid_lut_cached(num_classes: int) -> np.ndarray:
    return _lut("trainid", num_classes)


# ---------------------------------------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, type[SegmentationDataset]] = {
    "cityscapes": CityscapesDataset,
    "synthia": SynthiaDataset,
    "gta5": GTA5Dataset,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_dataset`."""
    return sorted(_REGISTRY)


def dataset_class(name: str) -> type[SegmentationDataset]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetError(f"dataset {name!r} is not known; available: {', '.join(list_datasets())}") from None


def create_dataset(name: str, *, root: str | Path, split: str, num_classes: int, transforms: Transform | None,
                   cache: bool = False, max_items: int | None = None) -> SegmentationDataset:
    """Build a registered dataset.

    Args:
        name: ``cityscapes``, ``synthia`` or ``gta5`` (:func:`list_datasets`).
        root: the dataset folder (see ``docs/data.md`` for the layouts).
        split: a split of that dataset (e.g. ``train``, ``val``, ``group0_train``).
        num_classes: 19 (Cityscapes trainIds) or 16 (the SYNTHIA subset); other classes become 255.
        transforms: a :class:`~data.transforms.TrainPreset`/:class:`~data.transforms.EvalPreset` (or any
            callable ``(PIL image, uint8 label) -> (image tensor, label tensor)``); None: native size, caffe.
        cache: keep decoded, resized samples in memory (random augmentation still runs at every access).
        max_items: use only the first N items of the split.

    Raises:
        DatasetError: unknown name, missing root/split/file (the message names the path).
    """
    return dataset_class(name)(root=root, split=split, num_classes=num_classes, transforms=transforms,
                               cache=cache, max_items=max_items)


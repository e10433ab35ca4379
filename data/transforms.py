"""Paired image/label transforms and the train/eval presets.

A preset has two stages so that datasets can cache decoded samples:

- ``prepare(image, label)``: deterministic (resize to the working size), returns uint8 arrays;
  the result can be kept in memory and reused for every epoch.
- ``augment(image, label)``: the random part (scale, crop, flip, blur) and normalisation, applied at every
  call; returns ``(FloatTensor[3, H, W], LongTensor[H, W])``.

Calling a preset does both. Images are resized bicubic, labels always with NEAREST (never interpolated), and
label padding uses the ignore index 255. Random draws use Python's :mod:`random`, which the engine seeds and
which PyTorch re-seeds in every DataLoader worker, so augmentation is reproducible.

The train defaults follow MaxSquareLoss/AdaptSegNet (the seed's pipeline): resize to the crop size (aspect ratio
not kept), horizontal flip p=0.5, PIL Gaussian blur p=0.5 with radius ~ U[0, 1).

Normalisation must match the backbone weights: ``"caffe"`` for the DeepLab (caffe-converted) init — BGR,
0-255 scale, mean (104.00698793, 116.66876762, 122.67891434) subtracted, no std — and ``"imagenet"`` for
torchvision weights — RGB/255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode

from .labels import IGNORE_INDEX

__all__ = ["TrainPreset", "EvalPreset", "normalize", "denormalize", "NORMALIZATIONS", "CAFFE_MEAN_BGR",
           "IMAGENET_MEAN", "IMAGENET_STD"]

CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("caffe", "imagenet")


def _check_kind(kind: str) -> None:
    if kind not in NORMALIZATIONS:
        raise ValueError(f"normalization = {kind!r} is not known; allowed: {' | '.join(NORMALIZATIONS)}")


def normalize(image: Image.Image | np.ndarray, kind: str) -> torch.Tensor:
    """uint8 RGB image (PIL or (H, W, 3) array) → normalised FloatTensor[3, H, W] for the given weights."""
    _check_kind(kind)
    array = np.array(image, dtype=np.uint8)  # a writable copy (PIL arrays are read-only)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"normalize expects an RGB image of shape (H, W, 3), got {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()
    if kind == "caffe":
        return tensor.flip(0) - torch.tensor(CAFFE_MEAN_BGR).view(3, 1, 1)
    return (tensor / 255.0 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def denormalize(tensor: torch.Tensor, kind: str) -> np.ndarray:
    """Inverse of :func:`normalize`: [3, H, W] → uint8 RGB (H, W, 3); [B, 3, H, W] → (B, H, W, 3). For image panels."""
    _check_kind(kind)
    x = tensor.detach().float().cpu()
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"denormalize expects [3, H, W] or [B, 3, H, W], got {tuple(x.shape)}")
    shape = (3, 1, 1)
    if kind == "caffe":
        rgb = (x + torch.tensor(CAFFE_MEAN_BGR).view(shape)).flip(-3)
    else:
        rgb = (x * torch.tensor(IMAGENET_STD).view(shape) + torch.tensor(IMAGENET_MEAN).view(shape)) * 255.0
    rgb = rgb.round().clamp(0, 255).to(torch.uint8)
    return rgb.movedim(-3, -1).numpy()


def _as_size(value, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    size = tuple(value)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
        raise ValueError(f"{name} = {value!r}; expected (width, height) of positive integers")
    return int(size[0]), int(size[1])


def _to_pil_pair(image, label) -> tuple[Image.Image, Image.Image]:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    lab = label if isinstance(label, Image.Image) else Image.fromarray(np.asarray(label, dtype=np.uint8))
    if img.mode != "RGB":
        img = img.convert("RGB")
    if lab.mode != "L":
        raise ValueError(f"labels must be 8-bit single-channel maps, got PIL mode {lab.mode!r}")
    return img, lab


def _resize_pair(img: Image.Image, lab: Image.Image, image_size, label_size):
    if image_size is not None and img.size != image_size:
        img = TF.resize(img, [image_size[1], image_size[0]], interpolation=InterpolationMode.BICUBIC)
    if label_size is not None and lab.size != label_size:
        lab = TF.resize(lab, [label_size[1], label_size[0]], interpolation=InterpolationMode.NEAREST)
    return img, lab


def _label_tensor(lab) -> torch.Tensor:
    return torch.from_numpy(np.array(lab, dtype=np.uint8)).long()


@dataclass(frozen=True, kw_only=True)
class TrainPreset:
    """Training transform: resize to ``size`` (W, H), optional random scale + crop, flip, blur, normalise.

    Args:
        size: (width, height) every image is first resized to (the seed's ``crop_size``).
        hflip_prob: probability of a horizontal flip of image and label.
        blur_prob: probability of a PIL Gaussian blur with radius ~ U[0, 1) (image only).
        scale_range: (low, high): rescale by a factor ~ U[low, high] after the resize, then crop.
        crop_size: (width, height) of a random crop (label padded with 255, image with 0 when too small);
            defaults to ``size`` when ``scale_range`` is set.
        normalization: ``"caffe"`` or ``"imagenet"`` (must match the backbone weights).
    """

    size: tuple[int, int]
    hflip_prob: float = 0.5
    blur_prob: float = 0.5
    scale_range: tuple[float, float] | None = None
    crop_size: tuple[int, int] | None = None
    normalization: str = "caffe"

    def __post_init__(self):
        object.__setattr__(self, "size", _as_size(self.size, "size"))
        object.__setattr__(self, "crop_size", _as_size(self.crop_size, "crop_size"))
        for name in ("hflip_prob", "blur_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} = {p!r}; expected a probability in [0, 1]")
        if self.scale_range is not None:
            lo, hi = (float(v) for v in self.scale_range)
            if not 0 < lo <= hi:
                raise ValueError(f"scale_range = {self.scale_range!r}; expected (low, high) with 0 < low <= high")
            object.__setattr__(self, "scale_range", (lo, hi))
        _check_kind(self.normalization)

    @property
    def output_size(self) -> tuple[int, int]:
        """(W, H) of the tensors this preset returns."""
        return self.crop_size or self.size

    def prepare(self, image, label) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic part (cacheable): resize to ``size``; returns uint8 (H, W, 3) and (H, W) arrays."""
        img, lab = _resize_pair(*_to_pil_pair(image, label), self.size, self.size)
        return np.array(img), np.array(lab)

    def augment(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        """Random part + normalisation, applied at every call (also after a cache)."""
        img, lab = _to_pil_pair(image, label)
        crop = self.crop_size
        if self.scale_range is not None:
            scale = random.uniform(*self.scale_range)
            scaled = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img, lab = _resize_pair(img, lab, scaled, scaled)
            crop = crop or self.size
        if crop is not None:
            img, lab = self._random_crop(img, lab, crop)
        if random.random() < self.hflip_prob:
            img, lab = TF.hflip(img), TF.hflip(lab)
        if random.random() < self.blur_prob:
            img = img.filter(ImageFilter.GaussianBlur(radius=random.random()))
        return normalize(img, self.normalization), _label_tensor(lab)

    @staticmethod
    def _random_crop(img: Image.Image, lab: Image.Image, crop: tuple[int, int]):
        pad_w, pad_h = max(0, crop[0] - img.width), max(0, crop[1] - img.height)
        if pad_w or pad_h:  # pad right/bottom; padded label pixels are ignored by the loss
            img = TF.pad(img, [0, 0, pad_w, pad_h], fill=0)
            lab = TF.pad(lab, [0, 0, pad_w, pad_h], fill=IGNORE_INDEX)
        left = random.randint(0, img.width - crop[0])
        top = random.randint(0, img.height - crop[1])
        return TF.crop(img, top, left, crop[1], crop[0]), TF.crop(lab, top, left, crop[1], crop[0])

    def __call__(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(*self.prepare(image, label))


@dataclass(frozen=True, kw_only=True)
class EvalPreset:
    """Evaluation transform: image resized to ``size`` (bicubic), label as the protocol asks, normalise.

    Args:
        size: (width, height) of the network input; ``None`` keeps the native image size.
        label_size: ``None`` keeps the label at native resolution (the "full" protocol of AdaptSegNet/ADVENT:
            logits are upsampled to it); a (width, height) resizes it with NEAREST (the "seed" protocol of
            MaxSquareLoss: labels at the input size).
        normalization: ``"caffe"`` or ``"imagenet"``.
    """

    size: tuple[int, int] | None
    label_size: tuple[int, int] | None = None
    normalization: str = "caffe"

    def __post_init__(self):
        object.__setattr__(self, "size", _as_size(self.size, "size"))
        object.__setattr__(self, "label_size", _as_size(self.label_size, "label_size"))
        _check_kind(self.normalization)

    def prepare(self, image, label) -> tuple[np.ndarray, np.ndarray]:
        img, lab = _resize_pair(*_to_pil_pair(image, label), self.size, self.label_size)
        return np.array(img), np.array(lab)

    def augment(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize(image, self.normalization), _label_tensor(label)

    def __call__(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(*self.prepare(image, label))

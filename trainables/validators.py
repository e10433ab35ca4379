"""Label-free validators for unsupervised domain adaptation: scores that rank models without target labels.

In UDA the target domain has no labels, so choosing λ_adv, the learning rate or the checkpoint on target-val mIoU
is oracle selection. A validator scores a model from *unlabelled target-train* images (a fixed, seeded sample,
identical for every trial of a study, so scores compare across trials) and, for ``source_val``, from the labelled
source validation split. Every score is reported so that **higher = better** under the metric name
``uda/<validator>`` (its own TensorBoard tag group, a study objective like any metric, and a value of
``eval.selection`` for the checkpoint kept inside a run).

Notation: ``P`` is the N×C matrix of softmax vectors of N sampled *pixels* (``eval.validator_pixels`` fixed
positions on each of ``eval.validator_images`` fixed target-train images, at the network's input size),
``H(p) = −Σ_c p_c log p_c``.

=============  ===============================================  ==================================================
name           score (higher = better)                          cost per evaluation
=============  ===============================================  ==================================================
source_val     mIoU (``eval.select_metric``) on the first        one forward pass per source-val image
               ``eval.validator_images`` source-val images
entropy        −mean_i H(p_i)                                   O(N·C) on the target sample's forward passes
im             H(mean_i p_i) − mean_i H(p_i)                    O(N·C)
bnm            ‖P‖_* / N over the whole sample                  one C×C eigendecomposition (of PᵀP)
snd            mean_i H(softmax_{j≠i}(cos(p_i, p_j) / 0.05))    O(N²·C) (row chunks of 1024: O(1024·N) memory)
d_confusion    1 − |2·AUC − 1| of D_main on target vs source     one D forward per sampled image (both domains)
=============  ===============================================  ==================================================

The target sample's forward passes are shared by all target validators. DEV (You et al., ICML 2019,
https://arxiv.org/abs/1905.04066) is not implemented: it trains a domain classifier on features *at every
checkpoint* and needs per-sample source losses, several times the cost of the evaluation it would be part of
(the ≤ 10 % budget of an evaluation at demo size); see docs/results.md.

Nothing here imports Ray. On a GPU every score stays on the device; the engine reads them with one host sync.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainables.config import VALIDATOR_NAMES
from trainables.evaluation import predict
from trainables.metrics import ConfusionMatrix

__all__ = ["VALIDATORS", "TARGET_VALIDATORS", "SND_TEMPERATURE", "SAMPLE_SEED", "entropy_score",
           "im_score", "bnm_score", "snd_score", "auc", "d_confusion_score", "sample_indices", "pixel_indices",
           "ValidatorSet", "build_validator_set"]

VALIDATORS = VALIDATOR_NAMES  # one list: trainables/config.py names them without importing torch
TARGET_VALIDATORS = ("entropy", "im", "bnm", "snd")  # from the target sample's softmax vectors alone
SND_TEMPERATURE = 0.05  # Saito et al. 2021, Sec. 3: τ = 0.05 as in their classification and segmentation runs
SND_CHUNK = 1024
SAMPLE_SEED = 2021  # fixed, not runtime.seed: every trial of a study scores the same images and pixels


def _entropy_rows(probs: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def entropy_score(probs: torch.Tensor) -> torch.Tensor:
    """−(1/N) Σ_i H(p_i): minus the mean prediction entropy (Morerio et al., ICLR 2018,
    https://arxiv.org/abs/1711.10288). Higher = more confident; rewards over-confident collapse onto one class."""
    return -_entropy_rows(probs.float()).mean()


def im_score(probs: torch.Tensor) -> torch.Tensor:
    """H((1/N) Σ_i p_i) − (1/N) Σ_i H(p_i): information maximization (Gomes et al., NeurIPS 2010; the SHOT loss,
    Liang et al., ICML 2020, https://arxiv.org/abs/2002.08546). The first term punishes collapse onto few classes."""
    probs = probs.float()
    return _entropy_rows(probs.mean(dim=0, keepdim=True))[0] - _entropy_rows(probs).mean()


def bnm_score(probs: torch.Tensor) -> torch.Tensor:
    """Batch nuclear norm ‖P‖_* / N over the whole sample (Cui et al., CVPR 2020, https://arxiv.org/abs/2003.12237):
    high for predictions that are both confident and diverse.

    The whole N×C matrix, not chunks of rows: the sample is built image by image, so a chunk of
    ``validator_pixels`` rows is one image and a per-chunk norm scores each image's own class diversity (a
    16-class image scores 0.25, a one-class image 0.0625, for the same global class balance); the norm of the whole
    sample scores the diversity of the sample (0.0625 for both). ‖P‖_* is the sum of the square roots of the
    eigenvalues of the C×C Gram matrix PᵀP (the squared singular values of P), so memory does not grow with N and
    nothing needs chunking; the Gram matrix is accumulated in float64 (the square root of an eigenvalue near zero
    would amplify float32 rounding). ‖P‖_*/N depends on N (√(C/N) for balanced one-hot rows): N is the study's
    fixed sample (``validator_images`` × ``validator_pixels``), so scores compare across its trials and
    checkpoints, not across samples of other sizes."""
    probs = probs.double()
    gram = probs.T @ probs
    nuclear = torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt().sum()
    return (nuclear / probs.shape[0]).float()


def snd_score(probs: torch.Tensor, *, temperature: float = SND_TEMPERATURE, chunk: int = SND_CHUNK) -> torch.Tensor:
    """Soft neighborhood density (Saito et al., ICCV 2021, https://arxiv.org/abs/2108.10860):
    (1/N) Σ_i H(q_i), q_i = softmax_{j≠i}(s_ij / τ), s_ij the cosine similarity of p_i and p_j.

    Higher = denser neighbourhoods = better (the paper's sign, kept). The N×N similarity is built ``chunk`` rows at a
    time; the diagonal is masked before the softmax (a sample is not its own neighbour)."""
    probs = probs.float()
    unit = F.normalize(probs, dim=1)
    n = unit.shape[0]
    total = torch.zeros((), device=probs.device)
    for start in range(0, n, chunk):
        rows = unit[start:start + chunk]
        logits = rows @ unit.T / temperature
        own = torch.arange(rows.shape[0], device=probs.device)
        logits[own, own + start] = -math.inf
        log_q = torch.log_softmax(logits, dim=1)
        q = log_q.exp()
        total = total - torch.where(q > 0, q * log_q, torch.zeros_like(q)).sum()
    return total / n


def auc(negative: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """P(positive > negative) + ½·P(tie) over all pairs: the ROC AUC of a score separating the two sets."""
    diff = positive.float()[:, None] - negative.float()[None, :]
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean()


def d_confusion_score(d_source: torch.Tensor, d_target: torch.Tensor) -> torch.Tensor:
    """1 − |2·AUC − 1| of the trained discriminator's per-image score (mean of its output map; the target label is
    1) separating target from source images: 1 = D cannot tell the domains apart (aligned outputs), 0 = it separates
    them perfectly (either way round). AdaptSegNet's own signal (Tsai et al., CVPR 2018,
    https://arxiv.org/abs/1802.10349); a D that is too weak also "looks aligned"."""
    return 1.0 - (2.0 * auc(d_source, d_target) - 1.0).abs()


def sample_indices(size: int, count: int, *, seed: int = SAMPLE_SEED) -> list[int]:
    """``count`` distinct indices of ``range(size)`` (all if fewer), sorted; depends only on ``seed`` and ``size``."""
    if count >= size:
        return list(range(size))
    return sorted(np.random.default_rng([seed, size]).choice(size, count, replace=False).tolist())


def pixel_indices(index: int, height: int, width: int, count: int, *, seed: int = SAMPLE_SEED) -> np.ndarray:
    """``count`` distinct flat pixel positions of image ``index`` (all pixels if fewer), fixed by ``seed``."""
    total = height * width
    if count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng([seed, index, height, width]).choice(total, count, replace=False))


class ValidatorSet:
    """The validators of one run and their fixed samples.

    ``target``: a dataset of unlabelled target-train images (items' ``"label"`` is never read); ``source_val``: the
    labelled source validation split (used by ``source_val`` and, as the source side, by ``d_confusion``). Both are
    cut to ``images`` items by :func:`sample_indices` (target) or their first ``images`` items (source val).
    """

    def __init__(self, names, *, target, source_val, images: int, pixels: int, num_classes: int,
                 select_metric: str, device: torch.device):
        from torch.utils.data import Subset

        self.names = tuple(names)
        unknown = [n for n in self.names if n not in VALIDATORS]
        if unknown:
            raise ValueError(f"unknown validator {unknown[0]!r}; known: {', '.join(VALIDATORS)}")
        self.pixels, self.num_classes, self.select_metric, self.device = pixels, num_classes, select_metric, device
        self.target_ids = sample_indices(len(target), images) if target is not None else []
        self.target = Subset(target, self.target_ids) if target is not None else None
        self.source_val = Subset(source_val, range(min(images, len(source_val)))) if source_val is not None else None
        self._pixel_cache: dict[tuple[int, int, int], torch.Tensor] = {}

    @property
    def needs_target(self) -> bool:
        return any(n in TARGET_VALIDATORS or n == "d_confusion" for n in self.names)

    @property
    def needs_source(self) -> bool:
        return "source_val" in self.names or "d_confusion" in self.names

    def _pixels(self, position: int, height: int, width: int) -> torch.Tensor:
        key = (position, height, width)
        if key not in self._pixel_cache:
            flat = pixel_indices(self.target_ids[position], height, width, self.pixels)
            self._pixel_cache[key] = torch.as_tensor(flat, dtype=torch.long, device=self.device)
        return self._pixel_cache[key]

    @torch.no_grad()
    def score(self, model: torch.nn.Module, loader: Callable[[Any], Any], *, discriminator=None,
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
              channels_last: bool = False) -> dict[str, float]:
        """``{"uda/<name>": score}``; ``loader(dataset)`` yields batches of the given dataset.

        Scores accumulate on the device and are read with one host sync at the end (plus the source-val confusion
        matrix, read once). The model (and D) are put in eval mode for the pass and restored afterwards.
        """
        modules = [m for m in (model, discriminator) if m is not None]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        out: dict[str, torch.Tensor] = {}
        d_target: list[torch.Tensor] = []
        d_source: list[torch.Tensor] = []
        try:
            if self.needs_target:
                vectors, position = [], 0
                for batch in loader(self.target):
                    image = self._image(batch, channels_last)
                    probs = self._probs(model, image, autocast)
                    height, width = probs.shape[-2:]
                    flat = probs.flatten(2)
                    for i in range(flat.shape[0]):
                        vectors.append(flat[i][:, self._pixels(position, height, width)].T)
                        position += 1
                    if discriminator is not None:
                        d_target.append(self._d_score(discriminator, probs, autocast))
                probs_matrix = torch.cat(vectors)
                scorers = {"entropy": entropy_score, "im": im_score, "bnm": bnm_score, "snd": snd_score}
                for name in self.names:
                    if name in scorers:
                        out[f"uda/{name}"] = scorers[name](probs_matrix)
            if self.needs_source:
                matrix = ConfusionMatrix(self.num_classes, self.device)
                for batch in loader(self.source_val):
                    image = self._image(batch, channels_last)
                    probs = self._probs(model, image, autocast)
                    if "source_val" in self.names:
                        label = batch["label"].to(self.device, non_blocking=True)
                        scores = F.interpolate(probs, size=tuple(label.shape[-2:]), mode="bilinear",
                                               align_corners=True)
                        matrix.update(scores.argmax(dim=1), label)
                    if discriminator is not None:
                        d_source.append(self._d_score(discriminator, probs, autocast))
            if "d_confusion" in self.names and discriminator is not None:
                out["uda/d_confusion"] = d_confusion_score(torch.cat(d_source), torch.cat(d_target))
            # one host read for all device scores (as evaluate_model reads its confusion matrix once)
            names = list(out)
            values = torch.stack([out[n].float() for n in names]).tolist() if names else []
            result = dict(zip(names, values))
            if "source_val" in self.names:
                result["uda/source_val"] = matrix.compute()[self.select_metric]
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        return result

    def _image(self, batch: dict, channels_last: bool) -> torch.Tensor:
        image = batch["image"].to(self.device, non_blocking=True)
        return image.contiguous(memory_format=torch.channels_last) if channels_last else image

    @staticmethod
    def _probs(model, image: torch.Tensor, autocast) -> torch.Tensor:
        """Softmax of the main output at the input size (what D_main saw in training)."""
        return F.softmax(predict(model, image, tuple(image.shape[-2:]), autocast=autocast).float(), dim=1)

    @staticmethod
    def _d_score(discriminator, probs: torch.Tensor, autocast) -> torch.Tensor:
        with autocast():
            return discriminator(probs).float().flatten(1).mean(dim=1)


def build_validator_set(cfg, *, normalization: str, device: torch.device) -> ValidatorSet | None:
    """The run's :class:`ValidatorSet` (None when ``cfg.eval`` asks for no validator).

    The target sample is drawn from ``data.target`` (its train split, after ``max_items``, without the labelled
    holdout of ``eval.selection = "holdout"``) with the evaluation transform (no augmentation); the source side is
    the ``val`` split of ``data.source``'s dataset and root, at the source size.
    """
    from dataclasses import replace

    from torch.utils.data import Subset

    from trainables import builders

    names = cfg.eval.active_validators
    if not names:
        return None
    target = source_val = None
    if set(names) - {"source_val"}:
        domain = cfg.data.target
        target = builders._create(cfg, domain, builders._eval_preset(domain, "seed", normalization))
        if cfg.eval.selection == "holdout":  # never score (or select on) the labelled holdout images
            target = Subset(target, range(builders._holdout_split(cfg, len(target))))
    if "source_val" in names or "d_confusion" in names:
        # the source's own val split: SYNTHIA train → val, Cityscapes group0_train(_seed) → group0_val(_seed)
        split = cfg.data.source.split.replace("train", "val") if "train" in cfg.data.source.split else "val"
        domain = replace(cfg.data.source, split=split, crop=None, max_items=None)
        source_val = builders._create(cfg, domain, builders._eval_preset(domain, cfg.eval.protocol, normalization))
    return ValidatorSet(names, target=target, source_val=source_val, images=cfg.eval.validator_images,
                        pixels=cfg.eval.validator_pixels, num_classes=cfg.data.num_classes,
                        select_metric=cfg.eval.select_metric, device=device)

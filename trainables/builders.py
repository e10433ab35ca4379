"""From a :class:`~trainables.config.TrainConfig` to the objects of one run: networks, datasets, loaders.

The only place where the engine talks to :mod:`models` and :mod:`data`; it also checks, before anything expensive
starts, that the names and files a config refers to exist (:func:`validate_config`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from trainables.config import ConfigError, DomainConfig, TrainConfig

__all__ = ["validate_config", "resolve_normalization", "output_levels", "build_segmentation_model",
           "build_discriminators", "TrainData", "build_train_data", "build_eval_dataset", "eval_loader",
           "same_domain"]


def validate_config(cfg: TrainConfig, *, source: str = "<config>") -> None:
    """Check what the dataclasses alone cannot: registered model and dataset names, files that must exist.

    Raises :class:`ConfigError` naming ``source``, the key, the value and what is allowed.
    """
    import data
    import models

    segmentation_models = models.list_models("segmentation")
    if cfg.model.name not in segmentation_models:
        raise ConfigError(source, "model.name", cfg.model.name, "a registered segmentation model: "
                          + ", ".join(segmentation_models))
    known = data.list_datasets()
    for key in ("source", "target", "val"):
        domain = getattr(cfg.data, key)
        if domain is not None and domain.dataset not in known:
            raise ConfigError(source, f"data.{key}.dataset", domain.dataset, " | ".join(known))
    info = models.model_info(cfg.model.name)
    if cfg.model.multi_level and not info.multi_level_capable:
        raise ConfigError(source, "model.multi_level", True,
                          f"false for {cfg.model.name} (it has a single output level)")
    if cfg.model.normalization not in ("auto", info.normalization):
        raise ConfigError(source, "model.normalization", cfg.model.normalization,
                          f"'auto' or {info.normalization!r} (what {cfg.model.name}'s weights expect)")
    weights = cfg.model.weights
    if weights is not None:
        from models.pretrained import NAMED_WEIGHTS, WeightsError, resolve_weights

        try:
            resolve_weights(weights)
        except WeightsError as err:
            raise ConfigError(source, "model.weights", weights,
                              f"an existing weight file or one of {', '.join(NAMED_WEIGHTS)} in torch's hub cache "
                              f"({err})") from None
    init = cfg.model.init_checkpoint
    if init is not None and not Path(init).is_file():
        what = "is a directory, not a file; " if Path(init).is_dir() else "does not exist; "
        raise ConfigError(source, "model.init_checkpoint", init,
                          what + "an existing dastudy checkpoint file (e.g. runs/<source run>/checkpoints/best.pt)")


def minimum_step_bytes(cfg: TrainConfig) -> dict[str, int]:
    """A lower bound of the memory one training step needs per domain (bytes): tensors that must exist whatever the
    network: the float32 image, the int64 label and the class logits upsampled to the input size with their
    gradient. The network's own activations come on top, so a size refused here can never have fitted."""
    per_pixel = 3 * 4 + 8 + 2 * 4 * cfg.data.num_classes
    domains = {"source": cfg.data.source}
    if cfg.adapt.mode != "source_only":
        domains["target"] = cfg.data.target
    return {name: cfg.optim.batch_size * d.size[0] * d.size[1] * per_pixel for name, d in domains.items()}


def available_bytes(device: torch.device) -> int | None:
    """Free memory where the step runs: the GPU's free memory, or the host's available memory (None: unknown)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def check_memory(cfg: TrainConfig, device: torch.device, *, source: str = "<config>") -> None:
    """Refuse an input size that cannot fit before anything is built (a 100000x100000 size was OOM-killed at
    24 GB after the model and data were set up)."""
    available = available_bytes(device)
    if available is None:
        return
    needed = minimum_step_bytes(cfg)
    if sum(needed.values()) > available:
        name = max(needed, key=needed.get)
        size = getattr(cfg.data, name).size
        raise ConfigError(source, f"data.{name}.size", list(size),
                          f"a size whose step fits in memory: at least {sum(needed.values()) / 1e9:.1f} GB are "
                          f"needed at optim.batch_size = {cfg.optim.batch_size} (image, label and logits alone), "
                          f"{available / 1e9:.1f} GB are available on {device}")


def resolve_normalization(cfg: TrainConfig) -> str:
    """``model.normalization``, with ``auto`` resolved to what the model's pretrained weights expect."""
    if cfg.model.normalization != "auto":
        return cfg.model.normalization
    import models

    return models.model_info(cfg.model.name).normalization or "caffe"


def output_levels(cfg: TrainConfig) -> tuple[str, ...]:
    """``("main", "aux")`` for a multi-level model, else ``("main",)``; level "main" is output "out"."""
    return ("main", "aux") if cfg.model.multi_level else ("main",)


def build_segmentation_model(cfg: TrainConfig) -> torch.nn.Module:
    import models

    return models.build_model(cfg.model, num_classes=cfg.data.num_classes)


def build_discriminators(cfg: TrainConfig) -> dict[str, torch.nn.Module]:
    """One AdaptSegNet FC discriminator per output level, on softmax maps of ``num_classes`` channels."""
    import models

    return {level: models.create_model("fc_discriminator", in_channels=cfg.data.num_classes, ndf=cfg.adapt.d_ndf)
            for level in output_levels(cfg)}


def same_domain(a: DomainConfig | None, b: DomainConfig | None) -> bool:
    """Whether two domain entries read the same images (same dataset, root and split)."""
    return (a is not None and b is not None and a.dataset == b.dataset and Path(a.root) == Path(b.root)
            and a.split == b.split)


def _train_preset(cfg: TrainConfig, domain: DomainConfig, normalization: str):
    from data.transforms import TrainPreset

    return TrainPreset(size=domain.size, hflip_prob=0.5 if cfg.data.hflip else 0.0,
                       blur_prob=0.5 if cfg.data.blur else 0.0, scale_range=cfg.data.scale_range,
                       crop_size=domain.crop, normalization=normalization)


def _eval_preset(domain: DomainConfig, protocol: str, normalization: str):
    from data.transforms import EvalPreset

    # "full": labels at native resolution, logits upsampled to them; "seed": labels resized (nearest) to the input.
    return EvalPreset(size=domain.size, label_size=None if protocol == "full" else domain.size,
                      normalization=normalization)


def _create(cfg: TrainConfig, domain: DomainConfig, transforms) -> Dataset:
    import data

    return data.create_dataset(domain.dataset, root=domain.root, split=domain.split, num_classes=cfg.data.num_classes,
                               transforms=transforms, cache=cfg.data.cache, max_items=domain.max_items)


def _holdout_split(cfg: TrainConfig, size: int) -> int:
    """Number of target-train items left for training once the holdout selection items are set aside."""
    holdout = cfg.eval.holdout_size
    if holdout >= size:
        raise ConfigError("<config>", "eval.holdout_size", holdout,
                          f"fewer than the {size} items of the target train split {cfg.data.target.split!r}")
    return size - holdout


class TrainData:
    """The training datasets of a run: ``source`` (labelled), ``target`` (unlabelled stream or None) and
    ``selection`` (the labelled holdout of the target train split, or None)."""

    def __init__(self, source: Dataset, target: Dataset | None, selection: Dataset | None):
        self.source, self.target, self.selection = source, target, selection


def build_train_data(cfg: TrainConfig, *, normalization: str, need_target: bool) -> TrainData:
    """Datasets for training. With ``eval.selection = "holdout"`` the last ``eval.holdout_size`` items of the target
    train split become the selection split and are removed from the target stream (and from the source, for an
    oracle whose source *is* the target train split)."""
    holdout = cfg.eval.selection == "holdout"
    if holdout and cfg.data.target is None:
        raise ConfigError("<config>", "eval.selection", "holdout", "'val' when there is no data.target domain")
    source = _create(cfg, cfg.data.source, _train_preset(cfg, cfg.data.source, normalization))
    target = selection = None
    if need_target:
        target = _create(cfg, cfg.data.target, _train_preset(cfg, cfg.data.target, normalization))
    if holdout:
        selection_full = _create(cfg, cfg.data.target, _eval_preset(cfg.data.target, cfg.eval.protocol, normalization))
        keep = _holdout_split(cfg, len(selection_full))
        selection = Subset(selection_full, range(keep, len(selection_full)))
        if target is not None:
            target = Subset(target, range(keep))
        if same_domain(cfg.data.source, cfg.data.target):
            source = Subset(source, range(min(keep, len(source))))
    return TrainData(source, target, selection)


def build_eval_dataset(cfg: TrainConfig, *, normalization: str, domain: DomainConfig | None = None) -> Dataset:
    """The target val split (or ``domain``) with the evaluation protocol's transform, cut to ``eval.max_images``."""
    domain = domain or cfg.data.val
    dataset = _create(cfg, domain, _eval_preset(domain, cfg.eval.protocol, normalization))
    if cfg.eval.max_images is not None and cfg.eval.max_images < len(dataset):
        dataset = Subset(dataset, range(cfg.eval.max_images))
    return dataset


def eval_loader(dataset: Dataset, cfg: TrainConfig, *, pin_memory: bool) -> DataLoader:
    # An explicit generator: DataLoader would otherwise draw its base seed from torch's global RNG and shift
    # the training run's random stream at every evaluation.
    return DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=cfg.data.workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))

"""Frozen, typed configuration of a single training/evaluation run.

One dataclass per concern; :class:`TrainConfig` holds them all. Conversion from plain mappings
(TOML files, Ray trial configs, checkpoints) goes through :func:`from_dict`, which is strict: unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` naming the origin, the dotted key,
the bad value and what is allowed. Nothing here imports Ray.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

__all__ = [
    "ConfigError", "DomainConfig", "DataConfig", "ModelConfig", "OptimConfig", "AdaptConfig",
    "EvalConfig", "RuntimeConfig", "TrainConfig", "from_dict", "to_dict", "merge", "replace_path",
    "KNOWN_DATASETS",
]

# The label-free validators (trainables/validators.py implements them). Named here, without torch, so that the
# study layer can check a `uda/<name>` metric without importing torch (`study status` stays fast).
ValidatorName = Literal["source_val", "entropy", "im", "bnm", "snd", "d_confusion"]
VALIDATOR_NAMES: tuple[str, ...] = typing.get_args(ValidatorName)

KNOWN_DATASETS = ("cityscapes", "synthia", "gta5")


class ConfigError(ValueError):
    """A configuration value that cannot be used. Raised before any expensive work starts."""

    def __init__(self, source: str, key: str, value: Any, allowed: str):
        self.source, self.key, self.value, self.allowed = source, key, value, allowed
        super().__init__(f"{source}: {key} = {value!r} is not valid; allowed: {allowed}")

    def __reduce__(self):
        # Ray pickles a trial's exception to the driver; the default (cls(*self.args)) would call __init__ with
        # the one formatted message and fail with a TypeError that hid the real error.
        return type(self), (self.source, self.key, self.value, self.allowed), self.__dict__


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    # Validation inside __post_init__ does not know the file; from_dict re-raises with it.
    if not ok:
        raise ConfigError("<config>", key, value, allowed)


def _size(value: tuple[int, int], key: str) -> None:
    _check(len(value) == 2 and all(v > 0 for v in value), key, value, "[width, height] of positive integers")


@dataclass(frozen=True)
class DomainConfig:
    """One dataset split. ``size`` is the (width, height) images are resized to (the seed's crop_size)."""

    dataset: str = "cityscapes"
    root: str = "datasets/cityscapes"
    split: str = "train"
    size: tuple[int, int] = (1024, 512)
    crop: tuple[int, int] | None = None  # random (width, height) crop after resizing (with data.scale_range)
    max_items: int | None = None  # use only the first N items of the split (quick runs)

    def __post_init__(self):
        _check(self.dataset in KNOWN_DATASETS, "dataset", self.dataset, " | ".join(KNOWN_DATASETS))
        _size(self.size, "size")
        if self.crop is not None:
            _size(self.crop, "crop")
            _check(self.crop[0] <= self.size[0] and self.crop[1] <= self.size[1], "crop", self.crop,
                   f"a [width, height] no larger than size = {list(self.size)}")
        _check(self.max_items is None or self.max_items > 0, "max_items", self.max_items, "a positive integer")


@dataclass(frozen=True)
class DataConfig:
    """Source (labelled), target (unlabelled during adaptation) and target-val domains."""

    source: DomainConfig = field(default_factory=lambda: DomainConfig("synthia", "datasets/synthia", "train", (1280, 720)))
    target: DomainConfig | None = field(default_factory=lambda: DomainConfig("cityscapes", "datasets/cityscapes", "train", (1024, 512)))
    val: DomainConfig = field(default_factory=lambda: DomainConfig("cityscapes", "datasets/cityscapes", "val", (1024, 512)))
    num_classes: int = 16
    hflip: bool = True
    blur: bool = True
    scale_range: tuple[float, float] | None = None  # optional random scale + crop back to size
    workers: int = 2
    cache: bool = False  # decode + resize once, keep uint8 samples in memory

    def __post_init__(self):
        _check(self.num_classes in (16, 19), "num_classes", self.num_classes, "16 or 19")
        _check(self.workers >= 0, "workers", self.workers, "an integer >= 0")
        if self.scale_range is not None:
            lo, hi = self.scale_range
            _check(0 < lo <= hi, "scale_range", self.scale_range, "[low, high] with 0 < low <= high")


@dataclass(frozen=True)
class ModelConfig:
    """The segmentation network. ``name`` is a registered model (``dastudy models`` lists them)."""

    name: str = "deeplabv2_resnet101"
    multi_level: bool = True
    aspp_dilations: tuple[int, ...] = (6, 12, 18, 24)
    bn_policy: Literal["frozen", "stem_frozen"] = "frozen"
    normalization: Literal["auto", "caffe", "imagenet"] = "auto"  # auto: what the backbone weights expect
    weights: str | None = None  # ImageNet/DeepLab init file for the backbone
    init_checkpoint: str | None = None  # a dastudy checkpoint to start from (e.g. source-only)

    def __post_init__(self):
        _check(len(self.aspp_dilations) >= 1 and all(d > 0 for d in self.aspp_dilations),
               "aspp_dilations", self.aspp_dilations, "a list of positive integers, e.g. [6, 12, 18, 24]")


@dataclass(frozen=True)
class OptimConfig:
    """SGD + poly decay (AdaptSegNet/MaxSquare recipe)."""

    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_lr_mult: float = 10.0
    poly_power: float = 0.9
    iter_max: int = 200_000  # poly horizon
    iter_stop: int | None = 80_000  # stop earlier than the horizon (the seed's 80k of 200k)
    batch_size: int = 1
    lambda_seg: float = 0.1  # weight of the auxiliary CE in multi-level training

    def __post_init__(self):
        _check(self.lr > 0, "lr", self.lr, "a learning rate > 0")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "0 <= momentum < 1")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        _check(self.head_lr_mult > 0, "head_lr_mult", self.head_lr_mult, "> 0")
        _check(self.poly_power >= 0, "poly_power", self.poly_power, ">= 0")
        _check(self.iter_max > 0, "iter_max", self.iter_max, "a positive integer")
        _check(self.iter_stop is None or 0 < self.iter_stop <= self.iter_max, "iter_stop", self.iter_stop,
               f"an integer in [1, iter_max={self.iter_max}]")
        _check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
        _check(self.lambda_seg >= 0, "lambda_seg", self.lambda_seg, ">= 0")

    @property
    def iterations(self) -> int:
        return self.iter_stop if self.iter_stop is not None else self.iter_max


@dataclass(frozen=True)
class AdaptConfig:
    """Target-domain objective. ``mode="source_only"`` trains on the source alone (or the oracle on target labels).

    Adversarial adaptation follows AdaptSegNet (Tsai et al., CVPR 2018, https://arxiv.org/abs/1802.10349):
    one discriminator per output level, source label 0, target label 1.
    """

    mode: Literal["source_only", "adversarial", "target_loss"] = "adversarial"
    lambda_adv_main: float = 0.001
    lambda_adv_aux: float = 0.0002
    gan: Literal["vanilla", "lsgan"] = "vanilla"
    lr_d: float = 1e-4
    betas_d: tuple[float, float] = (0.9, 0.99)
    target_loss: Literal["none", "entropy", "maxsquare", "iw_maxsquare"] = "none"
    lambda_target: float = 0.1
    iw_ratio: float = 0.2
    d_ndf: int = 64  # discriminator width (AdaptSegNet: 64); the tiny CPU configs use less

    def __post_init__(self):
        _check(self.lambda_adv_main >= 0, "lambda_adv_main", self.lambda_adv_main, ">= 0")
        _check(self.lambda_adv_aux >= 0, "lambda_adv_aux", self.lambda_adv_aux, ">= 0")
        _check(self.lr_d > 0, "lr_d", self.lr_d, "a learning rate > 0")
        _check(all(0 <= b < 1 for b in self.betas_d), "betas_d", self.betas_d, "two values in [0, 1)")
        _check(self.lambda_target >= 0, "lambda_target", self.lambda_target, ">= 0")
        _check(0 <= self.iw_ratio <= 1, "iw_ratio", self.iw_ratio, "0 <= iw_ratio <= 1")
        _check(self.d_ndf > 0, "d_ndf", self.d_ndf, "a positive integer")
        _check(self.mode != "target_loss" or self.target_loss != "none", "target_loss", self.target_loss,
               "entropy | maxsquare | iw_maxsquare when mode = 'target_loss'")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol. ``full``: logits upsampled to the native label size (AdaptSegNet/ADVENT);
    ``seed``: labels resized to the input size with nearest (MaxSquare/seed)."""

    protocol: Literal["full", "seed"] = "full"
    flip: bool = False
    interval: int = 5000  # evaluate every N iterations (and at the end)
    max_images: int | None = None
    # What the best checkpoint is chosen on: target val, the labelled holdout, or a label-free validator
    # (trainables/validators.py: uda/source_val, uda/entropy, ...; higher = better).
    selection: Literal["val", "holdout", "source_val", "entropy", "im", "bnm", "snd", "d_confusion"] = "val"
    holdout_size: int = 100  # labelled images taken from the end of the target train split
    batch_size: int = 1
    # Metric the best checkpoint is chosen on (on the `selection` split). mIoU13 as the seed/MaxSquareLoss (defined
    # for 16- and 19-class models alike); mIoU19 needs a 19-class model.
    select_metric: Literal["mIoU19", "mIoU16", "mIoU13", "pixel_acc"] = "mIoU13"
    # Label-free validators reported at each evaluation as uda/<name> (the `selection` validator is always added);
    # sampled on validator_images fixed target-train images × validator_pixels fixed pixels each, and on the first
    # validator_images source-val images (source_val, d_confusion).
    validators: tuple[ValidatorName, ...] = ()
    validator_images: int = 4  # 4 × 256: about 9 % of a 100-image evaluation at demo size (docs/performance.md)
    validator_pixels: int = 256

    @property
    def active_validators(self) -> tuple[str, ...]:
        extra = (self.selection,) if self.selection not in ("val", "holdout", *self.validators) else ()
        return tuple(self.validators) + extra

    def __post_init__(self):
        _check(self.interval > 0, "interval", self.interval, "a positive integer")
        _check(self.validator_images > 0, "validator_images", self.validator_images, "a positive integer")
        _check(self.validator_pixels > 0, "validator_pixels", self.validator_pixels, "a positive integer")
        _check(self.max_images is None or self.max_images > 0, "max_images", self.max_images, "a positive integer")
        _check(self.holdout_size > 0, "holdout_size", self.holdout_size, "a positive integer")
        _check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")


@dataclass(frozen=True)
class RuntimeConfig:
    seed: int = 12345
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["off", "bf16"] = "off"
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = True
    log_interval: int = 50
    checkpoint_interval: int | None = None  # default: at every evaluation
    progress: bool = True
    threads: int | None = None  # torch intra-op CPU threads (None: torch's default, one per core)

    def __post_init__(self):
        # torch.manual_seed takes a signed 64-bit integer; 1e23 (a whole float, so accepted as int) overflowed it
        _check(0 <= self.seed < 2 ** 63, "seed", self.seed, "a whole number in 0 .. 2**63-1")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
               self.device, "auto | cpu | cuda | cuda:N")
        _check(self.log_interval > 0, "log_interval", self.log_interval, "a positive integer")
        _check(self.checkpoint_interval is None or self.checkpoint_interval > 0, "checkpoint_interval",
               self.checkpoint_interval, "a positive integer")
        _check(self.threads is None or self.threads > 0, "threads", self.threads, "a positive integer")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs; saved resolved as ``config.toml`` in its run directory."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self):
        _check(self.eval.select_metric != "mIoU19" or self.data.num_classes == 19, "eval.select_metric",
               self.eval.select_metric, "mIoU16 | mIoU13 | pixel_acc with data.num_classes = 16 (mIoU19 needs 19)")
        if self.adapt.mode != "source_only":
            _check(self.data.target is not None, "data.target", None,
                   f"a target domain (required by adapt.mode = {self.adapt.mode!r})")
        validators = self.eval.active_validators
        _check("d_confusion" not in validators or self.adapt.mode == "adversarial", "eval.validators", validators,
               "validators without d_confusion unless adapt.mode = 'adversarial' (it scores the trained D_main)")
        _check(self.data.target is not None or not set(validators) - {"source_val"}, "eval.validators", validators,
               "source_val only when there is no data.target domain (the others score target-train images)")


# ---------------------------------------------------------------------------------------------------------
# strict conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if tp is type(None):
        return "nothing (omit the key)"
    if dataclasses.is_dataclass(tp):
        return f"a table [{tp.__name__}]"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(source, key, value, _type_name(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key, source)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(source, key, value, _type_name(tp))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, value, _type_name(tp))
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(source, key, value, _type_name(tp))
        return tuple(_convert(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(source, key, value, _type_name(tp))
        return from_dict(tp, value, source=source, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(source, key, value, "a finite number")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise ConfigError(source, key, value, _type_name(tp))


def from_dict(cls: type, mapping: Mapping[str, Any], *, source: str = "<config>", prefix: str = ""):
    """Build the dataclass ``cls`` from ``mapping``; unknown keys, wrong types and bad values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(names), n=1)
        hint = f" (did you mean {'.'.join(filter(None, (prefix, close[0])))!r}?)" if close else ""
        raise ConfigError(source, key, mapping[unknown[0]],
                          "one of the known keys: " + ", ".join(sorted(names)) + hint)
    kwargs = {}
    for name, value in mapping.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(hints[name], value, key, source)
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a range check in __post_init__: attach the file and the full key
        key = f"{prefix}.{err.key}" if prefix and not err.key.startswith(prefix + ".") else err.key
        raise ConfigError(source, key, err.value, err.allowed) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples → lists, None values dropped) suitable for TOML/JSON."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as one level of dotted keys: ``{"optim": {"lr": 0.01}}`` → ``{"optim.lr": 0.01}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (update wins); used for presets + files + command-line overrides."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def replace_path(mapping: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``mapping`` with ``a.b.c`` set to ``value`` (creates intermediate tables)."""
    head, _, rest = dotted.partition(".")
    out = dict(mapping)
    if rest:
        inner = out.get(head, {})
        out[head] = replace_path(inner if isinstance(inner, Mapping) else {}, rest, value)
    else:
        out[head] = value
    return out

"""Loading weight files into dastudy models: every key that is not loaded is explained by a named rule.

Formats (``kind``):

* ``"deeplab_init"``: ``DeepLab_resnet_pretrained_init-f81d91e8.pth``, the DeepLabV2 init (ImageNet + COCO) used by
  AdaptSegNet, MaxSquare and the seed (ADVENT ships it as ``DeepLab_resnet_pretrained_imagenet.pth``). Every key is
  prefixed ``Scale.``. Its ``layer5`` is DeepLab's single classifier on the 2048-channel layer4, not DeeplabMulti's
  aux head on layer3: rule ``deeplab_init_layer5`` skips it, and the heads stay at their N(0, 0.01) init
  (``heads_stay_at_init``).
* ``"torchvision"``: torchvision's ImageNet ResNet (``resnet101-5d3b4d8f.pth`` as used by the published DeepLabV3+,
  or ``resnet101-63fe2227.pth``); ``fc.*`` is skipped by rule ``imagenet_classifier_fc``.
* ``"dastudy"``: our own checkpoints, ``{"model": state_dict, "meta": {"model": name, "num_classes": n, ...}}``
  (:func:`checkpoint_meta` writes the meta). Loaded strictly; another model or class count is an error.
* ``"deeplab_multi"``: published DeeplabMulti checkpoints (AdaptSegNet's raw state dicts, MaxSquare/seed dicts with
  ``state_dict``/``model_state`` and ``module.`` prefixes). Into the two-branch ``aspp_dilations=(6, 12)`` head the
  dead d=18/d=24 branch weights are skipped by rule ``dead_aspp_branches``; into a single-level model the aux head is
  skipped by ``aux_head_not_built``.

Anything else (a missing or unexpected key, a shape mismatch) raises :class:`WeightsError`. Files are read with
``torch.load(..., map_location="cpu", weights_only=True)`` and never downloaded: ``"imagenet"`` and
``"deeplab_init"`` name files in torch's hub cache (``torch.hub.get_dir()/checkpoints``).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

FORMATS = ("deeplab_init", "torchvision", "dastudy", "deeplab_multi")
KINDS = ("auto",) + FORMATS

# Named weights resolved in torch's hub cache: (file name, where it was published), preferred first.
NAMED_WEIGHTS: dict[str, tuple[tuple[str, str], ...]] = {
    # 5d3b4d8f are the weights the published DeepLabV3+ loads; 63fe2227 is torchvision's newer IMAGENET1K_V2 recipe.
    "imagenet": (("resnet101-5d3b4d8f.pth", "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth"),
                 ("resnet101-63fe2227.pth", "https://download.pytorch.org/models/resnet101-63fe2227.pth")),
    "deeplab_init": (
        ("DeepLab_resnet_pretrained_init-f81d91e8.pth",
         "http://vllab.ucmerced.edu/ytsai/CVPR18/DeepLab_resnet_pretrained_init-f81d91e8.pth (offline since ~2021)"),
        ("DeepLab_resnet_pretrained_imagenet.pth",
         "https://github.com/valeoai/ADVENT/releases/download/v0.1/DeepLab_resnet_pretrained_imagenet.pth")),
}
# Which input normalisation a format's weights were trained with (checked against the model's registry record).
# The published DeeplabMulti heads carry these four branches (AdaptSegNet model/deeplab_multi.py).
_PUBLISHED_ASPP = (6, 12, 18, 24)
_FORMAT_NORMALIZATION = {"deeplab_init": "caffe", "deeplab_multi": "caffe", "torchvision": "imagenet"}


class WeightsError(Exception):
    """A weight file is absent, unreadable, of another model, or has keys that no rule explains."""


def describe_unreadable(path: str | Path, err: BaseException) -> str:
    """What a file that torch.load refused is, in words: torch's own message for a text file is e.g. ``101``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as read_err:
        return f"{read_err.strerror or read_err}"
    if not head:
        return "it is empty (0 bytes), not a PyTorch checkpoint"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return f"a damaged or incompatible PyTorch file ({type(err).__name__}: {err})"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a PyTorch checkpoint (unknown binary content; {type(err).__name__}: {err})"
    first = text.splitlines()[0][:60] if text.strip() else ""
    return f"it is a text file (first line {first!r}), not a PyTorch checkpoint"


@dataclass(frozen=True)
class LoadSummary:
    """What :func:`load_weights` did. File-side keys use the file's own names, model-side keys the model's.

    ``missing`` (model keys the file did not fill) and ``unexpected`` (file keys not loaded) are each covered by a
    rule in ``skipped_by_rule`` (rule name -> keys); anything uncovered raises instead.
    """

    path: str
    format: str
    loaded: tuple[str, ...]
    skipped_by_rule: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()

    def __str__(self) -> str:
        rules = ", ".join(f"{name} ({len(keys)})" for name, keys in self.skipped_by_rule.items()) or "none"
        return (f"loaded {len(self.loaded)} tensors from {self.path} [{self.format}]; skipped by rule: {rules}; "
                f"{len(self.missing)} model keys left at init, {len(self.unexpected)} file keys unused")


@dataclass(frozen=True)
class _Rule:
    name: str
    side: Literal["file", "model"]
    matches: Callable[[str], bool]


def resolve_weights(spec: str | os.PathLike) -> Path:
    """The file a ``weights`` value names: a path, or ``"imagenet"``/``"deeplab_init"`` in torch's hub cache.

    Raises :class:`WeightsError` naming the path (and for named weights the expected files and where they were
    published) when nothing is there. Nothing is downloaded.
    """
    if isinstance(spec, str) and spec in NAMED_WEIGHTS:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        for file_name, _ in NAMED_WEIGHTS[spec]:
            if (folder / file_name).is_file():
                return folder / file_name
        options = "; ".join(f"{folder / name} (from {url})" for name, url in NAMED_WEIGHTS[spec])
        raise WeightsError(f"weights {spec!r} not found: put one of these files in place (nothing is downloaded "
                           f"at run time): {options}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist (named weights: {', '.join(NAMED_WEIGHTS)})")
    return path


def checkpoint_meta(model: nn.Module) -> dict[str, Any]:
    """The ``meta`` entry of a dastudy checkpoint for ``model`` (what the ``dastudy`` format checks on loading)."""
    meta: dict[str, Any] = {"model": _model_name(model), "num_classes": getattr(model, "num_classes", None)}
    for attr in ("multi_level", "aspp_dilations", "bn_policy"):
        if hasattr(model, attr):
            value = getattr(model, attr)
            meta[attr] = list(value) if isinstance(value, tuple) else value
    return meta


def finish_model(model: nn.Module, *, name: str, weights: str | os.PathLike | None) -> nn.Module:
    """Record the registry name on a freshly built model and load ``weights`` when given (used by the factories)."""
    model.model_name = name
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, path: str | os.PathLike, *, kind: str = "auto") -> LoadSummary:
    """Load a weight file into ``model`` in place; see the module docstring for formats and rules.

    Args:
        model: a dastudy segmentation model (built by :func:`models.create_model`).
        path: a file, or ``"imagenet"`` / ``"deeplab_init"`` (torch's hub cache).
        kind: ``"auto"`` (detected from the contents) or one of ``FORMATS``.

    Returns:
        A :class:`LoadSummary`, also logged at INFO level.

    Raises:
        WeightsError: absent/unreadable file, wrong model or class count, or keys no rule explains.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: allowed are {KINDS}")
    file = resolve_weights(path)
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights_only errors all mean the same thing to the user
        raise WeightsError(f"cannot read weight file {file}: {describe_unreadable(file, err)}") from err
    fmt = _detect_format(obj, file) if kind == "auto" else kind
    state = _extract_state(obj, fmt, file)
    _check_compatible(model, obj, fmt, file)
    summary = _load_matched(model, state, fmt, file)
    logger.info("%s", summary)
    return summary


def _model_name(model: nn.Module) -> str | None:
    return getattr(model, "model_name", None)


def _detect_format(obj: Any, file: Path) -> str:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{file} holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    if "model" in obj and "meta" in obj:
        return "dastudy"
    if "state_dict" in obj or "model_state" in obj:
        return "deeplab_multi"
    keys = [k for k in obj if isinstance(k, str)]
    if keys and all(k.startswith("Scale.") for k in keys):
        return "deeplab_init"
    stripped = [k.removeprefix("module.") for k in keys]
    if any(k.startswith("layer6.") for k in stripped):
        return "deeplab_multi"
    if any(k.startswith("fc.") for k in keys) and any(k.startswith("layer4.") for k in keys):
        return "torchvision"
    raise WeightsError(f"cannot tell the format of {file} (first keys: {keys[:5]}); pass kind= one of {FORMATS}")


def _extract_state(obj: Any, fmt: str, file: Path) -> dict[str, tuple[str, torch.Tensor]]:
    """Model-namespace key -> (the file's own key, tensor)."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{file} holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    if fmt == "dastudy":
        if not (isinstance(obj.get("model"), Mapping) and isinstance(obj.get("meta"), Mapping)):
            raise WeightsError(f"{file} is not a dastudy checkpoint: expected mappings under 'model' and 'meta', "
                               f"found keys {sorted(map(str, obj))[:10]}")
        raw = {k: (k, v) for k, v in obj["model"].items()}
    elif fmt == "deeplab_init":
        odd = [k for k in obj if not str(k).startswith("Scale.")]
        if odd:
            raise WeightsError(f"{file} is not a DeepLab init file: keys without the 'Scale.' prefix, e.g. {odd[:3]}")
        raw = {k.removeprefix("Scale."): (k, v) for k, v in obj.items()}
    elif fmt == "torchvision":
        raw = {k: (k, v) for k, v in obj.items()}
    else:  # deeplab_multi
        inner = obj.get("state_dict", obj.get("model_state", obj))
        raw = {k.removeprefix("module."): (k, v) for k, v in inner.items()}
    not_tensors = [orig for orig, v in raw.values() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(f"{file}: entries that are not tensors: {not_tensors[:5]}")
    return raw


def _check_compatible(model: nn.Module, obj: Any, fmt: str, file: Path) -> None:
    name = _model_name(model)
    if fmt == "dastudy":
        meta = obj["meta"]
        if name is not None and meta.get("model") != name:
            raise WeightsError(f"{file} is a checkpoint of model {meta.get('model')!r}, not of {name!r}")
        if meta.get("num_classes") != getattr(model, "num_classes", None):
            raise WeightsError(f"{file} has {meta.get('num_classes')} classes but the model {name!r} has "
                               f"{getattr(model, 'num_classes', None)}")
        for option in ("multi_level", "aspp_dilations"):  # name the option rather than list mismatched keys
            if option in meta and hasattr(model, option):
                saved, ours = meta[option], getattr(model, option)
                if (list(saved) if isinstance(saved, (list, tuple)) else saved) != \
                        (list(ours) if isinstance(ours, (list, tuple)) else ours):
                    raise WeightsError(f"{file} was saved with {option}={saved} but the model {name!r} has "
                                       f"{option}={ours}")
        return
    from ._registry import list_models, model_info  # the registry imports nothing from here at import time

    expected = _FORMAT_NORMALIZATION[fmt]
    if name in list_models() and model_info(name).normalization != expected:
        raise WeightsError(f"{file} holds {fmt} weights (trained on {expected}-normalised input) but {name!r} "
                           f"expects {model_info(name).normalization} input; use "
                           f"{'torchvision ImageNet' if expected == 'caffe' else 'DeepLab init'} weights for it")


def _rules(model: nn.Module, fmt: str) -> list[_Rule]:
    heads = tuple(f"{h}." for h in getattr(model, "head_module_names", lambda: ())())
    prefix = getattr(model, "backbone_prefix", "")
    no_step_counter = _Rule("num_batches_tracked_absent", "model", lambda k: k.endswith(".num_batches_tracked"))
    heads_at_init = _Rule("heads_stay_at_init", "model", lambda k: k.startswith(heads))
    if fmt == "deeplab_init":
        return [_Rule("deeplab_init_layer5", "file", lambda k: k.startswith("layer5.")), heads_at_init,
                no_step_counter]
    if fmt == "torchvision":
        return [_Rule("imagenet_classifier_fc", "file", lambda k: k.startswith(f"{prefix}fc.")), heads_at_init,
                no_step_counter]
    if fmt == "deeplab_multi":
        rules = [no_step_counter]
        dilations = tuple(getattr(model, "aspp_dilations", ()))
        if dilations and len(dilations) < len(_PUBLISHED_ASPP) and dilations == _PUBLISHED_ASPP[:len(dilations)]:
            dead = re.compile(r"layer[56]\.conv2d_list\.(\d+)\.")
            rules.append(_Rule("dead_aspp_branches", "file",
                               lambda k: bool((m := dead.match(k)) and int(m.group(1)) >= len(dilations))))
        if getattr(model, "multi_level", True) is False:
            rules.append(_Rule("aux_head_not_built", "file", lambda k: k.startswith("layer5.")))
        return rules
    return []


def _load_matched(model: nn.Module, state: dict[str, tuple[str, torch.Tensor]], fmt: str, file: Path) -> LoadSummary:
    if fmt == "torchvision":
        state = {getattr(model, "backbone_prefix", "") + k: v for k, v in state.items()}
    target = model.state_dict()
    rules = _rules(model, fmt)
    skipped: dict[str, list[str]] = {}
    skipped_file_keys: dict[str, str] = {}  # model-namespace key -> rule that skipped it in the file
    loaded: dict[str, torch.Tensor] = {}
    unexplained_unexpected, shape_errors = [], []
    for key, (original, tensor) in state.items():
        rule = next((r for r in rules if r.side == "file" and r.matches(key)), None)
        if rule is not None:
            skipped.setdefault(rule.name, []).append(original)
            skipped_file_keys[key] = rule.name
        elif key not in target:
            unexplained_unexpected.append(original)
        elif tuple(tensor.shape) != tuple(target[key].shape):
            shape_errors.append(f"{original}: file {tuple(tensor.shape)} vs model {tuple(target[key].shape)}")
        else:
            loaded[key] = tensor
    missing = [k for k in target if k not in loaded]
    unexplained_missing = []
    for key in missing:
        rule = next((r for r in rules if r.side == "model" and r.matches(key)), None)
        rule_name = rule.name if rule is not None else skipped_file_keys.get(key)
        if rule_name is None:
            unexplained_missing.append(key)
            continue
        listed = skipped.setdefault(rule_name, [])
        if key not in listed:  # a file key of the same name may be listed already
            listed.append(key)
    if unexplained_unexpected or unexplained_missing or shape_errors:
        parts = [f"{label} ({len(items)}): {items[:8]}{' ...' if len(items) > 8 else ''}"
                 for label, items in (("unexpected keys", unexplained_unexpected),
                                      ("missing keys", unexplained_missing), ("shape mismatches", shape_errors))
                 if items]
        raise WeightsError(f"{file} [{fmt}] does not fit model {_model_name(model)!r}: " + "; ".join(parts))
    model.load_state_dict({**target, **loaded}, strict=True)
    unused = tuple(orig for key, (orig, _) in state.items() if key not in loaded)
    return LoadSummary(path=str(file), format=fmt, loaded=tuple(loaded),
                       skipped_by_rule={name: tuple(keys) for name, keys in skipped.items()},
                       missing=tuple(missing), unexpected=unused)

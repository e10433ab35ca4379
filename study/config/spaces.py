"""Search spaces as data: named Optuna define-by-run functions over dotted :class:`TrainConfig` keys.

A space is a tuple of small *parts*; each part asks Optuna for a few values through :class:`Suggest` and may
return constants that follow from them (e.g. DeepLabV3+ has no auxiliary level, so its λ_adv_aux is 0). The
whole space returns a flat dict ``{"adapt.lambda_adv_main": 0.001, "optim.lr@deeplabv2_resnet101": 3e-4, ...}``
that the trainable applies onto the study's base run config (:func:`trainables.tune.apply_overrides`).

``key@qualifier`` names a *conditional copy* of a dimension: ``optim.lr@deeplabv2_resnet101`` and
``optim.lr@deeplabv3plus_resnet101`` are two Optuna parameters with their own ranges (TPE models them
separately instead of mixing two ranges under one name), and both are applied to ``optim.lr``.

The same definition serves three samplers: TPE and random sample the continuous ranges; ``grid`` turns every
dimension into its declared grid values (Optuna's ``GridSampler`` with the dict from :func:`grid_search_space`).
Spaces are parameterised (``[search.params]`` in a study file): unknown parameters are refused.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from trainables.tensorboard import PARAM_LABELS, param_label

if TYPE_CHECKING:
    import optuna

    from trainables.config import TrainConfig

__all__ = ["SpaceError", "Space", "Suggest", "SPACES", "get_space", "list_spaces", "resolve_params",
           "make_define_by_run", "DefineByRun", "grid_search_space", "describe_space", "split_qualifier",
           "param_label", "PARAM_LABELS", "label_optuna_study", "SEED_LAMBDA_GRID", "LR_RANGES", "hparam_domains"]

# The seed's λ_adv sensitivity sweep (its Table 3): 0.0005, 0.001, 0.002, 0.004.
SEED_LAMBDA_GRID = (0.0005, 0.001, 0.002, 0.004)

# Learning-rate ranges per backbone (SGD, backbone lr; the head gets head_lr_mult × lr). The ResNet-101 ranges
# bracket AdaptSegNet's 2.5e-4 (https://arxiv.org/abs/1802.10349) by ~2.5x each way; the tiny CPU variants train
# from scratch on the synthetic benchmark and need a much larger step.
LR_RANGES: dict[str, tuple[float, float]] = {
    "deeplabv2_resnet101": (1e-4, 1e-3),
    "deeplabv3plus_resnet101": (1e-4, 1e-3),
    "deeplabv2_tiny": (2e-3, 5e-2),
    "deeplabv3plus_tiny": (2e-3, 5e-2),
}
DEFAULT_LR_RANGE = (1e-4, 1e-2)


class SpaceError(ValueError):
    """A search space that cannot be used as configured (unknown name/parameter, no grid, ...)."""


def split_qualifier(name: str) -> str:
    """``optim.lr@deeplabv2_tiny`` → ``optim.lr`` (the TrainConfig key a sampled value is applied to)."""
    return name.split("@", 1)[0]


def label_optuna_study(ot_study: Any, *, metric: str, param_names: Sequence[str]) -> None:
    """Name the Optuna study's objective after the study metric with its unit (optuna-dashboard's axes then read
    ``val/mIoU16 (fraction)``, not "Objective 0": every other tool shows mIoU in percent, and the value Optuna holds
    is the fraction the sampler learns from, so the name says which; the trials' ``val/mIoU16 %`` attribute holds the
    percent) and record each Optuna parameter's display name as the user attribute ``param_labels``."""
    import warnings

    import optuna

    from trainables.tensorboard import percent_tag  # which metrics the other tools show in percent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ot_study.set_metric_names([f"{metric} (fraction)" if percent_tag(metric) else metric])
    ot_study.set_user_attr("param_labels", {name: param_label(name) for name in param_names})


class Suggest:
    """The helper every part asks through: one place decides between continuous and grid sampling.

    ``values`` holds what was picked so far, keyed by the TrainConfig key (qualifier stripped), so later parts can
    depend on earlier ones (the learning-rate range on the sampled backbone).
    """

    def __init__(self, trial: Any, *, grid: bool, base: TrainConfig | None = None):
        self.trial, self.grid, self.base = trial, grid, base
        self.values: dict[str, Any] = {}

    def _keep(self, name: str, value: Any) -> Any:
        self.values[split_qualifier(name)] = value
        return value

    def log_uniform(self, name: str, low: float, high: float, *, grid: Sequence[float] | None = None) -> float:
        if self.grid:
            if not grid:
                raise SpaceError(f"dimension {name!r} has no grid values: give its *_grid parameter in "
                                 "[search.params] or use sampler = 'tpe' / 'random'")
            # The recorder (describe/grid extraction) must not branch on grid values; Optuna sees a categorical.
            ask = getattr(self.trial, "suggest_grid", None) or self.trial.suggest_categorical
            return self._keep(name, ask(name, list(grid)))
        return self._keep(name, self.trial.suggest_float(name, low, high, log=True))

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._keep(name, self.trial.suggest_categorical(name, list(choices)))

    def current(self, key: str, default: Any) -> Any:
        """A value picked earlier in this trial, else ``default``."""
        return self.values.get(key, default)


Part = Callable[[Suggest, Mapping[str, Any]], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Space:
    """A named, parameterised search space. ``params`` holds the defaults (and so the allowed names)."""

    name: str
    description: str
    parts: tuple[Part, ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    def run(self, trial: Any, params: Mapping[str, Any], *, grid: bool,
            base: TrainConfig | None = None) -> dict[str, Any]:
        s = Suggest(trial, grid=grid, base=base)
        constants: dict[str, Any] = {}
        for part in self.parts:
            constants.update(part(s, params) or {})
        return constants


# ---------------------------------------------------------------------------------------------------------
# parts


def _base_model(s: Suggest) -> str:
    return s.current("model.name", s.base.model.name if s.base is not None else "deeplabv2_resnet101")


def _level_constants(model_name: str) -> dict[str, Any]:
    # Single-level networks (DeepLabV3+) have no auxiliary output: no aux discriminator, no aux weight.
    from models import model_info

    if model_info(model_name).multi_level_capable:
        return {}
    return {"model.multi_level": False, "adapt.lambda_adv_aux": 0.0}


def lambda_adv(s: Suggest, p: Mapping[str, Any]) -> None:
    """λ_adv of the main output (log-uniform; grid: the seed's four values)."""
    s.log_uniform("adapt.lambda_adv_main", p["lambda_low"], p["lambda_high"], grid=p["lambda_grid"])


def lambda_adv_levels(s: Suggest, p: Mapping[str, Any]) -> None:
    """λ_adv per output level of multi-level AdaptSegNet (main and auxiliary)."""
    s.log_uniform("adapt.lambda_adv_main", p["lambda_low"], p["lambda_high"], grid=p["lambda_grid"])
    s.log_uniform("adapt.lambda_adv_aux", p["lambda_aux_low"], p["lambda_aux_high"], grid=p["lambda_aux_grid"])


def learning_rate(s: Suggest, p: Mapping[str, Any]) -> None:
    """Backbone learning rate with a range per backbone (conditional on the sampled or configured model)."""
    model = _base_model(s)
    low, high = LR_RANGES.get(model, DEFAULT_LR_RANGE)
    low, high = p.get("lr_low") or low, p.get("lr_high") or high
    if not 0 < low < high:  # one bound given, the other the backbone's default: checked per backbone
        raise SpaceError(f"search.params: the learning-rate range of {model} would be [{low:g}, {high:g}] "
                         f"(lr_low = {p.get('lr_low') or 'default'}, lr_high = {p.get('lr_high') or 'default'}; "
                         f"{model}'s default is {LR_RANGES.get(model, DEFAULT_LR_RANGE)}); need lr_low < lr_high")
    s.log_uniform(f"optim.lr@{model}", low, high, grid=p.get("lr_grid") or None)


def discriminator_lr(s: Suggest, p: Mapping[str, Any]) -> None:
    """Discriminator learning rate (Adam)."""
    s.log_uniform("adapt.lr_d", p["lr_d_low"], p["lr_d_high"], grid=p["lr_d_grid"])


def backbone(s: Suggest, p: Mapping[str, Any]) -> dict[str, Any]:
    """Segmentation network, categorical over registered models of kind segmentation. Per-model settings
    follow the choice: ``weights`` (backbone init, e.g. "deeplab_init" / "imagenet") and ``init_checkpoints``
    (each backbone's own source-only model), tables keyed by model name."""
    from models import list_models

    registered = list_models(kind="segmentation")
    choices = list(p["models"]) or [m for m in registered if not m.endswith("_tiny")]
    for key in ("models", "weights", "init_checkpoints", "model_overrides"):
        unknown = [m for m in (choices if key == "models" else p[key]) if m not in registered]
        if unknown:
            raise SpaceError(f"search.params.{key}: {unknown} are not registered segmentation models "
                             f"(registered: {', '.join(registered)})")
    model = s.categorical("model.name", choices)
    constants = _level_constants(model)
    if model in p["weights"]:
        constants["model.weights"] = p["weights"][model]
    if model in p["init_checkpoints"]:
        constants["model.init_checkpoint"] = p["init_checkpoints"][model]
    for key, value in p["model_overrides"].get(model, {}).items():
        if key in ("model.name", "model.weights", "model.init_checkpoint"):
            raise SpaceError(f"search.params.model_overrides.{model}.{key}: set by the space itself (models, weights, "
                             "init_checkpoints)")
        constants[key] = value
    return constants


def gan_loss(s: Suggest, p: Mapping[str, Any]) -> None:
    """GAN objective; λ_adv gets a range per objective (LS-GAN needs ~10x larger weights, AdaptSegNet README)."""
    gan = s.categorical("adapt.gan", p["gans"])
    low, high = (p["lambda_low"], p["lambda_high"]) if gan == "vanilla" else (p["lsgan_low"], p["lsgan_high"])
    s.log_uniform(f"adapt.lambda_adv_main@{gan}", low, high)


def target_loss(s: Suggest, p: Mapping[str, Any]) -> None:
    """Unsupervised target loss (entropy, MaxSquare, image-wise MaxSquare) and its weight."""
    loss = s.categorical("adapt.target_loss", p["target_losses"])
    if loss != "none":
        s.log_uniform(f"adapt.lambda_target@{loss}", p["lambda_target_low"], p["lambda_target_high"],
                      grid=p["lambda_target_grid"])


def seeds(s: Suggest, p: Mapping[str, Any]) -> None:
    """Repeats: the run seed as a categorical (a grid dimension under the grid sampler)."""
    s.categorical("runtime.seed", list(p["seeds"]))


# ---------------------------------------------------------------------------------------------------------
# registry

_LAMBDA = {"lambda_low": 1e-4, "lambda_high": 1e-2, "lambda_grid": list(SEED_LAMBDA_GRID)}
_LAMBDA_AUX = {"lambda_aux_low": 2e-5, "lambda_aux_high": 2e-3,
               "lambda_aux_grid": [v / 5 for v in SEED_LAMBDA_GRID]}
_LR = {"lr_low": 0.0, "lr_high": 0.0, "lr_grid": []}  # 0 / []: the per-backbone default (LR_RANGES)
_LR_D = {"lr_d_low": 1e-5, "lr_d_high": 1e-3, "lr_d_grid": [5e-5, 1e-4, 2e-4]}
_SEEDS = {"seeds": [1, 2, 3]}
# models []: every registered non-tiny segmentation model; weights / init_checkpoints: {model: file or name};
# model_overrides: {model: {dotted run-config key: value}} applied with that backbone (e.g. V3+ at batch 2).
_MODELS = {"models": [], "weights": {}, "init_checkpoints": {}, "model_overrides": {}}

SPACES: dict[str, Space] = {}


def _register(space: Space) -> Space:
    SPACES[space.name] = space
    return space


_register(Space("lambda_adv", "λ_adv of the main output (log-uniform; grid = the seed's 0.0005/0.001/0.002/0.004)",
                (lambda_adv,), dict(_LAMBDA)))
_register(Space("lambda_adv_levels", "λ_adv per output level (main, aux) for multi-level AdaptSegNet",
                (lambda_adv_levels,), {**_LAMBDA, **_LAMBDA_AUX}))
_register(Space("lr", "backbone learning rate, range per backbone", (learning_rate,), dict(_LR)))
_register(Space("lr_d", "discriminator learning rate", (discriminator_lr,), dict(_LR_D)))
_register(Space("backbone", "segmentation network over registered models", (backbone,), dict(_MODELS)))
_register(Space("gan", "GAN objective (vanilla BCE / LS-GAN) with a λ_adv range per objective", (gan_loss,),
                {"gans": ["vanilla", "lsgan"], "lambda_low": 1e-4, "lambda_high": 1e-2,
                 "lsgan_low": 1e-3, "lsgan_high": 1e-1}))
_register(Space("target_loss", "target-domain loss and its weight", (target_loss,),
                {"target_losses": ["entropy", "maxsquare", "iw_maxsquare"], "lambda_target_low": 0.01,
                 "lambda_target_high": 1.0, "lambda_target_grid": [0.05, 0.1, 0.2]}))
_register(Space("seeds", "repeats over run seeds", (seeds,), dict(_SEEDS)))
_register(Space("lambda_sensitivity", "the seed's λ_adv sweep × seeds × backbone (meant for the grid sampler)",
                (backbone, lambda_adv, seeds), {**_MODELS, **_LAMBDA, **_SEEDS}))
_register(Space("lr_backbone", "backbone × learning rate (range per backbone) × discriminator lr",
                (backbone, learning_rate, discriminator_lr), {**_MODELS, **_LR, **_LR_D}))
_register(Space("lambda_seeds", "λ_adv × run seeds (replicates; meant for the grid sampler, λ = 0 a control)",
                (lambda_adv, seeds), {**_LAMBDA, **_SEEDS}))
_register(Space("lambda_lr", "λ_adv × backbone learning rate (the demo's space)", (lambda_adv, learning_rate),
                {**_LAMBDA, **_LR}))
_register(Space("adversarial_schedule", "λ_adv main and aux × backbone lr × discriminator lr: what population-based "
                "training mutates (study/run/pbt.py)", (lambda_adv_levels, learning_rate, discriminator_lr),
                {**_LAMBDA, **_LAMBDA_AUX, **_LR, **_LR_D}))


def list_spaces() -> list[str]:
    return sorted(SPACES)


def get_space(name: str) -> Space:
    """The registered space ``name``; an unknown name lists the known ones."""
    try:
        return SPACES[name]
    except KeyError:
        raise SpaceError(f"unknown search space {name!r}; known spaces: {', '.join(list_spaces())}") from None


def resolve_params(space: Space, params: Mapping[str, Any], *, source: str = "search.params") -> dict[str, Any]:
    """The space's defaults updated with ``params``; unknown names and wrongly typed values are refused."""
    unknown = sorted(set(params) - set(space.params))
    if unknown:
        import difflib

        known = ", ".join(sorted(space.params)) or "none"
        close = difflib.get_close_matches(unknown[0], sorted(space.params), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpaceError(f"{source}.{unknown[0]}: unknown parameter of space {space.name!r} (known: {known}{hint})")
    out = dict(space.params)
    for key, value in params.items():
        default = space.params[key]
        if isinstance(default, list):
            ok = isinstance(value, (list, tuple))
        elif isinstance(default, dict):
            inner = Mapping if key == "model_overrides" else str  # {model: {key: value}}, else {model: str}
            ok = isinstance(value, Mapping) and all(isinstance(v, inner) for v in value.values())
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise SpaceError(f"{source}.{key} = {value!r}: expected {type(default).__name__} "
                             f"like the default {default!r}")
        out[key] = list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, Mapping) else value
    for key, value in out.items():
        if key.endswith(("_low", "_high")) and not (value == 0 and space.params[key] == 0):
            # 0 is "the per-backbone default" only where the default itself is 0 (lr_low / lr_high)
            if not value > 0:
                raise SpaceError(f"{source}.{key} = {value!r}: must be > 0 (a bound of a log-uniform range)")
        if key.endswith("_low") and value:
            high = out.get(key[:-4] + "_high")
            if high and not value < high:
                raise SpaceError(f"{source}: need 0 < {key} < {key[:-4]}_high, got {value} and {high}")
        if key.endswith("_grid"):
            # λ_adv = 0 is allowed on the grid: it is the control arm (same training, no adversarial gradient).
            floor = 0 if key == "lambda_grid" else 1e-300
            bad = [v for v in value if isinstance(v, bool) or not isinstance(v, (int, float))
                   or not math.isfinite(v) or v < floor]
            if bad:
                raise SpaceError(f"{source}.{key} = {value!r}: {bad[0]!r} is not a finite number "
                                 f"{'>= 0' if floor == 0 else '> 0'} (grid values of a log-uniform dimension)")
        if key == "seeds":
            bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or v < 0]
            if bad or not value:
                raise SpaceError(f"{source}.seeds = {value!r}: expected a non-empty list of integers >= 0")
        if key in ("models", "gans", "target_losses") and not all(isinstance(v, str) for v in value):
            raise SpaceError(f"{source}.{key} = {value!r}: expected a list of names (strings)")
    return out


@dataclass(frozen=True)
class DefineByRun:
    """The define-by-run callable OptunaSearch calls once per trial (a picklable object, not a closure: Ray
    pickles the searcher into the experiment state). Constants the space returns are merged by Ray."""

    space_name: str
    params: Mapping[str, Any]
    grid: bool = False
    base: Any = None  # the study's base TrainConfig (read-only)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        return get_space(self.space_name).run(trial, self.params, grid=self.grid, base=self.base)


def make_define_by_run(space: Space, params: Mapping[str, Any], *, grid: bool = False,
                       base: TrainConfig | None = None) -> DefineByRun:
    """The space as OptunaSearch's ``space`` argument (the space must be registered under its name)."""
    if SPACES.get(space.name) is not space:
        raise SpaceError(f"space {space.name!r} is not the registered one; register it in study.config.spaces.SPACES")
    return DefineByRun(space.name, dict(params), grid, base)


# ---------------------------------------------------------------------------------------------------------
# describing a space without sampling it: walk every categorical branch with a recording trial


class _Recorder:
    """Quacks like ``optuna.Trial``: records each suggest call; categoricals take the value forced for this walk.
    Grid dimensions (``suggest_grid``) are recorded without branching on them."""

    def __init__(self, forced: Mapping[str, Any]):
        self.forced = forced
        self.calls: dict[str, dict[str, Any]] = {}
        self.open_choices: dict[str, list[Any]] = {}

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False, step: float | None = None):
        self.calls[name] = {"type": "float", "low": low, "high": high, "log": log}
        return math.sqrt(low * high) if log else (low + high) / 2

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False, step: int = 1):
        self.calls[name] = {"type": "int", "low": low, "high": high, "log": log}
        return low

    def suggest_grid(self, name: str, values: Sequence[Any]):
        self.calls[name] = {"type": "grid", "choices": list(values)}
        return values[0]

    def suggest_categorical(self, name: str, choices: Sequence[Any]):
        self.calls[name] = {"type": "categorical", "choices": list(choices)}
        if name not in self.forced:
            self.open_choices[name] = list(choices)
        return self.forced.get(name, choices[0])


Branch = tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]


def _walk(space: Space, params: Mapping[str, Any], *, grid: bool, base: TrainConfig | None,
          limit: int = 512) -> list[Branch]:
    """Every branch of the space: (categorical choices taken, suggest calls, constants)."""
    branches: list[Branch] = []
    stack: list[dict[str, Any]] = [{}]
    while stack:
        forced = stack.pop()
        rec = _Recorder(forced)
        constants = space.run(rec, params, grid=grid, base=base)
        if rec.open_choices:
            # Branch on the first open categorical; later ones are reached from each branch.
            name, choices = next(iter(rec.open_choices.items()))
            stack.extend({**forced, name: c} for c in reversed(choices))
            continue
        branches.append((dict(forced), rec.calls, constants))
        if len(branches) > limit:
            raise SpaceError(f"space {space.name!r} has more than {limit} branches; describe it by hand")
    return branches


def _conditions(branches: Sequence[Branch], chosen: Sequence[int]) -> list[dict[str, Any]]:
    """The categorical choices that select the branches ``chosen`` (keys that do not matter are dropped)."""
    if len(chosen) == len(branches):
        return []
    keys = {k for forced, _, _ in branches for k in forced}
    matter = [k for k in sorted(keys)
              if {repr(branches[i][0].get(k)) for i in chosen} != {repr(b[0].get(k)) for b in branches}]
    out: list[dict[str, Any]] = []
    for i in chosen:
        when = {k: branches[i][0][k] for k in matter if k in branches[i][0]}
        if when not in out:
            out.append(when)
    return out


def grid_search_space(space: Space, params: Mapping[str, Any], *,
                      base: TrainConfig | None = None) -> dict[str, list[Any]]:
    """The ``{param: values}`` dict for ``optuna.samplers.GridSampler``; conditional dimensions are refused
    (a grid point would then be 'visited' by trials that never asked for some of its values)."""
    branches = _walk(space, params, grid=True, base=base)
    names = [sorted(calls) for _, calls, _ in branches]
    if any(n != names[0] for n in names):
        raise SpaceError(f"space {space.name!r} asks for different parameters on different branches; the grid "
                         "sampler needs an unconditional space (use sampler = 'tpe' or 'random')")
    grid: dict[str, list[Any]] = {}
    for _, calls, _ in branches:
        for name, call in calls.items():
            if call["type"] not in ("grid", "categorical"):
                raise SpaceError(f"space {space.name!r}: dimension {name!r} is continuous and has no grid")
            grid.setdefault(name, call["choices"])
    return grid


def grid_size(grid: Mapping[str, Sequence[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())


def describe_space(space: Space, params: Mapping[str, Any], *, sampler: str,
                   base: TrainConfig | None = None) -> dict[str, Any]:
    """A JSON-ready description (saved as ``space.json`` in the study directory): every dimension with its
    distribution, the Config key it applies to and, for conditional ones, the choices that select it."""
    grid = sampler == "grid"
    branches = _walk(space, params, grid=grid, base=base)
    dims: dict[str, list[dict[str, Any]]] = {}
    for name in dict.fromkeys(n for _, calls, _ in branches for n in calls):
        variants: list[tuple[dict[str, Any], list[int]]] = []
        for i, (_, calls, _) in enumerate(branches):
            if name in calls:
                for call, members in variants:
                    if call == calls[name]:
                        members.append(i)
                        break
                else:
                    variants.append((calls[name], [i]))
        dims[name] = [{**call, "applies_to": split_qualifier(name), "when": _conditions(branches, members)}
                      for call, members in variants]
    constants: list[dict[str, Any]] = []
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for i, (_, _, consts) in enumerate(branches):
        if consts:
            groups.setdefault(json.dumps(consts, sort_keys=True), (consts, []))[1].append(i)
    for consts, members in groups.values():
        constants.append({"set": consts, "when": _conditions(branches, members)})
    out: dict[str, Any] = {
        "name": space.name,
        "description": space.description,
        "sampler": sampler,
        "params": dict(params),
        "parts": [p.__name__ for p in space.parts],
        "dimensions": dims,
        "constants": constants,
    }
    if grid:
        g = grid_search_space(space, params, base=base)
        out["grid"] = g
        out["grid_size"] = grid_size(g)
    json.dumps(out)  # fail here, not when writing the study directory
    return out


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every point of a grid (tests and the status table)."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def hparam_domains(description: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The HParams domains of a space description (``space.json``): an interval per continuous dimension, the
    values of a grid or categorical one, ``log`` for λ- and lr-like log-uniform dimensions; keyed by display
    name, so the per-backbone copies of one parameter (``optim.lr@deeplabv2_tiny``, ...) are one column whose
    interval covers all of them."""
    out: dict[str, dict[str, Any]] = {}
    for name, variants in description.get("dimensions", {}).items():
        label = param_label(name)
        for d in variants:
            if d.get("type") in ("float", "int"):
                new: dict[str, Any] = {"low": d["low"], "high": d["high"], "log": bool(d.get("log"))}
            else:  # grid values of a log-uniform dimension, or a categorical
                new = {"values": list(d.get("choices", [])), "log": d.get("type") == "grid"}
            old = out.get(label)
            if old is None:
                out[label] = new
            elif "values" in old and "values" in new:
                old["values"] += [v for v in new["values"] if v not in old["values"]]
            else:  # an interval (also over another variant's values) covering both
                points = [x for dom in (old, new) for x in (dom.get("values") or [dom["low"], dom["high"]])]
                out[label] = {"low": min(points), "high": max(points), "log": old["log"] or new["log"]}
    return out

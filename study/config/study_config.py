"""Study configuration: what to search, how to schedule, what each trial may use, and the base run config.

A study file (or a preset shipped in :mod:`study.presets`) is TOML::

    name = "demo"
    metric = "mIoU16"            # prefixed with val/ or select/ according to `selection`
    mode = "max"
    num_samples = 8
    max_concurrent_trials = 2
    [search]     space = "lambda_lr", sampler = "tpe", seed = 0, [search.params] ...
    [scheduler]  kind = "asha", max_t = 4, grace_period = 1, reduction_factor = 2
    [resources]  cpu = 1, gpu = 0.25
    [baseline]   config = "synth_source", overrides = {...}   # optional source-only run, init of every trial
    [train]      extends = "synth_adapt" ...                  # the base TrainConfig every trial starts from

Everything is validated strictly (unknown keys, types, ranges, unknown space parameters, gpu 1.5) by
:func:`load_study_config`; what needs the cluster or the filesystem (dataset roots, GPUs present, shared storage)
is checked by :mod:`study.config.resources` before Ray starts any trial.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from study.config.pbt_settings import check_pbt
from study.config.files import load_toml, parse_overrides
from study.config.spaces import SpaceError, describe_space, get_space, grid_search_space, grid_size, resolve_params
from trainables.config import VALIDATOR_NAMES as VALIDATORS
from trainables.config import ConfigError, TrainConfig, from_dict, merge, to_dict

__all__ = ["SearchConfig", "SchedulerConfig", "ResourcesConfig", "BaselineConfig", "StudyConfig",
           "load_study_config", "study_from_dict", "study_to_dict", "n_evaluations", "absolutize_paths",
           "baseline_train_config", "metric_tags",
           "METRICS"]

METRICS = ("mIoU19", "mIoU16", "mIoU13", "pixel_acc")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _check(ok: bool, source: str, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(source, key, value, allowed)


@dataclass(frozen=True)
class SearchConfig:
    """Which registered space, which Optuna sampler (seeded), and the space's parameters."""

    space: str = "lambda_adv"
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = 0
    startup_trials: int = 4  # TPE's random start (parallel trials: constant liar, no concurrency cap; study/run/tuner.py)
    params: Any = field(default_factory=dict)
    # Optuna storage URL (sqlite:///..., postgresql://...); default: a journal file inside the study directory.
    storage: str | None = None
    # Replicates: every configuration the sampler proposes runs once per seed (runtime.seed); Optuna is told the
    # replicate mean once per configuration and num_samples counts configurations (study/run/replicates.py).
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SchedulerConfig:
    """ASHA on ``training_iteration`` (= number of evaluations), FIFO (no early stopping), or population-based
    training (``pbt`` / ``pb2``, adversarial studies: its ``[scheduler.pbt]`` table is read by study/run/pbt.py)."""

    kind: Literal["asha", "fifo", "pbt", "pb2"] = "asha"
    max_t: int | None = None  # default: every evaluation of a full run
    grace_period: int = 1
    reduction_factor: float = 2.0
    pbt: Any = field(default_factory=dict)


@dataclass(frozen=True)
class ResourcesConfig:
    """Per-trial request. ``gpu`` is a fraction (0.25 = four trials per GPU) or a whole number."""

    cpu: float = 1.0
    gpu: float = 0.0
    # A trial PENDING this long (no node can host it, and an autoscaler did not add one) ends the study with a
    # message naming the missing resource instead of waiting forever (study.config.resources.PendingWatchdog).
    pending_timeout: float = 600.0
    # The cluster adds nodes on demand (KubeRay autoscaler, `ray up` worker types): a request no live node can host
    # is asked of the autoscaler instead of refused; pending_timeout still ends a study whose nodes never come.
    autoscaling: bool = False


@dataclass(frozen=True)
class BaselineConfig:
    """A source-only run trained once before the study; its checkpoint initialises every trial.

    ``config``: a shipped run config name or a file; unset: the study's own ``[train]`` table with
    ``adapt.mode = "source_only"``. ``overrides``: a table applied on top (e.g. more iterations)."""

    config: str | None = None
    overrides: Any = field(default_factory=dict)


@dataclass(frozen=True)
class StudyConfig:
    name: str
    metric: str = "val/mIoU16"  # in a file: "mIoU16" (prefixed by `selection`) or the full reported key
    mode: Literal["max", "min"] = "max"
    num_samples: int = 8
    max_concurrent_trials: int = 2
    max_failures: int = 0
    checkpoints_to_keep: int = 2  # per trial, the best by the study metric; Ray also keeps the latest
    # false: the checkpoints of PRUNED and FAILED trials are deleted when they end (1,000-trial studies)
    keep_pruned_checkpoints: bool = False
    # Every k-th evaluation (and the last) carries a checkpoint: less checkpoint I/O and, on an object store (where
    # Ray forces a snapshot every checkpoints_to_keep checkpoints of a trial), k times fewer snapshots, at the price
    # of repeating up to k - 1 evaluations after a crash (issue 12).
    checkpoint_every: int = 1
    selection: Literal["val", "holdout"] = "val"
    reuse_actors: bool = False
    description: str = ""
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    baseline: BaselineConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def study_metric(self) -> str:
        """The reported key the search optimises: ``val/<name>`` or ``select/<name>`` (``metric`` itself once
        loaded: a bare name in a file is prefixed according to ``selection``)."""
        return self.metric

    @property
    def replicates(self) -> int:
        """Seeds each configuration runs on (1 without ``search.seeds``)."""
        return len(self.search.seeds or ()) or 1

    @property
    def num_trials(self) -> int:
        """Ray trials the study runs: ``num_samples`` configurations × their replicates."""
        return self.num_samples * self.replicates

    @property
    def max_t(self) -> int:
        return self.scheduler.max_t or n_evaluations(self.train)

    @property
    def space_params(self) -> dict[str, Any]:
        return resolve_params(get_space(self.search.space), self.search.params)

    def describe_space(self) -> dict[str, Any]:
        return describe_space(get_space(self.search.space), self.space_params, sampler=self.search.sampler,
                              base=self.train)


def n_evaluations(train: TrainConfig) -> int:
    """Evaluations in a full run: every ``eval.interval`` iterations and once more at the end if the last
    interval is incomplete. This is the unit of ``training_iteration`` and so of ASHA's ``max_t``."""
    return math.ceil(train.optim.iterations / train.eval.interval)


def absolutize_paths(train: Mapping[str, Any], *, relative_to: Path) -> dict[str, Any]:
    """Dataset roots and weight files as absolute paths: trials run with another working directory."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in train.items()}
    for domain in ("source", "target", "val"):
        table = out.get("data", {}).get(domain)
        if isinstance(table, Mapping) and isinstance(table.get("root"), str):
            out["data"][domain] = {**table, "root": str((relative_to / table["root"]).resolve())}
    for key in ("weights", "init_checkpoint"):
        value = out.get("model", {}).get(key)
        if isinstance(value, str) and value:
            out["model"][key] = str((relative_to / value).resolve())
    return out


def _resolve_train_table(table: Any, source: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(source, "train", table, "a table [train] holding the base run config")
    table = dict(table)
    parent = table.pop("extends", None)
    if parent is None:
        return table
    if not isinstance(parent, str):
        raise ConfigError(source, "train.extends", parent, "a shipped run config name or a file path")
    try:
        return merge(load_toml(parent, "configs"), table)
    except FileNotFoundError as err:
        raise ConfigError(source, "train.extends", parent, str(err)) from None


def study_from_dict(data: Mapping[str, Any], *, source: str, cwd: Path | None = None) -> StudyConfig:
    """Validate a study mapping (``train.extends`` resolved here) into a :class:`StudyConfig`."""
    data = dict(data)
    cwd = Path.cwd() if cwd is None else cwd
    data["train"] = absolutize_paths(_resolve_train_table(data.get("train", {}), source), relative_to=cwd)
    selection = data.get("selection", "val")
    # The study chooses the selection split; the engine's best checkpoint follows it.
    if selection in ("val", "holdout"):
        data["train"] = merge(data["train"], {"eval": {"selection": selection}})
    metric = data.get("metric", "mIoU16")
    if isinstance(metric, str) and "/" not in metric and selection in ("val", "holdout"):
        # The selection split decides the prefix: select/ = labelled holdout of target train (no val leakage).
        data["metric"] = f"{'select' if selection == 'holdout' else 'val'}/{metric}"
    search = data.get("search")
    if isinstance(search, Mapping) and isinstance(search.get("params"), Mapping):
        params = dict(search["params"])
        for key in ("init_checkpoints", "weights"):
            table = params.get(key)
            if isinstance(table, Mapping):  # file paths (not named weights such as "imagenet") made absolute
                params[key] = {m: str((cwd / v).resolve()) if isinstance(v, str) and ("/" in v or v.endswith(
                    (".pt", ".pth"))) else v for m, v in table.items()}
        data["search"] = {**search, "params": params}
    if isinstance(data.get("baseline"), Mapping) and isinstance(data["train"].get("model"), Mapping):
        # The baseline's checkpoint initialises every trial, replacing an init_checkpoint the base config names
        # (e.g. synth_adapt's runs/synth_source/...: the study trains and uses its own).
        data["train"] = {**data["train"], "model": {k: v for k, v in data["train"]["model"].items()
                                                    if k != "init_checkpoint"}}
    bare = data["metric"].partition("/")[2] if isinstance(data.get("metric"), str) else None
    if isinstance(data.get("metric"), str) and data["metric"].startswith("uda/") and bare in VALIDATORS:
        # A label-free validator as the objective (trainables/validators.py): every trial reports it and keeps its
        # checkpoint by it; no target label is read for the search or the selection.
        data["train"] = merge(data["train"], {"eval": {"selection": bare}})
    elif bare in METRICS:  # the engine's own best checkpoint follows the study metric
        data["train"] = merge(data["train"], {"eval": {"select_metric": bare}})
    if "name" not in data:
        raise ConfigError(source, "name", None, "a study name (letters, digits, _ . -)")
    cfg = from_dict(StudyConfig, data, source=source)
    _validate(cfg, source)
    # Where it came from, for the pre-launch checks' messages (an attribute, not a field: not in study.toml).
    object.__setattr__(cfg, "source", source)
    return cfg


def _validate(cfg: StudyConfig, source: str) -> None:
    _check(bool(_NAME.match(cfg.name)), source, "name", cfg.name,
           "letters, digits, '_', '.', '-' (a directory name; not starting with '.' or '-')")
    prefix, _, metric = cfg.metric.partition("/")
    expected = "select" if cfg.selection == "holdout" else "val"
    _check((metric in METRICS and prefix == expected) or (prefix == "uda" and metric in VALIDATORS), source,
           "metric", cfg.metric, "uda/<validator> (" + " | ".join(VALIDATORS) + ") or " +
           " | ".join(METRICS) + f" (optionally as {expected}/<name>: selection = {cfg.selection!r} reads the "
           f"{'labelled holdout of target train' if expected == 'select' else 'target val split'})")
    _check(metric != "mIoU19" or cfg.train.data.num_classes == 19, source, "metric", metric,
           "mIoU16 | mIoU13 | pixel_acc for a 16-class study (mIoU19 needs data.num_classes = 19)")
    _check(cfg.num_samples >= 1, source, "num_samples", cfg.num_samples, "a positive integer")
    _check(cfg.max_concurrent_trials >= 1, source, "max_concurrent_trials", cfg.max_concurrent_trials,
           "a positive integer")
    _check(cfg.max_failures >= -1, source, "max_failures", cfg.max_failures, "-1 (retry forever) or >= 0")
    _check(cfg.checkpoint_every >= 1, source, "checkpoint_every", cfg.checkpoint_every,
           "a positive integer (evaluations per checkpoint)")
    _check(cfg.checkpoints_to_keep >= 1, source, "checkpoints_to_keep", cfg.checkpoints_to_keep,
           "a positive integer (the best k checkpoints of each trial are kept)")
    _check(cfg.train.adapt.mode != "source_only", source, "train.adapt.mode", cfg.train.adapt.mode,
           "adversarial | target_loss (a study adapts; the source-only run is [baseline])")
    # resources
    res = cfg.resources
    _check(res.cpu > 0, source, "resources.cpu", res.cpu, "a number of CPUs > 0 (fractions allowed)")
    _check(res.gpu >= 0, source, "resources.gpu", res.gpu, ">= 0")
    _check(res.gpu <= 1, source, "resources.gpu", res.gpu,
           "a fraction <= 1 (0.25 = four trials per GPU) or 1 (one trial trains on one device; a "
           "whole number of GPUs above 1 would sit idle)")
    _check(res.pending_timeout > 0, source, "resources.pending_timeout", res.pending_timeout,
           "seconds > 0 a trial may wait for resources before the study ends")
    _check(not (res.gpu == 0 and cfg.train.runtime.device.startswith("cuda")), source, "train.runtime.device",
           cfg.train.runtime.device, "auto | cpu when resources.gpu = 0 (a trial without a GPU share sees no GPU)")
    # search
    search = cfg.search
    _check(search.startup_trials >= 0, source, "search.startup_trials", search.startup_trials, ">= 0")
    from study.config.storage_urls import check_storage_url

    check_storage_url(search.storage, source=source, files=False)
    _check(isinstance(search.params, Mapping), source, "search.params", search.params, "a table of parameters")
    try:
        space = get_space(search.space)
        params = resolve_params(space, search.params)
        if search.sampler == "grid":
            size = grid_size(grid_search_space(space, params, base=cfg.train))
            _check(cfg.num_samples <= size, source, "num_samples", cfg.num_samples,
                   f"at most the grid size {size} of space {search.space!r}")
        describe_space(space, params, sampler=search.sampler, base=cfg.train)
    except SpaceError as err:
        raise ConfigError(source, "search", search.space, str(err)) from None
    _check_seeds(cfg, source)
    # scheduler
    sched, n_evals = cfg.scheduler, n_evaluations(cfg.train)
    if sched.max_t is not None:
        _check(1 <= sched.max_t <= n_evals, source, "scheduler.max_t", sched.max_t,
               f"1..{n_evals}: the evaluations of one full run (optim iterations "
               f"{cfg.train.optim.iterations} / eval.interval {cfg.train.eval.interval})")
    _check(1 <= sched.grace_period <= cfg.max_t, source, "scheduler.grace_period", sched.grace_period,
           f"1..max_t ({cfg.max_t})")
    _check(sched.reduction_factor > 1, source, "scheduler.reduction_factor", sched.reduction_factor, "> 1")
    if sched.kind in ("pbt", "pb2") or sched.pbt:
        check_pbt(cfg, source)
    # baseline
    if cfg.baseline is not None:
        _check(isinstance(cfg.baseline.overrides, Mapping), source, "baseline.overrides", cfg.baseline.overrides,
               "a table of run config overrides")
        searched = {d["applies_to"] for dims in cfg.describe_space()["dimensions"].values() for d in dims}
        _check("model.name" not in searched, source, "baseline", cfg.baseline.config,
               "no [baseline] with a space over backbones (one baseline checkpoint cannot initialise every "
               "network); pretrain per backbone and set train.model.init_checkpoint instead")
        base = baseline_train_config(cfg)
        _check(base.adapt.mode == "source_only", source, "baseline.config", cfg.baseline.config,
               "a run config with adapt.mode = 'source_only'")
        # what models/pretrained.py refuses when the trials load the baseline's checkpoint: refused here, before
        # the baseline trains and every trial fails on it
        for key in ("model.name", "data.num_classes", "model.multi_level", "model.aspp_dilations"):
            section, attr = key.split(".")
            mine, theirs = getattr(getattr(cfg.train, section), attr), getattr(getattr(base, section), attr)
            _check(mine == theirs, source, f"baseline.{key}", theirs, f"{mine!r}, the study's train.{key}")
    _check_source_only_start(cfg, source)


def _check_seeds(cfg: StudyConfig, source: str) -> None:
    """``search.seeds``: distinct run seeds (torch.manual_seed takes 0 .. 2**64 - 1), and not also a searched
    dimension: the seed is either a replicate of every configuration or a parameter, never both."""
    seeds = cfg.search.seeds
    if seeds is None:
        return
    _check(len(seeds) >= 1 and all(0 <= s < 2 ** 64 for s in seeds), source, "search.seeds", list(seeds),
           "a non-empty list of integers >= 0 (run seeds; every configuration runs once per seed)")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    _check(not repeated, source, "search.seeds", list(seeds),
           f"distinct seeds ({', '.join(map(str, repeated))} repeated: a replicate counted twice)")
    searched = [name for name, dims in cfg.describe_space()["dimensions"].items()
                if any(d["applies_to"] == "runtime.seed" for d in dims)]
    _check(not searched, source, "search.seeds", list(seeds),
           f"no search.seeds while search.space {cfg.search.space!r} also searches runtime.seed (dimension "
           f"{', '.join(searched)}): declare the replicates once, with search.seeds and a space without seeds "
           "(e.g. lambda_adv instead of lambda_seeds), or drop search.seeds")


def _check_source_only_start(cfg: StudyConfig, source: str) -> None:
    """Adaptation starts from a source-only model (AdaptSegNet, https://arxiv.org/abs/1802.10349 §4: adaptation
    fine-tunes the source-trained network). A study whose trials would load only the backbone's ImageNet /
    DeepLab-init weights (``model.weights``) is refused: it measures adaptation from the wrong start, the seed's
    silent-fallback defect (S4). A backbone without init weights (the tiny CPU models, trained from scratch) is
    left alone: it has no pretrained start to fall back to."""
    if cfg.baseline is not None or cfg.train.model.init_checkpoint:
        return
    params = cfg.space_params
    if "models" in params:  # a space over backbones: one source-only checkpoint per backbone
        from models import list_models

        models = list(params["models"]) or [m for m in list_models(kind="segmentation") if not m.endswith("_tiny")]
        missing = [m for m in models if (params["weights"].get(m) or cfg.train.model.weights)
                   and m not in params["init_checkpoints"]]
        key, value = "search.params.init_checkpoints", dict(params["init_checkpoints"])
    else:
        missing = [cfg.train.model.name] if cfg.train.model.weights else []
        key, value = "train.model.init_checkpoint", None
    _check(not missing, source, key, value,
           f"a source-only start for {', '.join(missing)}: a [baseline] table (trained before the study), "
           "train.model.init_checkpoint, or search.params.init_checkpoints = {model = checkpoint} for every searched "
           "backbone (e.g. runs/synthia_source_v2/checkpoints/best.pt from `dastudy train-source synthia_source_v2`); "
           "adapting from the backbone's init weights alone is refused")


def baseline_train_config(cfg: StudyConfig, *, cwd: Path | None = None) -> TrainConfig:
    """The source-only run config of ``cfg.baseline`` (shipped name or file + overrides), paths absolute."""
    baseline = cfg.baseline
    if baseline is None:
        raise ValueError(f"study {cfg.name!r} has no [baseline]")
    if baseline.config is None:
        data = merge(to_dict(cfg.train), {"adapt": {"mode": "source_only"}, "name": "source_only"})
    else:
        data = absolutize_paths(load_toml(baseline.config, "configs"), relative_to=Path.cwd() if cwd is None else cwd)
    data = absolutize_paths(merge(data, dict(baseline.overrides)), relative_to=Path.cwd() if cwd is None else cwd)
    return from_dict(TrainConfig, data, source=f"baseline {baseline.config or '[train] as source_only'} "
                                               f"(overrides {dict(baseline.overrides)})")


def load_study_config(name_or_path: str | Path, overrides: Sequence[str] = (), *, name: str | None = None,
                      cwd: Path | None = None) -> StudyConfig:
    """Load a preset name or a study file, apply ``key=value`` overrides (``train.optim.lr=1e-3``,
    ``num_samples=4``, ``search.params.seeds=[1,2]``) and an optional new name; validated strictly."""
    data = load_toml(name_or_path, "presets")
    source = str(name_or_path)
    if overrides:
        data = merge(data, parse_overrides(overrides))
        source = f"{name_or_path} (with overrides {' '.join(overrides)})"
    if name is not None:
        data["name"] = name
    return study_from_dict(data, source=source, cwd=cwd)


def study_to_dict(cfg: StudyConfig) -> dict[str, Any]:
    """The resolved study (``study.toml``): loading it again gives the same :class:`StudyConfig`."""
    from study.config.storage_urls import redact_url

    out = to_dict(cfg)
    out["train"] = to_dict(cfg.train)
    if cfg.search.storage:  # a database password never goes into a file (PGPASSWORD / ~/.pgpass at run time)
        out["search"]["storage"] = redact_url(cfg.search.storage)
    return out


def with_name(cfg: StudyConfig, name: str) -> StudyConfig:
    return replace(cfg, name=name)


def metric_tags(study: StudyConfig) -> tuple[str, ...]:
    """The metrics every trial of ``study`` logs as HParams columns, the study metric first: the mIoUs of its
    class count on the labelled validation split, and on the selection holdout when the study selects by one."""
    tags = [study.study_metric]
    num_classes = study.train.data.num_classes
    for metric in (("mIoU19",) if num_classes == 19 else ()) + ("mIoU16", "mIoU13"):
        for prefix in ("val", "select") if study.selection == "holdout" else ("val",):
            if f"{prefix}/{metric}" not in tags:
                tags.append(f"{prefix}/{metric}")
    return tuple(tags)

"""Pre-launch checks: everything a study can find out without Ray, checked before Ray starts.

:func:`check_study` resolves the run config of every trial the study can launch — every grid point, or under TPE /
random every branch of the space (each backbone, each categorical choice) at both ends of its continuous ranges —
exactly as a trial does (:func:`trainables.tune.trial_train_config`) and validates each one with
:func:`trainables.builders.validate_config` (registered model names, weight and checkpoint files). It also checks
the source-only baseline's config, the Optuna storage URL and that every dataset split exists and holds images.
A problem is one :class:`~trainables.config.ConfigError` naming the file, the key, the value and what is allowed,
raised before anything is created: no study directory, no Optuna study, no Ray.

Storage URLs are checked and kept free of passwords by :mod:`study.config.storage_urls`.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from study.config.spaces import (SPACES, SpaceError, _walk, get_space, grid_points, grid_search_space, param_label,
                          split_qualifier)
from study.config.storage_urls import (PASSWORD_ENV, STORAGE_SCHEMES, check_storage_url, connect_url, mask_secrets,
                                redact_url)
from study.config.study_config import StudyConfig, baseline_train_config
from trainables.config import ConfigError, TrainConfig, flatten, to_dict

__all__ = ["TrialPlan", "Preflight", "check_study", "trial_plans", "check_storage_url", "redact_url",
           "mask_secrets", "connect_url", "check_dataset_splits", "format_plan", "Problem", "diagnose",
           "resource_problems", "check_overrides_apply", "SPACE_KNOBS", "STORAGE_SCHEMES",
           "PASSWORD_ENV"]

MAX_PLANS = 4096  # a space with more resolved trial configs than this is checked on its first MAX_PLANS


# ---------------------------------------------------------------------------------------------------------
# the trial configs a study can launch


@dataclass(frozen=True)
class TrialPlan:
    """One configuration a trial can run: the sampled values (Optuna names), the constants the space adds and
    the resolved run config."""

    params: Mapping[str, Any]
    constants: Mapping[str, Any]
    config: TrainConfig

    @property
    def label(self) -> str:
        return ", ".join(f"{param_label(k)}={_fmt(v)}" for k, v in self.params.items())


@dataclass(frozen=True)
class Preflight:
    """What the checks saw: the study, each distinct resolved trial config, and whether they are every trial
    (grid) or representatives (the ends of each continuous range, per branch)."""

    study: StudyConfig
    plans: tuple[TrialPlan, ...]
    exhaustive: bool


class _PointTrial:
    """Quacks like ``optuna.Trial`` for :meth:`Space.run`: categoricals and grid values from ``point`` (the first
    choice when absent), continuous values at the ``end`` of their range."""

    def __init__(self, point: Mapping[str, Any], end: str = "low"):
        self.point, self.end, self.params = point, end, {}

    def _keep(self, name: str, value: Any) -> Any:
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False, step: float | None = None):
        return self._keep(name, self.point.get(name, low if self.end == "low" else high))

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False, step: int = 1):
        return self._keep(name, self.point.get(name, low if self.end == "low" else high))

    def suggest_categorical(self, name: str, choices):
        return self._keep(name, self.point.get(name, list(choices)[0]))

    suggest_grid = suggest_categorical


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _points(study: StudyConfig) -> tuple[list[tuple[dict[str, Any], str]], bool]:
    space, params = get_space(study.search.space), study.space_params
    if study.search.sampler == "grid":
        grid = grid_search_space(space, params, base=study.train)
        return [(point, "low") for point in grid_points(grid)], True
    out = []
    for forced, _calls, _constants in _walk(space, params, grid=False, base=study.train):
        out += [(dict(forced), "low"), (dict(forced), "high")]
    return out, False


def trial_plans(study: StudyConfig, *, source: str) -> tuple[list[TrialPlan], bool]:
    """Every distinct resolved trial config (see :class:`Preflight`); a config a trial would refuse raises the
    trial's :class:`ConfigError` here."""
    from trainables.tune import TrialContext, trial_train_config

    space = get_space(study.search.space)
    if SPACES.get(space.name) is not space:
        raise ConfigError(source, "search.space", study.search.space, "a registered space")
    context = TrialContext(train=to_dict(study.train), study_dir="", metric=study.study_metric)
    points, exhaustive = _points(study)
    plans: list[TrialPlan] = []
    seen: set[str] = set()
    for point, end in points[:MAX_PLANS]:
        trial = _PointTrial(point, end)
        constants = space.run(trial, study.space_params, grid=study.search.sampler == "grid", base=study.train)
        config = {**trial.params, **constants}
        key = repr(sorted(config.items(), key=lambda kv: kv[0]))
        if key in seen:
            continue
        seen.add(key)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        trial_source = f"{source} [trial {shown}]"
        try:
            cfg = trial_train_config(context, config, trial_name="preflight")
        except ConfigError as err:
            raise ConfigError(trial_source, _origin(err.key, trial.params, constants,
                                                    study.space_params.get("model_overrides")),
                              err.value, err.allowed) from None
        plans.append(TrialPlan(dict(trial.params), dict(constants), cfg))
    return plans, exhaustive and len(points) <= MAX_PLANS


def _origin(key: str, params: Mapping[str, Any], constants: Mapping[str, Any],
            overrides: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The key the user wrote: a searched value's Optuna name, a per-backbone table entry of the space
    (``overrides``: the study's ``search.params.model_overrides``), or the ``train.`` key of the base config."""
    for name in params:
        if split_qualifier(name) == key:
            return name
    model = params.get("model.name", "?")
    if key in ("model.init_checkpoint", "model.weights") and key in constants:
        table = "init_checkpoints" if key == "model.init_checkpoint" else "weights"
        return f"search.params.{table}.{model}"
    if key in constants and key in (overrides or {}).get(model, {}):
        return f"search.params.model_overrides.{model}.{key}"
    return f"train.{key}"


# ---------------------------------------------------------------------------------------------------------
# overrides the space would overwrite

# The [search.params] entries that set what a space samples for a run-config key (study/config/spaces.py); a key absent
# here is named with the space's parameter list instead. tests/study/test_user_path.py checks that every key a
# shipped space samples is listed.
SPACE_KNOBS: dict[str, tuple[str, ...]] = {
    "adapt.lambda_adv_main": ("lambda_low", "lambda_high", "lambda_grid"),
    "adapt.lambda_adv_aux": ("lambda_aux_low", "lambda_aux_high", "lambda_aux_grid"),
    "optim.lr": ("lr_low", "lr_high", "lr_grid"),
    "adapt.lr_d": ("lr_d_low", "lr_d_high", "lr_d_grid"),
    "adapt.gan": ("gans",),
    "adapt.target_loss": ("target_losses",),
    "adapt.lambda_target": ("lambda_target_low", "lambda_target_high", "lambda_target_grid"),
    "runtime.seed": ("seeds",),
    "model.name": ("models",),
    "model.weights": ("weights",),
    "model.init_checkpoint": ("init_checkpoints",),
}


def check_overrides_apply(study: StudyConfig, overrides: Sequence[str], *, source: str) -> None:
    """Refuse a ``train.KEY=VALUE`` override that no trial would use: the search space sets ``KEY`` in every
    trial (``train.optim.lr=1e-3`` while lr is sampled), which would pass silently and run the space's values.
    The :class:`SpaceError` names the space parameter that wins, its range, and the ``search.params`` entries to
    change instead."""
    space = get_space(study.search.space)
    branches = _walk(space, study.space_params, grid=study.search.sampler == "grid", base=study.train)
    if not branches:
        return
    always = set.intersection(*({split_qualifier(n) for n in calls} | set(consts)
                                for _forced, calls, consts in branches))
    dims = study.describe_space()["dimensions"]
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("train.") or key[len("train."):] not in always:
            continue
        target = key[len("train."):]
        sampled = [(name, d) for name, variants in dims.items() for d in variants if d["applies_to"] == target]
        if sampled:
            how = "; ".join(f"as {param_label(name)}: " + (f"{'log-uniform' if d.get('log') else 'uniform'} [{d['low']:.3g}, "
                                          f"{d['high']:.3g}]" if d["type"] == "float" else
                                          f"one of {', '.join(_fmt(c) for c in d['choices'])}")
                            for name, d in sampled)
            what = f"samples {target} in every trial ({how})"
        else:
            what = f"sets {target} in every trial"
        knobs = [k for k in SPACE_KNOBS.get(target, ()) if k in study.space_params]
        instead = (" / ".join(f"search.params.{k}" for k in knobs) if knobs else
                   f"the [search.params] of space {space.name!r} ({', '.join(sorted(study.space_params))})")
        raise SpaceError(f"{source}: {item} would be ignored: space {space.name!r} {what}; change the space "
                         f"instead ({instead}), or choose a space without {target} (`dastudy study presets`)")


# ---------------------------------------------------------------------------------------------------------
# datasets


def check_dataset_splits(train: TrainConfig, *, source: str, prefix: str = "train") -> None:
    """Every split a run reads exists and holds images (an existing but empty root fails here, not in a trial)."""
    for key in ("source", "target", "val"):
        err = _split_error(train, key, source=source, prefix=prefix)
        if err is not None:
            raise err


def _split_error(train: TrainConfig, key: str, *, source: str, prefix: str) -> ConfigError | None:
    """The :class:`ConfigError` for domain ``key`` of ``train`` whose split is missing or empty, else None."""
    import data

    domain = getattr(train.data, key)
    if domain is None:
        return None
    try:
        data.create_dataset(domain.dataset, root=domain.root, split=domain.split,
                            num_classes=train.data.num_classes, transforms=None, max_items=1)
    except (data.DatasetError, ValueError) as err:
        hint = " (`dastudy data synth` or `dastudy demo` creates the synthetic benchmark)" \
            if _synthetic(domain.root) else " (`dastudy data check ROOT --dataset NAME` says what is missing)"
        return ConfigError(source, f"{prefix}.data.{key}.root", domain.root,
                           f"a {domain.dataset} dataset folder whose split {domain.split!r} holds images: "
                           f"{err}{hint}")
    return None


# ---------------------------------------------------------------------------------------------------------
# all together


@dataclass(frozen=True)
class Problem:
    """One thing that stops a real run, as the dry-run lists it: ``what`` is wrong (short), the command or
    setting that ``fix``-es it, and the ``error`` the real run raises for it (the full one-line message)."""

    what: str
    fix: str
    error: Exception

    def line(self) -> str:
        return f"{self.what}; fix: {self.fix}"


def check_study(study: StudyConfig, *, source: str | None = None, trials: bool = True,
                home: Path | None = None) -> Preflight:
    """Run every pre-launch check (see the module docstring); nothing is created. ``home``: the study directory
    that must not exist yet; ``trials=False`` checks only the storage URL (a test trainable that ignores the run
    config and reads no data). Raises the first problem :func:`diagnose` finds."""
    pre, problems = diagnose(study, source=source, trials=trials, home=home)
    if problems:
        raise problems[0].error
    return pre


def diagnose(study: StudyConfig, *, source: str | None = None, trials: bool = True,
             home: Path | None = None) -> tuple[Preflight, list[Problem]]:
    """The checks of :func:`check_study`, every one of them: the plan and *all* problems found, in the order a
    real run meets them, each once (a missing weight file shared by 15 grid points is one problem). A space
    that cannot be resolved at all still raises (there is no plan to show)."""
    from trainables.builders import validate_config

    source = source or getattr(study, "source", None) or f"study {study.name!r}"
    found = _Found()
    add = found.add
    if home is not None and Path(home).exists():
        add(Problem(f"study directory {home} exists (a real run never overwrites a study)",
                    f"dastudy study resume {study.name}, or --name ANOTHER",
                    FileExistsError(f"study directory {home} already exists; continue it with "
                                    f"`dastudy study resume {study.name}` or choose another --name")),
            ("home", str(home)))
    try:
        check_storage_url(study.search.storage, source=source)
    except ConfigError as err:
        add(Problem(f"search.storage = {redact_url(str(study.search.storage))!r} cannot be opened",
                    "search.storage=PATH.journal, sqlite:///PATH.db or postgresql://USER@HOST/DB", err),
            ("storage", ""))
    if not trials:
        return Preflight(study, (), False), found.problems
    try:
        plans, exhaustive = trial_plans(study, source=source)
    except SpaceError as err:
        raise ConfigError(source, "search.params", study.search.space, str(err)) from None
    for plan in plans:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in plan.params.items())
        cfg = plan.config
        while True:  # a missing weight file does not hide the missing checkpoint behind it
            try:
                validate_config(cfg, source=f"{source} [trial {shown}]")
                break
            except ConfigError as err:
                wrapped = ConfigError(err.source, _origin(err.key, plan.params, plan.constants,
                                                          study.space_params.get("model_overrides")),
                                      err.value, err.allowed)
                add(_config_problem(err.key, wrapped, cfg), (err.key, repr(err.value)))
                if err.key not in ("model.weights", "model.init_checkpoint"):
                    break
                field = err.key.split(".", 1)[1]
                cfg = replace(cfg, model=replace(cfg.model, **{field: None}))
    _dataset_problems([p.config for p in plans], source=source, prefix="train", found=found)
    if study.baseline is not None:
        base_source = f"{source} [baseline {study.baseline.config or '[train] as source_only'}]"
        base = baseline_train_config(study)
        try:
            validate_config(base, source=base_source)
        except ConfigError as err:
            add(_config_problem(err.key, err, base, prefix="baseline"), (err.key, repr(err.value)))
        _dataset_problems([base], source=base_source, prefix="baseline", found=found)
    return Preflight(study, tuple(plans), exhaustive), found.problems


class _Found:
    """Problems in the order found, each identity (kind, value) once."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.seen: set[tuple[str, str]] = set()

    def add(self, problem: Problem | None, key: tuple[str, str]) -> None:
        if key not in self.seen:
            self.seen.add(key)
            if problem is not None:
                self.problems.append(problem)


def _dataset_problems(configs: list[TrainConfig], *, source: str, prefix: str, found: _Found) -> None:
    """One problem per missing dataset root (not one per split of it), one per missing or empty split."""
    for cfg in configs:
        for key in ("source", "target", "val"):
            domain = getattr(cfg.data, key)
            if domain is None:
                continue
            root_missing = not Path(domain.root).is_dir()
            ident = ("dataset", f"{domain.dataset}:{domain.root}" + ("" if root_missing else f":{domain.split}"))
            if root_missing and _synthetic(domain.root):  # source/ and target/ come from one `data synth`
                ident = ("dataset", f"synthetic:{Path(domain.root).parent}")
            if ident in found.seen:
                continue
            err = _split_error(cfg, key, source=source, prefix=prefix)
            if err is None:
                found.add(None, ident)
                continue
            name = domain.dataset
            root = _shown(domain.root)
            if _synthetic(domain.root):
                fix = f"dastudy data synth {shlex.quote(_shown(Path(domain.root).parent))}"
            else:
                fix = f"get {name} (docs/data.md), then: dastudy data check {shlex.quote(root)} --dataset {name}"
            what = (f"dataset {name}: no folder {root}" if root_missing else
                    f"dataset {name}: split {domain.split!r} of {root} holds no images")
            if root_missing and _synthetic(domain.root):
                what = f"synthetic benchmark: no folder {_shown(Path(domain.root).parent)}"
            found.add(Problem(what, fix, err), ident)


def _synthetic(root: str | Path) -> bool:
    """The embedded synthetic benchmark's folders (``dastudy data synth OUT`` writes OUT/source, OUT/target)."""
    return Path(root).parent.name in ("synth", "synthetic") or "synthetic" in Path(root).parts


def _shown(path: str | Path) -> str:
    """A path as the user would type it: relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _config_problem(key: str, err: ConfigError, cfg: TrainConfig, *, prefix: str = "train") -> Problem:
    """A short line and a fix for a run config :func:`~trainables.builders.validate_config` refused."""
    if key == "model.weights":
        return Problem(f"weights {err.value!r} ({cfg.model.name}): not found", _weights_fix(str(err.value)), err)
    if key == "model.init_checkpoint":
        return Problem(f"checkpoint {_shown(str(err.value))} ({cfg.model.name}): "
                       f"{'a directory' if Path(str(err.value)).is_dir() else 'no such file'}",
                       _checkpoint_fix(Path(str(err.value)), key), err)  # key: the run config's, not err's origin
    return Problem(f"{err.key} = {err.value!r} is not valid", f"{err.key}=<{err.allowed[:80]}>", err)


def _weights_fix(weights: str) -> str:
    """The command that puts named weights (``imagenet``, ``deeplab_init``) in torch's hub cache; nothing is
    downloaded at run time (models/pretrained.py)."""
    from models.pretrained import NAMED_WEIGHTS

    if weights not in NAMED_WEIGHTS:
        return f"put the file at {weights}, or name an existing one in search.params.weights / train.model.weights"
    import torch

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    # the first published file that is still online ("offline since ..." marks the ones that are not)
    file, url = next(((f, u) for f, u in NAMED_WEIGHTS[weights] if " " not in u), NAMED_WEIGHTS[weights][0])
    return f"curl -L --create-dirs -o {shlex.quote(str(cache / file))} {url.split()[0]}"


def _checkpoint_fix(path: Path, key: str) -> str:
    """The ``dastudy train-source`` / ``adapt`` command that writes ``runs/<config>/checkpoints/best.pt`` when
    ``<config>`` is a shipped config; otherwise where to point the key."""
    from study.config.files import load_train_config, shipped_names

    run = path.parent.parent
    if path.parent.name == "checkpoints" and run.name in shipped_names("configs"):
        mode = load_train_config(run.name).adapt.mode
        command = "dastudy train-source" if mode == "source_only" else "dastudy adapt"
        default = Path.cwd() / "runs" / run.name  # the command's default --out
        out = "" if run.resolve() == default.resolve() else f" --out {shlex.quote(str(run))}"
        return f"{command} {run.name}{out}"
    return f"train that run first, or set search.params.init_checkpoints / train.{key} to an existing checkpoint"


def resource_problems(study: StudyConfig, home: Path, nodes: list | None, *,
                      where: str) -> tuple[list[Problem], list[str]]:
    """What the real run checks once Ray runs (study/run/storage.py:preflight_study), against ``nodes`` (this
    machine, or the cluster of ``--address``): a trial fits on a node (a GPU request without a GPU), and the
    checkpoints fit on the study's filesystem. Returns the problems and the notes to print."""
    from study.config.resources import (PreflightError, check_checkpoint_space, check_cluster_resources,
                                 estimate_checkpoint_bytes)

    problems: list[Problem] = []
    notes: list[str] = []
    res = study.resources
    if nodes is not None:
        try:
            slots = check_cluster_resources(cpu=res.cpu, gpu=res.gpu, nodes=nodes, autoscaling=res.autoscaling)
            notes.append(f"{where}: {slots} trial(s) fit at once (cpu {res.cpu:g}, gpu {res.gpu:g} each)"
                         if slots else f"{where}: no node hosts a trial now; the autoscaler would be asked")
        except PreflightError as err:
            if res.gpu > 0 and sum(n.gpu for n in nodes) == 0:
                what = f"resources.gpu = {res.gpu:g} but {where} has no GPU"
                fix = "resources.gpu=0 (CPU trials), or --address a Ray cluster with GPUs"
            else:
                what = f"no node of {where} hosts a trial of cpu {res.cpu:g}, gpu {res.gpu:g}"
                fix = "lower resources.cpu / resources.gpu, or --address a larger cluster"
            problems.append(Problem(what, fix, err))
    try:
        from trainables.tune import checkpoint_state_bytes

        state_bytes = checkpoint_state_bytes(study.train)
    except Exception as err:  # a network the meta device cannot build: no estimate (as the real run)
        notes.append(f"checkpoints: no size estimate ({type(err).__name__}: {err})")
        return problems, notes
    estimate = estimate_checkpoint_bytes(
        state_bytes=state_bytes, kept=study.checkpoints_to_keep + 1, num_samples=study.num_trials,
        keep_pruned=study.keep_pruned_checkpoints, max_t=study.max_t, grace_period=study.scheduler.grace_period,
        reduction_factor=study.scheduler.reduction_factor, asha=study.scheduler.kind == "asha")
    notes.append(estimate.describe())
    try:
        check_checkpoint_space(estimate, home)
    except PreflightError as err:  # the path goes into the fix: the problem stays a few words whatever the path
        problems.append(Problem(f"checkpoints need about {estimate.total / 2 ** 30:.1f} GiB, more than is free "
                                "under the storage",
                                f"--storage on a larger filesystem than {home.parent}, or lower num_samples / "
                                "checkpoints_to_keep", err))
    return problems, notes


def format_plan(pre: Preflight, problems: Sequence[Problem] = (), notes: Sequence[str] = ()) -> str:
    """The dry-run printout: what the study would launch, with the resolved values of the keys that vary, the
    ``notes`` (resources, checkpoint volume), then every problem with its fix."""
    study = pre.study
    trials = (f"{study.num_samples} configuration(s) x {study.replicates} seeds = {study.num_trials} trials"
              if study.search.seeds else f"{study.num_samples} trial(s)")
    # a PBT population runs every member at once (study/run/tuner.py passes no max_concurrent_trials)
    pace = ("every member at once" if study.scheduler.kind in ("pbt", "pb2")
            else f"{study.max_concurrent_trials} at a time")
    lines = [f"study {study.name}: {trials}, space {study.search.space!r} "
             f"({study.search.sampler}, seed {study.search.seed}), metric {study.study_metric} ({study.mode}), "
             f"{study.scheduler.kind} max_t={study.max_t}, {pace} "
             f"(cpu {study.resources.cpu:g}, gpu {study.resources.gpu:g} each)"]
    if study.search.storage:
        lines.append(f"optuna storage: {redact_url(study.search.storage)}")
    if study.baseline is not None:
        base = baseline_train_config(study)
        lines.append(f"baseline: {base.adapt.mode} {base.model.name}, {base.optim.iterations} iterations "
                     "(trained first unless a completed one exists; its checkpoint starts every trial)")
    flat = [flatten(to_dict(p.config)) for p in pre.plans]
    varying = [k for k in flat[0] if k != "name" and len({repr(f.get(k)) for f in flat}) > 1] if flat else []
    # the iteration count as the user sets it (`optim.iterations` is a property, not a field: never in `flat`)
    shown_keys = ["model.name", "optim.lr", "optim.iter_max", "optim.iter_stop", "optim.batch_size",
                  "adapt.lambda_adv_main", "runtime.seed"]
    if study.search.seeds:  # the plans hold the config's own seed; the replicates replace it
        shown_keys = [k for k in shown_keys if k != "runtime.seed"]
        lines.append(f"replicates: every configuration runs once per seed in search.seeds = "
                     f"{list(study.search.seeds)} (runtime.seed)")
    fixed = [k for k in shown_keys if k not in varying and flat and flat[0].get(k) is not None]
    if fixed:
        lines.append("same in every trial: " + ", ".join(f"{k}={_fmt(flat[0][k])}" for k in fixed))
    if study.search.sampler != "grid":
        lines.append("")
        lines.append("space (each trial samples):")
        for name, variants in study.describe_space()["dimensions"].items():
            for d in variants:
                when = " when " + " or ".join(", ".join(f"{param_label(k)}={v}" for k, v in c.items())
                                              for c in d["when"]) if d["when"] else ""
                if d["type"] == "float":
                    dist = f"{'log-uniform' if d['log'] else 'uniform'} [{d['low']:.3g}, {d['high']:.3g}]"
                else:
                    dist = f"one of {', '.join(_fmt(c) for c in d['choices'])}"
                lines.append(f"  {param_label(name):16s} {dist}  -> {d['applies_to']}{when}")
        lines.append("")
        lines.append(f"resolved trial configs checked ({len(pre.plans)}: each branch at both ends of its ranges):")
    else:
        lines.append("")
        each = f", each on {study.replicates} seeds" if study.search.seeds else ""
        lines.append(f"trial configs (grid of {len(pre.plans)}, {study.num_samples} launched in the sampler's "
                     f"order{each}):")
    header = ["#", *varying]
    rows = [[str(i + 1), *(_cell(f.get(k, "-")) for k in varying)] for i, f in enumerate(flat)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    lines.append("")
    lines += list(notes)
    if problems:
        lines.append(f"{len(problems)} problem(s); a real run would not start until each is fixed:")
        lines += [f"  {i}. {p.line()}" for i, p in enumerate(problems, 1)]
        lines.append("nothing was created")
    else:
        lines.append("all pre-launch checks passed (configs, model names, weight and checkpoint files, datasets, "
                     "storage URL, resources); nothing was created")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return _shown(value) if isinstance(value, str) and value.startswith("/") else _fmt(value)



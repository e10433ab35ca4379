"""Pre-launch checks: everything a study can find out without Ray, checked before Ray starts.

:func:`check_study` resolves the run config of every trial the study can launch — every grid point, or under TPE /
random every branch of the space (each backbone, each categorical choice) at both ends of its continuous ranges —
exactly as a trial does (:func:`trainables.tune.trial_train_config`) and validates each one with
:func:`trainables.builders.validate_config` (registered model names, weight and checkpoint files). It also checks
the source-only baseline's config, the Optuna storage URL and that every dataset split exists and holds images.
A problem is one :class:`~trainables.config.ConfigError` naming the file, the key, the value and what is allowed,
raised before anything is created: no study directory, no Optuna study, no Ray.

Storage URLs: a password in ``search.storage`` (``postgresql://user:secret@host/db``) never reaches a file.
:func:`redact_url` drops it from what is written (``study.toml``), :func:`mask_secrets` masks it in free text
(the command line in ``provenance.json``, log lines) and :func:`connect_url` hands it to libpq through
``PGPASSWORD`` at run time, so the URL the storage object keeps (and Ray pickles into the study directory) has
none. On resume the password comes from ``PGPASSWORD`` or ``~/.pgpass``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from study.spaces import (SPACES, SpaceError, _walk, get_space, grid_points, grid_search_space, param_label,
                          split_qualifier)
from study.study_config import StudyConfig, baseline_train_config
from trainables.config import ConfigError, TrainConfig, to_dict

__all__ = ["TrialPlan", "Preflight", "check_study", "trial_plans", "check_storage_url", "redact_url",
           "mask_secrets", "connect_url", "check_dataset_splits", "format_plan", "STORAGE_SCHEMES",
           "PASSWORD_ENV"]

# Optuna's RDBStorage takes SQLAlchemy URLs; these are the databases it supports (a "+driver" suffix is allowed).
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
PASSWORD_ENV = "PGPASSWORD"  # libpq (psycopg) reads it, as it reads ~/.pgpass
MAX_PLANS = 4096  # a space with more resolved trial configs than this is checked on its first MAX_PLANS


# ---------------------------------------------------------------------------------------------------------
# storage URLs


def _storage_allowed() -> str:
    return ("a journal file path ending in .journal, sqlite:///PATH, postgresql://USER@HOST[:PORT]/DB or "
            "mysql://USER@HOST/DB (password from PGPASSWORD or ~/.pgpass, never in the file)")


def check_storage_url(url: str | None, *, source: str, key: str = "search.storage", files: bool = True) -> None:
    """A storage URL Optuna can open: known scheme, a host and a database for a server, (``files``) an existing
    directory for an SQLite file. Unknown schemes and malformed URLs are refused here instead of after the
    baseline has trained."""
    if url is None:
        return
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(source, key, url, _storage_allowed())
    shown = redact_url(url)
    if "://" not in url:
        if not url.endswith(".journal"):
            raise ConfigError(source, key, shown, _storage_allowed())
        return  # its directory is created when the study starts
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric port
    except ValueError as err:
        raise ConfigError(source, key, shown, f"{_storage_allowed()} (malformed URL: {err})") from None
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in STORAGE_SCHEMES:
        raise ConfigError(source, key, shown, f"{_storage_allowed()} (unknown scheme {parts.scheme!r})")
    if scheme == "sqlite":
        path = url.split("://", 1)[1]
        if not path.startswith("/") or path in ("/", "/:memory:"):
            raise ConfigError(source, key, shown, "sqlite:///RELATIVE/PATH.db or sqlite:////ABSOLUTE/PATH.db (a file; "
                                                  "an in-memory database would lose the study)")
        parent = Path(path[1:]).expanduser().resolve().parent
        if files and not parent.is_dir():
            raise ConfigError(source, key, shown, f"a database file in an existing directory ({parent} does not exist)")
        return
    has_host = bool(parts.hostname) or "host=" in parts.query  # ?host=/run/postgresql: a unix socket
    if not has_host or not parts.path.strip("/"):
        raise ConfigError(source, key, shown, f"{_storage_allowed()} (the URL needs a host and a database name)")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(source, key, shown, f"{_storage_allowed()} (port {port} out of range)")
    if parts.password and scheme != "postgresql":
        raise ConfigError(source, key, shown, f"a {scheme} URL without a password (it would be written into the study "
                                              "files); use the server's option file for credentials")


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user@host/db``; other text unchanged."""
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_secrets(url)
    if not parts.password and ":" not in parts.netloc.rpartition("@")[0]:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}@{host}"))


_SECRET = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*):[^@\s/]*@")


def mask_secrets(text: str) -> str:
    """Every ``scheme://user:password@`` in free text (a command line, a log line) with the password as ***."""
    return _SECRET.sub(r"\1:***@", text) if isinstance(text, str) else text


def connect_url(url: str | None) -> str | None:
    """The storage URL to open at run time: a password in the URL is moved to ``PGPASSWORD`` (this process and
    the Ray workers it starts read it from the environment, never from a file) and the URL returned without it."""
    if url is None or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password:
        os.environ[PASSWORD_ENV] = parts.password
    return redact_url(url)


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
            raise ConfigError(trial_source, _origin(err.key, trial.params, constants), err.value,
                              err.allowed) from None
        plans.append(TrialPlan(dict(trial.params), dict(constants), cfg))
    return plans, exhaustive and len(points) <= MAX_PLANS


def _origin(key: str, params: Mapping[str, Any], constants: Mapping[str, Any]) -> str:
    """The key the user wrote: a searched value's Optuna name, a per-backbone table entry of the space, or the
    ``train.`` key of the study's base config."""
    for name in params:
        if split_qualifier(name) == key:
            return name
    if key in ("model.init_checkpoint", "model.weights") and key in constants:
        table = "init_checkpoints" if key == "model.init_checkpoint" else "weights"
        model = params.get("model.name", "?")
        return f"search.params.{table}.{model}"
    return f"train.{key}"


# ---------------------------------------------------------------------------------------------------------
# datasets


def check_dataset_splits(train: TrainConfig, *, source: str, prefix: str = "train") -> None:
    """Every split a run reads exists and holds images (an existing but empty root fails here, not in a trial)."""
    import data

    for key in ("source", "target", "val"):
        domain = getattr(train.data, key)
        if domain is None:
            continue
        try:
            data.create_dataset(domain.dataset, root=domain.root, split=domain.split,
                                num_classes=train.data.num_classes, transforms=None, max_items=1)
        except (data.DatasetError, ValueError) as err:
            hint = " (`dastudy data synth` or `dastudy demo` creates the synthetic benchmark)" \
                if "synth" in str(domain.root) else " (`dastudy data check ROOT --dataset NAME` says what is missing)"
            raise ConfigError(source, f"{prefix}.data.{key}.root", domain.root,
                              f"a {domain.dataset} dataset folder whose split {domain.split!r} holds images: "
                              f"{err}{hint}") from None


# ---------------------------------------------------------------------------------------------------------
# all together


def check_study(study: StudyConfig, *, source: str | None = None, trials: bool = True,
                home: Path | None = None) -> Preflight:
    """Run every pre-launch check (see the module docstring); nothing is created. ``home``: the study directory
    that must not exist yet; ``trials=False`` checks only the storage URL (a test trainable that ignores the run
    config and reads no data)."""
    from trainables.builders import validate_config

    source = source or getattr(study, "source", None) or f"study {study.name!r}"
    if home is not None and Path(home).exists():
        raise FileExistsError(f"study directory {home} already exists; continue it with "
                              f"`dastudy study resume {study.name}` or choose another --name")
    check_storage_url(study.search.storage, source=source)
    if not trials:
        return Preflight(study, (), False)
    try:
        plans, exhaustive = trial_plans(study, source=source)
    except SpaceError as err:
        raise ConfigError(source, "search.params", study.search.space, str(err)) from None
    for plan in plans:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in plan.params.items())
        try:
            validate_config(plan.config, source=f"{source} [trial {shown}]")
        except ConfigError as err:
            raise ConfigError(err.source, _origin(err.key, plan.params, plan.constants), err.value,
                              err.allowed) from None
    seen: set[tuple[str, str, str]] = set()
    for plan in plans:
        splits = {(d.dataset, d.root, d.split) for d in (plan.config.data.source, plan.config.data.target,
                                                        plan.config.data.val) if d is not None}
        if not splits <= seen:
            check_dataset_splits(plan.config, source=source)
            seen |= splits
    if study.baseline is not None:
        base_source = f"{source} [baseline {study.baseline.config or '[train] as source_only'}]"
        base = baseline_train_config(study)
        validate_config(base, source=base_source)
        check_dataset_splits(base, source=base_source, prefix="baseline")
    return Preflight(study, tuple(plans), exhaustive)


def format_plan(pre: Preflight) -> str:
    """The dry-run printout: what the study would launch, with the resolved values of the keys that vary."""
    study = pre.study
    lines = [f"study {study.name}: {study.num_samples} trial(s), space {study.search.space!r} "
             f"({study.search.sampler}, seed {study.search.seed}), metric {study.study_metric} ({study.mode}), "
             f"{study.scheduler.kind} max_t={study.max_t}, {study.max_concurrent_trials} at a time "
             f"(cpu {study.resources.cpu:g}, gpu {study.resources.gpu:g} each)"]
    if study.search.storage:
        lines.append(f"optuna storage: {redact_url(study.search.storage)}")
    if study.baseline is not None:
        base = baseline_train_config(study)
        lines.append(f"baseline: {base.adapt.mode} {base.model.name}, {base.optim.iterations} iterations "
                     "(trained first unless a completed one exists; its checkpoint starts every trial)")
    flat = [_flatten(to_dict(p.config)) for p in pre.plans]
    varying = [k for k in flat[0] if k != "name" and len({repr(f.get(k)) for f in flat}) > 1] if flat else []
    shown_keys = ["model.name", "optim.lr", "optim.iterations", "optim.batch_size", "adapt.lambda_adv_main",
                  "runtime.seed"]
    fixed = [k for k in shown_keys if k not in varying and flat and k in flat[0]]
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
        lines.append(f"trial configs (grid of {len(pre.plans)}, {study.num_samples} launched in the sampler's "
                     "order):")
    header = ["#", *varying]
    rows = [[str(i + 1), *(_fmt(f.get(k, "-")) for k in varying)] for i, f in enumerate(flat)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    lines.append("")
    lines.append("all pre-launch checks passed (configs, model names, weight and checkpoint files, datasets, "
                 "storage URL); nothing was created")
    return "\n".join(lines)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

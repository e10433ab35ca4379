"""What the report takes from ``optuna.journal``: trial states, start order and parameter importances."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

@dataclass(frozen=True)
class OptunaSummary:
    """What the report takes from ``optuna.journal``."""

    states: Mapping[str, int] = field(default_factory=dict)  # COMPLETE / PRUNED / FAIL / RUNNING → count
    order: Mapping[str, int] = field(default_factory=dict)  # trial directory → Optuna trial number (start order)
    # every Ray trial directory → the number of the Optuna trial it belongs to: with replicates (search.seeds) a
    # configuration's seeds share its number (``order`` names only the first replicate: ties break by start order)
    numbers: Mapping[str, int] = field(default_factory=dict)
    seeds: Mapping[str, Any] = field(default_factory=dict)  # a replicate's directory → its seed (search.seeds)
    records: tuple[OptunaRecord, ...] = ()
    note: str | None = None


@dataclass(frozen=True)
class OptunaRecord:
    """One Optuna trial as told by the searcher (``trial_dir`` from its user attributes)."""

    trial_dir: str
    params: Mapping[str, Any]
    distributions: Mapping[str, Any]
    value: float | None
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING


@dataclass(frozen=True)
class Importance:
    """Importances over per-configuration means, with how many configurations and trials they rest on."""

    values: Mapping[str, float] = field(default_factory=dict)
    configurations: int = 0
    trials: int = 0
    note: str | None = None


def read_optuna(study_dir: Path, name: str) -> OptunaSummary:
    """Trial states, start order and the told trials (for :func:`config_importances`) from ``optuna.journal``.

    The journal is read from a private copy: the study directory may be a read-only copy, and the journal
    backend opens its file for appending."""
    journal = study_dir / "optuna.journal"
    if not journal.is_file():
        return OptunaSummary(note="no optuna.journal in the study directory: no parameter importance")
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="dastudy-report-") as tmp:
        copy = Path(tmp) / "optuna.journal"
        shutil.copyfile(journal, copy)
        try:
            storage = JournalStorage(JournalFileBackend(str(copy)))
            names = optuna.study.get_all_study_names(storage)
            if not names:
                return OptunaSummary(note="optuna.journal holds no study: no parameter importance")
            study = optuna.load_study(study_name=name if name in names else names[0], storage=storage)
            trials = study.get_trials(deepcopy=False)
            from study.state.journal import superseded_numbers

            rerun = superseded_numbers(trials)
            trials = [t for t in trials if t.number not in rerun]  # re-run to an end by `study resume`
        except Exception as err:  # a damaged journal must not stop the rest of the report
            return OptunaSummary(note=f"the Optuna journal could not be read ({type(err).__name__}: {err})")
        states = {state.name: sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
        order = {str(t.user_attrs["trial_dir"]): t.number for t in trials if "trial_dir" in t.user_attrs}
        replicates = _replicates(trials)
        summary = OptunaSummary(states={k: v for k, v in states.items() if v}, order=order,
                                numbers={**order, **{d: n for d, (n, _) in replicates.items()}},
                                seeds={d: seed for d, (_, seed) in replicates.items()})
        records = tuple(OptunaRecord(trial_dir=str(t.user_attrs.get("trial_dir", "")), params=dict(t.params),
                                     distributions=dict(t.distributions), value=t.value, state=t.state.name)
                        for t in trials)
    return replace(summary, records=records)


def _replicates(trials) -> dict[str, tuple[int, Any]]:
    """Replicate directory → (its configuration's Optuna number, its seed), from the user attribute
    ``replicate_trials`` (``{"<seed>": "trial_<id>"}``, study.run.replicates.ReplicateSearch)."""
    out: dict[str, tuple[int, Any]] = {}
    for t in trials:
        named = t.user_attrs.get("replicate_trials")
        if not isinstance(named, dict):
            continue
        for seed, trial_dir in named.items():
            try:
                value: Any = int(seed)
            except (TypeError, ValueError):
                value = seed
            out[str(trial_dir)] = (t.number, value)
    return out


def config_importances(summary: OptunaSummary, *, completed: Iterable[str], direction: str) -> Importance:
    """PED-ANOVA importances (Optuna's default evaluator) over per-configuration means.

    Only trials the report counts as completed take part (a trial stopped early was scored at a smaller budget),
    the run seed is left out (it is a replicate index, not a hyperparameter), and replicates of a configuration
    are averaged first, so that a lucky seed weighs as much as its configuration's other seeds. Computed only with
    at least ``MIN_CONFIGS_FOR_IMPORTANCE`` configurations; otherwise the note says why not."""
    import warnings

    import optuna

    from study.report.aggregate import MIN_CONFIGS_FOR_IMPORTANCE, config_key, is_seed, stats

    wanted = set(completed)
    if summary.note and not summary.records:
        return Importance(note=summary.note)
    used = [r for r in summary.records if r.state == "COMPLETE" and r.trial_dir in wanted and r.value is not None]
    groups: dict[str, list[OptunaRecord]] = {}
    for r in used:
        groups.setdefault(config_key(r.params), []).append(r)
    n_configs, n_trials = len(groups), len(used)
    if n_configs < MIN_CONFIGS_FOR_IMPORTANCE:
        return Importance(configurations=n_configs, trials=n_trials,
                          note=f"parameter importance is not shown: it needs at least {MIN_CONFIGS_FOR_IMPORTANCE} "
                               f"completed configurations (seeds averaged) and this study has {n_configs} "
                               f"({n_trials} completed trials)")
    names = sorted({n for r in used for n in r.distributions if not is_seed(n)})
    varied = [n for n in names if len({repr(r.params.get(n)) for r in used if n in r.params}) > 1]
    if not varied:
        return Importance(configurations=n_configs, trials=n_trials,
                          note="no parameter other than the seed took more than one value among completed "
                               "configurations: importance is undefined")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if direction == "max" else "minimize")
    for members in groups.values():
        first = members[0]
        study.add_trial(optuna.trial.create_trial(
            params={n: first.params[n] for n in varied if n in first.params},
            distributions={n: first.distributions[n] for n in varied if n in first.distributions},
            value=stats(r.value for r in members).mean))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            values = optuna.importance.get_param_importances(study, params=varied)
        except Exception as err:  # PED-ANOVA refuses degenerate studies (e.g. all values equal)
            return Importance(configurations=n_configs, trials=n_trials,
                              note=f"Optuna could not compute importances ({type(err).__name__}: {err})")
    # e.g. "Target and region quantiles select the same set of trials": too few points to tell parameters apart
    note = "; ".join(sorted({f"Optuna: {w.message}".rstrip(".") for w in caught})) or None
    return Importance(values={k: float(v) for k, v in values.items()}, configurations=n_configs, trials=n_trials,
                      note=note)

"""What the report takes from ``optuna.journal``: trial states, start order and parameter importances."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

@dataclass(frozen=True)
class OptunaSummary:
    """What the report takes from ``optuna.journal``."""

    states: Mapping[str, int] = field(default_factory=dict)  # COMPLETE / PRUNED / FAIL / RUNNING → count
    order: Mapping[str, int] = field(default_factory=dict)  # trial directory → Optuna trial number (start order)
    importances: Mapping[str, float] = field(default_factory=dict)
    note: str | None = None


def read_optuna(study_dir: Path, name: str) -> OptunaSummary:
    """Trial states, start order and PED-ANOVA importances (Optuna's default evaluator) from ``optuna.journal``.

    The journal is read from a private copy: the study directory may be a read-only copy, and the journal
    backend opens its file for appending."""
    journal = study_dir / "optuna.journal"
    if not journal.is_file():
        return OptunaSummary(note="no optuna.journal in the study directory: no parameter importance")
    import warnings

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
        except Exception as err:  # a damaged journal must not stop the rest of the report
            return OptunaSummary(note=f"the Optuna journal could not be read ({type(err).__name__}: {err})")
        states = {state.name: sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
        summary = OptunaSummary(states={k: v for k, v in states.items() if v},
                                order={str(t.user_attrs["trial_dir"]): t.number for t in trials
                                       if "trial_dir" in t.user_attrs})
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < 3:
            return replace(summary, note=f"parameter importance needs at least 3 completed Optuna trials; this "
                                         f"study has {len(complete)}")
        params = sorted({n for t in complete for n in t.distributions})
        varied = [n for n in params if len({repr(t.params.get(n)) for t in complete if n in t.params}) > 1]
        if not varied:
            return replace(summary, note="no parameter took more than one value among completed trials: "
                                         "importance is undefined")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                values = optuna.importance.get_param_importances(study, params=varied)
            except Exception as err:  # PED-ANOVA refuses degenerate studies (e.g. all values equal)
                return replace(summary, note=f"Optuna could not compute importances ({type(err).__name__}: {err})")
    # e.g. "Target and region quantiles select the same set of trials": too few trials to tell parameters apart
    note = "; ".join(sorted({f"Optuna: {w.message}".rstrip(".") for w in caught})) or None
    return replace(summary, importances={k: float(v) for k, v in values.items()}, note=note)



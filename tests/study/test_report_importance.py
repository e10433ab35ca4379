"""Parameter importances over configuration means (study/report/importance.py ``config_importances``), on
Optuna records written here: which trials take part, and the note a reader gets when importances cannot be
trusted or computed."""
from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from study.report.importance import OptunaRecord, OptunaSummary, config_importances

LOG = FloatDistribution(1e-4, 1e-1, log=True)
SEEDS = CategoricalDistribution([1, 2, 3])


def _record(i, lam, lr, seed, value, *, state="COMPLETE", dists=None):
    return OptunaRecord(trial_dir=f"t{i}", params={"lam": lam, "lr": lr, "runtime.seed": seed},
                        distributions=dists or {"lam": LOG, "lr": LOG, "runtime.seed": SEEDS}, value=value,
                        state=state)


def _run(records, completed=None, direction="max"):
    names = [r.trial_dir for r in records] if completed is None else completed
    return config_importances(OptunaSummary(records=tuple(records)), completed=names, direction=direction)


def test_a_journal_that_could_not_be_read_passes_its_note_on():
    got = config_importances(OptunaSummary(note="no optuna.journal in the study directory: no parameter importance"),
                             completed=["t0"], direction="max")
    assert got.note == "no optuna.journal in the study directory: no parameter importance"
    assert (got.values, got.configurations, got.trials) == ({}, 0, 0)


def test_too_few_configurations_counts_only_completed_scored_trials_and_averages_seeds():
    records = [_record(0, 1e-3, 1e-2, 1, 0.3), _record(1, 1e-3, 1e-2, 2, 0.4),  # one configuration, two seeds
               _record(2, 2e-3, 1e-2, 1, 0.5), _record(3, 3e-3, 1e-2, 1, 0.6),
               _record(4, 4e-3, 1e-2, 1, 0.7, state="PRUNED"), _record(5, 5e-3, 1e-2, 1, None),
               _record(6, 6e-3, 1e-2, 1, 0.2)]  # told COMPLETE, but the report counts it as stopped early
    got = _run(records, completed=[f"t{i}" for i in range(6)])
    assert (got.values, got.configurations, got.trials) == ({}, 3, 4)
    assert got.note == ("parameter importance is not shown: it needs at least 5 completed configurations (seeds "
                        "averaged) and this study has 3 (4 completed trials)")


def test_no_parameter_but_the_seed_varies_says_importance_is_undefined():
    # five configurations told apart only by a value no distribution names (a fixed parameter with another base)
    records = [OptunaRecord(trial_dir=f"t{i}", params={"lam": 1e-3, "extra": i, "runtime.seed": 1 + i % 3},
                            distributions={"lam": LOG, "runtime.seed": SEEDS}, value=0.1 * i, state="COMPLETE")
               for i in range(5)]
    got = _run(records)
    assert (got.values, got.configurations, got.trials) == ({}, 5, 5)
    assert got.note == ("no parameter other than the seed took more than one value among completed configurations: "
                        "importance is undefined")


def test_importances_over_five_configurations_leave_the_seed_out():
    records = [_record(i, 1e-3 * (i + 1), 1e-2, 1 + i % 3, 0.1 * i) for i in range(5)]
    got = _run(records)
    assert got.values == {"lam": 1.0} and (got.configurations, got.trials, got.note) == (5, 5, None)


@pytest.mark.parametrize("direction", ["max", "min"])
def test_optunas_own_warning_reaches_the_report_as_a_note_every_time(direction):
    """Equal means: PED-ANOVA warns that its quantiles select the same trials and splits the importance evenly;
    the report must say so (each time it is asked, not only the first time Python shows the warning)."""
    records = [_record(i, 1e-3 * (i + 1), 1e-2 * (1 + i % 2), 1, 0.5) for i in range(6)]
    for _ in range(2):
        got = _run(records, direction=direction)
        assert got.values == pytest.approx({"lam": 0.5, "lr": 0.5})
        assert got.note == ("Optuna: Target and region quantiles select the same set of trials. Parameter "
                            "importances will be equal")

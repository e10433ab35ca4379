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


def _journal(study_dir, studies):
    """optuna.journal with ``studies``: name → list of (state, params, value, user_attrs)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(study_dir / "optuna.journal")))
    for name, trials in studies.items():
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for state, params, value, attrs in trials:
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: LOG for k in params}, state=getattr(optuna.trial.TrialState, state),
                value=value if state == "COMPLETE" else None, user_attrs=attrs))


def test_read_optuna_takes_the_named_study_its_order_replicates_and_records(tmp_path):
    from study.report.importance import read_optuna
    from study.state.journal import RERUN_OF

    _journal(tmp_path, {
        "other": [("COMPLETE", {"lam": 0.05}, 0.9, {"trial_dir": "x"})],
        "mine": [("COMPLETE", {"lam": 1e-3}, 0.3, {"trial_dir": "trial_a"}),
                 ("FAIL", {"lam": 2e-3}, None, {"trial_dir": "trial_b"}),
                 ("COMPLETE", {"lam": 2e-3}, 0.4, {"trial_dir": "trial_b", RERUN_OF: 1}),  # re-ran #1 to an end
                 ("PRUNED", {"lam": 3e-3}, None, {"trial_dir": "trial_c",
                                                  "replicate_trials": {"1": "trial_c", "2": "trial_d", "x": "trial_e"}}),
                 ("COMPLETE", {"lam": 4e-3}, 0.2, {}),
                 ("COMPLETE", {"lam": 5e-3}, 0.1, {"replicate_trials": "not a mapping"})]})
    before = (tmp_path / "optuna.journal").read_bytes()
    got = read_optuna(tmp_path, "mine")
    assert (tmp_path / "optuna.journal").read_bytes() == before  # read from a private copy, never appended to
    assert got.note is None and got.states == {"COMPLETE": 4, "PRUNED": 1}  # the superseded FAIL left out
    assert got.order == {"trial_a": 0, "trial_b": 2, "trial_c": 3}
    assert got.numbers == {"trial_a": 0, "trial_b": 2, "trial_c": 3, "trial_d": 3, "trial_e": 3}
    assert got.seeds == {"trial_c": 1, "trial_d": 2, "trial_e": "x"}
    assert [(r.trial_dir, r.params, r.value, r.state) for r in got.records] == [
        ("trial_a", {"lam": 1e-3}, 0.3, "COMPLETE"), ("trial_b", {"lam": 2e-3}, 0.4, "COMPLETE"),
        ("trial_c", {"lam": 3e-3}, None, "PRUNED"), ("", {"lam": 4e-3}, 0.2, "COMPLETE"),
        ("", {"lam": 5e-3}, 0.1, "COMPLETE")]
    assert got.records[0].distributions == {"lam": LOG}
    # a name the journal does not hold: its first study
    assert read_optuna(tmp_path, "renamed").records[0].params == {"lam": 0.05}


def test_read_optuna_says_why_it_has_nothing(tmp_path):
    from study.report.importance import read_optuna

    assert read_optuna(tmp_path, "s").note == "no optuna.journal in the study directory: no parameter importance"
    (tmp_path / "optuna.journal").write_text("")
    assert read_optuna(tmp_path, "s").note == "optuna.journal holds no study: no parameter importance"
    (tmp_path / "optuna.journal").write_text('{"op_code": 0, "worker_id": "w"}\n')  # a study without its name
    got = read_optuna(tmp_path, "s")
    assert got.note == "the Optuna journal could not be read (KeyError: 'study_name')" and got.records == ()


@pytest.mark.parametrize("direction, larger", [("max", "lam"), ("min", "lr")])
def test_the_study_direction_decides_which_parameter_matters(direction, larger):
    """The three best scores come with the three largest λ; the three worst with the smallest learning rates. For a
    maximised metric λ matters most, for a minimised one lr: importances of the wrong direction would rank them the
    other way round."""
    import optuna

    lams = [1e-3 * (i + 1) for i in range(10)]
    lrs = [1e-3 * ((7 * i) % 10 + 1) for i in range(10)]
    values = [0.9 if i >= 7 else (-1.0 if lrs[i] < 4e-3 else 0.0) for i in range(10)]
    got = _run([_record(i, lam, lr, 1, v) for i, (lam, lr, v) in enumerate(zip(lams, lrs, values))],
               direction=direction)
    check = optuna.create_study(direction="maximize" if direction == "max" else "minimize")
    for lam, lr, v in zip(lams, lrs, values):
        check.add_trial(optuna.trial.create_trial(params={"lam": lam, "lr": lr}, distributions={"lam": LOG, "lr": LOG},
                                                  value=v))
    assert got.values == pytest.approx(dict(optuna.importance.get_param_importances(check, params=["lam", "lr"])))
    assert max(got.values, key=got.values.get) == larger


def test_a_note_beside_records_does_not_hide_them():
    records = tuple(_record(i, 1e-3 * (i + 1), 1e-2, 1, 0.1 * i) for i in range(5))
    got = config_importances(OptunaSummary(records=records, note="an earlier remark"), completed=[f"t{i}" for i in
                                                                                                 range(5)],
                             direction="max")
    assert got.values == {"lam": 1.0}


def test_optuna_refusing_or_warning_twice_is_said_in_the_note(monkeypatch):
    import warnings

    # the real module: ``optuna.importance`` may still be Optuna's lazy-import proxy, which a patch would not reach
    import optuna.importance as importance_module

    records = [_record(i, 1e-3 * (i + 1), 1e-2 * (1 + i % 2), 1, 0.1 * i) for i in range(6)]

    def refuse(study, params):
        raise RuntimeError("degenerate study")

    monkeypatch.setattr(importance_module, "get_param_importances", refuse)
    got = _run(records)
    assert (got.values, got.configurations, got.trials) == ({}, 6, 6)
    assert got.note == "Optuna could not compute importances (RuntimeError: degenerate study)"

    def warn(study, params):
        warnings.warn("Second remark on TAX.")
        warnings.warn("first remark.")
        return {"lr": 0.25, "lam": 0.75}

    monkeypatch.setattr(importance_module, "get_param_importances", warn)
    got = _run(records)
    assert got.values == {"lr": 0.25, "lam": 0.75}
    assert got.note == "Optuna: Second remark on TAX; Optuna: first remark"  # sorted, each once, no final stop

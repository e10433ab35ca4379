"""Population-based training (issue 22): the scheduler a study builds, its validation, mutation bounds, the
initial population, and reading a member's lineage back."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from study.run.pbt import (BoundedExplore, PB2_AVAILABLE_HINT, build_pbt_scheduler, initial_population,
                       mutation_bounds, pbt_settings)
from study.config.study_config import study_from_dict
from study_helpers import study_table
from trainables.config import ConfigError
from trainables.lineage import member_history

pytest.importorskip("ray")


def pbt_table(root: Path, **pbt) -> dict:
    table = study_table(root, name="pbt", num_samples=3, checkpoints_to_keep=3,
                        scheduler={"kind": "pbt", "pbt": {"perturbation_interval": 1, **pbt}})
    table["search"]["params"] = {"lambda_low": 1e-4, "lambda_high": 1e-2, "lr_low": 2e-3, "lr_high": 4e-2}
    return table


def pbt_study(root: Path, **pbt):
    return study_from_dict(pbt_table(root, **pbt), source="test.toml")


def test_the_scheduler_is_rays_pbt_with_the_study_bounds_and_evaluations_as_time(tmp_path):
    study = pbt_study(tmp_path, perturbation_interval=2, quantile_fraction=0.5, resample_probability=0.1,
                      perturbation_factors=[1.5, 0.5], burn_in=1)
    from ray.tune.schedulers import PopulationBasedTraining

    scheduler = build_pbt_scheduler(study)
    assert isinstance(scheduler, PopulationBasedTraining)
    assert scheduler._time_attr == "training_iteration"  # one evaluation
    assert (scheduler._perturbation_interval, scheduler._burn_in_period) == (2, 1)
    assert (scheduler._quantile_fraction, scheduler._resample_probability) == (0.5, 0.1)
    assert tuple(scheduler._perturbation_factors) == (1.5, 0.5)
    mutations = scheduler._hyperparam_mutations
    assert set(mutations) == {"adapt.lambda_adv_main", "optim.lr@deeplabv2_tiny"}
    assert (mutations["adapt.lambda_adv_main"].lower, mutations["adapt.lambda_adv_main"].upper) == (1e-4, 1e-2)
    assert (mutations["optim.lr@deeplabv2_tiny"].lower, mutations["optim.lr@deeplabv2_tiny"].upper) == (2e-3, 4e-2)
    assert [b.key for b in mutation_bounds(study)] == ["adapt.lambda_adv_main", "optim.lr"]
    only = pbt_study(tmp_path, mutate=["adapt.lambda_adv_main"])
    assert set(build_pbt_scheduler(only)._hyperparam_mutations) == {"adapt.lambda_adv_main"}


def test_explored_values_stay_inside_the_bounds(tmp_path):
    from ray.tune.schedulers.pbt import _explore

    study = pbt_study(tmp_path)
    bounds = mutation_bounds(study)
    scheduler = build_pbt_scheduler(study)
    clip = BoundedExplore(tuple(bounds))
    random.seed(0)
    escaped = 0
    for trial in range(400):
        b = bounds[trial % 2]
        config = {x.name: (x.high if trial % 4 < 2 else x.low) for x in bounds}  # members at the edges
        for explore in (None, clip):
            new, _ = _explore(config, scheduler._hyperparam_mutations, resample_probability=0.25,
                              perturbation_factors=(1.2, 0.8), custom_explore_fn=explore)
            inside = all(x.low <= new[x.name] <= x.high for x in bounds)
            if explore is None:
                escaped += not inside
            else:
                assert inside, (b, config, new)
    assert escaped > 100  # Ray's own explore does leave the range (x 1.2 at the top): the clip is needed


@pytest.mark.parametrize("change, key", [
    ({"pbt": {"interval": 1}}, "scheduler.pbt.interval"),
    ({"pbt": {"perturbation_interval": 3}}, "scheduler.pbt.perturbation_interval"),  # max_t = 3 evaluations
    ({"pbt": {"perturbation_interval": 0}}, "scheduler.pbt.perturbation_interval"),
    ({"pbt": {"quantile_fraction": 0.6}}, "scheduler.pbt.quantile_fraction"),
    ({"pbt": {"resample_probability": 1.5}}, "scheduler.pbt.resample_probability"),
    ({"pbt": {"perturbation_factors": [1.2, -0.8]}}, "scheduler.pbt.perturbation_factors"),
    ({"pbt": {"burn_in": 3}}, "scheduler.pbt.burn_in"),
    ({"kind": "pb2", "pbt": {"burn_in": 1}}, "scheduler.pbt.burn_in"),  # Ray's PB2 has none
    ({"pbt": {"mutate": ["adapt.lambda_target"]}}, "scheduler.pbt.mutate"),
    ({"pbt": {"mutate": ["adapt.lr_d"]}}, "scheduler.pbt.mutate"),  # not in the lambda_lr space: no bounds
    ({"kind": "asha", "pbt": {"perturbation_interval": 1}}, "scheduler.pbt"),
    ({"train": {"adapt": {"mode": "source_only"}}}, "train.adapt.mode"),
    ({"search": {"space": "lambda_lr", "sampler": "tpe", "seed": 0, "seeds": [1, 2]}}, "search.seeds"),
    ({"search": {"space": "lambda_adv", "sampler": "grid", "seed": 0}}, "search.sampler"),
    ({"search": {"space": "seeds", "sampler": "tpe", "seed": 0}}, "search.space"),
    ({"checkpoints_to_keep": 2}, "checkpoints_to_keep"),
    ({"num_samples": 1}, "num_samples"),
    ({"checkpoint_every": 2}, "scheduler.pbt.perturbation_interval"),
])
def test_bad_pbt_settings_are_refused_naming_the_key(tmp_path, change, key):
    table = pbt_table(tmp_path)
    for name, value in change.items():
        if name in ("kind", "pbt"):
            table["scheduler"] = {**table["scheduler"], name: value}
        elif name == "train":
            table["train"]["adapt"] = {**table["train"]["adapt"], **value["adapt"]}
        else:
            table[name] = value
    with pytest.raises(ConfigError) as err:
        study_from_dict(table, source="test.toml")
    assert err.value.key == key, str(err.value)
    assert "test.toml" in str(err.value) and "allowed" in str(err.value)


def test_pb2_needs_scikit_learn_and_says_so(tmp_path, monkeypatch):
    import study.config.pbt_settings as settings_module
    import study.run.pbt as pbt

    monkeypatch.setattr(settings_module, "pb2_available", lambda: False)  # where the study config checks it
    table = pbt_table(tmp_path)
    table["scheduler"]["kind"] = "pb2"
    with pytest.raises(ConfigError, match=PB2_AVAILABLE_HINT) as err:
        study_from_dict(table, source="test.toml")
    assert err.value.key == "scheduler.kind"
    monkeypatch.undo()
    if not pbt.pb2_available():
        pytest.skip("scikit-learn is not installed: PB2 itself cannot be built here")
    from ray.tune.schedulers.pb2 import PB2

    scheduler = build_pbt_scheduler(study_from_dict(table, source="test.toml"))
    assert isinstance(scheduler, PB2)
    assert scheduler._hyperparam_bounds["adapt.lambda_adv_main"] == [1e-4, 1e-2]


def test_the_initial_population_is_drawn_by_the_study_sampler_inside_the_bounds(tmp_path):
    from study.config.spaces import get_space, make_define_by_run
    from study.run.tuner import make_sampler

    def draw(seed):
        table = pbt_table(tmp_path)
        table["search"]["seed"] = seed
        study = study_from_dict(table, source="test.toml")
        define = make_define_by_run(get_space(study.search.space), study.space_params, base=study.train)
        return study, initial_population(study, define, make_sampler(study))

    study, population = draw(0)
    assert len(population) == study.num_samples == 3
    for member in population:
        for b in mutation_bounds(study):
            assert b.low <= member[b.name] <= b.high
    assert draw(0)[1] == population  # seeded
    assert draw(1)[1] != population


def test_settings_defaults_are_rays(tmp_path):
    from ray.tune.schedulers import PopulationBasedTraining
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(PopulationBasedTraining).parameters.items()}
    settings = pbt_settings(pbt_study(tmp_path))
    assert settings.quantile_fraction == defaults["quantile_fraction"]
    assert settings.resample_probability == defaults["resample_probability"]
    assert tuple(settings.perturbation_factors) == tuple(defaults["perturbation_factors"])


def _write(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "lineage.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_member_history_follows_clones_to_the_donor_state_at_the_time(tmp_path):
    lam = "adapt.lambda_adv_main"
    _write(tmp_path / "A", [{"event": "start", "iteration": 0, "time": 0, "hparams": {lam: 1}},
                            *[{"event": "eval", "iteration": i, "time": i, "hparams": {lam: 1}, "value": i}
                              for i in (2, 4, 6)]])
    _write(tmp_path / "B", [{"event": "start", "iteration": 0, "time": 0, "hparams": {lam: 9}},
                            {"event": "eval", "iteration": 2, "time": 2.5, "hparams": {lam: 9}, "value": 0},
                            {"event": "eval", "iteration": 4, "time": 4.5, "hparams": {lam: 9}, "value": 0},
                            # cloned A at its iteration 4 (A's evaluation at 6 came later: not its ancestor)
                            {"event": "clone", "iteration": 4, "time": 5, "donor": "A", "donor_iteration": 4,
                             "hparams": {lam: 1.2}},
                            {"event": "eval", "iteration": 6, "time": 7, "hparams": {lam: 1.2}, "value": 7},
                            # a crash, resumed from its own checkpoint at 4: the evaluation at 6 is lost work
                            {"event": "resume", "iteration": 4, "time": 8, "hparams": {lam: 1.2}},
                            {"event": "eval", "iteration": 6, "time": 9, "hparams": {lam: 1.2}, "value": 8}])
    history = member_history("B", lambda name: tmp_path / name)
    assert [(r["run"], r["iteration"], r["hparams"][lam], r["value"]) for r in history] == [
        ("A", 2, 1, 2), ("A", 4, 1, 4), ("B", 6, 1.2, 8)]


def test_the_preset_learns_schedules_from_the_source_only_start_on_a_label_free_metric():
    from study.config.files import load_toml
    from study.config.study_config import load_study_config
    from trainables.config import TrainConfig, from_dict

    study = load_study_config("lambda_schedule_pbt")
    assert study.scheduler.kind == "pbt" and study.metric == "uda/im" and study.train.eval.selection == "im"
    assert {b.key for b in mutation_bounds(study)} == {"adapt.lambda_adv_main", "adapt.lambda_adv_aux",
                                                       "optim.lr", "adapt.lr_d"}
    cfg = study.train
    assert cfg.adapt.mode == "adversarial" and cfg.model.multi_level
    start = Path(cfg.model.init_checkpoint)
    assert start.parts[-4:-2] == ("runs", "synthia_source_v2_multi") and start.name == "best.pt"
    source = from_dict(TrainConfig, load_toml("synthia_source_v2_multi", "configs"), source="synthia_source_v2_multi")
    assert source.adapt.mode == "source_only"
    assert (source.model.name, source.model.multi_level, source.data.num_classes) == (
        cfg.model.name, cfg.model.multi_level, cfg.data.num_classes)


def _register_like_pbt(manager, tmp_path):
    """A member reports checkpoints 0..2 (scores 0.5, 0.6, 0.4); PBT then saves the member, which registers its
    latest checkpoint (2) once more, as a new result object."""
    from ray.tune import Checkpoint
    from ray.tune.experiment.trial import _TrainingResult

    dirs = []
    for index, score in enumerate((0.5, 0.6, 0.4)):
        path = tmp_path / f"checkpoint_{index:06d}"
        path.mkdir(parents=True)
        (path / "state.pt").write_text("x")
        dirs.append(path)
        manager.register_checkpoint(_TrainingResult(Checkpoint(str(path)), {"val/mIoU16": score}))
    manager.register_checkpoint(_TrainingResult(Checkpoint(str(dirs[2])), {"val/mIoU16": 0.4}))  # PBT's save
    return dirs


def test_a_member_registers_each_checkpoint_once(tmp_path):
    """Ray 2.60 deletes a member's latest checkpoint when PBT registers it twice (study/run/pbt_ray.py): with the
    plain manager the directory PBT hands a clone is gone; with ours it stays and is held once. If the first half
    fails, Ray changed its manager or fixed the duplicate, and OnceCheckpointManager can be reconsidered."""
    from ray.tune import CheckpointConfig
    from ray.tune.experiment.trial import _CheckpointManager

    from study.run.pbt_ray import OnceCheckpointManager, register_each_checkpoint_once

    config = CheckpointConfig(num_to_keep=3, checkpoint_score_attribute="val/mIoU16", checkpoint_score_order="max")
    plain = _CheckpointManager(checkpoint_config=config)
    dirs = _register_like_pbt(plain, tmp_path / "plain")
    assert not dirs[2].exists()  # upstream: the latest checkpoint's directory deleted
    assert plain._latest_checkpoint_result.checkpoint.path == str(dirs[2])

    class Trial:  # what register_each_checkpoint_once reads of Ray's Trial
        class run_metadata:
            checkpoint_manager = _CheckpointManager(checkpoint_config=config)

    assert register_each_checkpoint_once(Trial) and type(Trial.run_metadata.checkpoint_manager) is \
        OnceCheckpointManager
    ours = Trial.run_metadata.checkpoint_manager
    dirs = _register_like_pbt(ours, tmp_path / "ours")
    assert all(d.is_dir() for d in dirs)  # three checkpoints, num_to_keep = 3: nothing to delete
    held = [r.checkpoint.path for r in ours._checkpoint_results]
    assert sorted(held) == sorted(map(str, dirs)) and ours._latest_checkpoint_result.checkpoint.path == str(dirs[2])
    # a fourth, better checkpoint evicts the worst (2, score 0.4) only now, and it is no longer the latest
    from ray.tune import Checkpoint
    from ray.tune.experiment.trial import _TrainingResult

    fourth = tmp_path / "ours" / "checkpoint_000003"
    fourth.mkdir()
    ours.register_checkpoint(_TrainingResult(Checkpoint(str(fourth)), {"val/mIoU16": 0.7}))
    assert not dirs[2].exists() and dirs[0].is_dir() and dirs[1].is_dir() and fourth.is_dir()


def test_pbt_schedulers_give_every_member_the_once_manager(tmp_path):
    from ray.tune import CheckpointConfig
    from ray.tune.experiment.trial import _CheckpointManager

    from study.run.pbt_ray import OnceCheckpointManager, StudyPBT

    class Trial:  # what PopulationBasedTraining.on_trial_add reads of Ray's Trial
        experiment_tag, config = "0", {"x": 1}

        class run_metadata:
            checkpoint_manager = _CheckpointManager(
                checkpoint_config=CheckpointConfig(num_to_keep=3, checkpoint_score_attribute="m",
                                                   checkpoint_score_order="max"))

    scheduler = StudyPBT(max_t=6, metric="m", mode="max", perturbation_interval=1,
                         hyperparam_mutations={"x": [1, 2]})

    class Controller:
        search_alg = None

    scheduler.on_trial_add(Controller(), Trial)
    assert type(Trial.run_metadata.checkpoint_manager) is OnceCheckpointManager


def test_a_resumed_synchronous_population_is_run_again():
    """``synch = true`` after ``study resume``: the scheduler comes back as pickled at the start while the members are
    at iteration 4. Ray's own PBT synchronises them there and then runs nothing (its next time equals where they
    stand: the resume hang); unstick_synch moves the next time one interval on, and only when no member runs."""
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pbt import _PBTTrialState

    from study.run.pbt_ray import StudyPBT, unstick_synch

    class Member:  # what Ray's choose_trial_to_run reads of a Trial
        def __init__(self, name, status):
            self.name, self.status, self.experiment_tag = name, status, name

    class Controller:
        def __init__(self, trials):
            self.trials = trials

        def get_trials(self):
            return self.trials

    def resumed(cls, **kwargs):
        scheduler = cls(time_attr="training_iteration", metric="m", mode="max", perturbation_interval=1, synch=True,
                        hyperparam_mutations={"x": [1, 2]}, **kwargs)
        members = [Member("a", "PAUSED"), Member("b", "PAUSED")]
        for member in members:
            scheduler._trial_state[member] = _PBTTrialState(member)
            scheduler._trial_state[member].last_train_time = 4
        # what Ray's synchronisation leaves: max(previous 1 + interval 1, latest train time 4)
        scheduler._next_perturbation_sync = max(scheduler._next_perturbation_sync + 1, 4)
        return scheduler, members

    plain, members = resumed(PopulationBasedTraining)
    assert plain.choose_trial_to_run(Controller(members)) is None  # upstream: stuck for good
    ours, members = resumed(StudyPBT, max_t=6)
    assert ours.choose_trial_to_run(Controller(members)) in members and ours._next_perturbation_sync == 5
    # not while a member runs: it will report, and Ray synchronises then
    ours, members = resumed(StudyPBT, max_t=6)
    members[1].status = "RUNNING"
    assert not unstick_synch(ours, members) and ours._next_perturbation_sync == 4
    # nor asynchronously, nor while a member is still below the next time
    members[1].status = "PAUSED"
    ours._trial_state[members[1]].last_train_time = 3
    assert not unstick_synch(ours, members)
    ours._synch = False
    ours._trial_state[members[1]].last_train_time = 4
    assert not unstick_synch(ours, members)

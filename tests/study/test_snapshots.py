"""Deferred checkpoint deletion (study/state/atomic_fs.py) and Ray's forced snapshots switched off (study/run/snapshots.py)."""
from __future__ import annotations

import inspect
import json
import threading

import pytest
from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
from ray.tune.execution.tune_controller import TuneController

from study.state.atomic_fs import DEFERRED, DeferredDeletes, atomic_local_filesystem
from study.run.search import PersistentASHA
from study.run.snapshots import StudyFIFO, stop_forced_snapshots


@pytest.fixture
def deferred():
    DEFERRED.enable()
    yield DEFERRED
    DEFERRED.disable()


def _checkpoint(root, n: int):
    path = root / f"checkpoint_{n:06d}"
    path.mkdir(parents=True)
    (path / "state.pt").write_bytes(b"x" * 100)
    return path


def _land_snapshot(fs, root, text="{}"):
    with fs.open_output_stream(str(root / "experiment_state-2026-11-28_06-00-00.json")) as out:
        out.write(text.encode())


def test_a_checkpoint_ray_deletes_goes_only_after_two_snapshots_have_landed(tmp_path, deferred):
    fs = atomic_local_filesystem()
    trial = tmp_path / "trial_a"
    old, other = _checkpoint(trial, 1), trial / "notes"
    other.mkdir()
    fs.delete_dir(str(old))  # what Ray's checkpoint manager does past num_to_keep
    fs.delete_dir(str(other))  # anything that is not a checkpoint_<n> directory goes at once
    assert old.is_dir() and not other.exists() and deferred.pending == 1
    _land_snapshot(fs, tmp_path)  # may have been written before Ray forgot the checkpoint
    assert old.is_dir()
    _land_snapshot(fs, tmp_path)  # written after: no stored state names it any more
    assert not old.exists() and deferred.pending == 0 and deferred.deleted == 1
    assert (tmp_path / "experiment_state-2026-11-28_06-00-00.json").read_text() == "{}"


def test_other_files_landing_do_not_count_as_snapshots(tmp_path, deferred):
    fs = atomic_local_filesystem()
    old = _checkpoint(tmp_path / "trial_a", 2)
    fs.delete_dir(str(old))
    for name in ("search_gen_state-x.json", "searcher-state-x.pkl", "trial_a/result.json"):
        with fs.open_output_stream(str(tmp_path / name)) as out:
            out.write(b"{}")
    assert old.is_dir()


def test_flush_deletes_what_is_pending_and_disable_keeps_it(tmp_path, deferred):
    fs = atomic_local_filesystem()
    first, second = _checkpoint(tmp_path / "t", 1), _checkpoint(tmp_path / "t", 2)
    fs.delete_dir(str(first))
    assert deferred.flush() == 1 and not first.exists()
    assert not deferred.enabled
    fs.delete_dir(str(second))  # not deferred any more: at once
    assert not second.exists()
    deferred.enable()
    third = _checkpoint(tmp_path / "t", 3)
    fs.delete_dir(str(third))
    assert deferred.disable() == 1 and third.is_dir()  # fit raised: the state may not have landed, keep it


def test_without_enable_deletion_is_immediate(tmp_path):
    assert not DEFERRED.enabled
    path = _checkpoint(tmp_path, 4)
    atomic_local_filesystem().delete_dir(str(path))
    assert not path.exists()


def test_a_checkpoint_already_gone_is_not_an_error(tmp_path, capsys):
    queue = DeferredDeletes()
    queue.enable()
    assert queue.defer(str(tmp_path / "checkpoint_000001"))
    queue.flush()
    assert capsys.readouterr().err == "" and queue.deleted == 0


def test_landings_from_the_upload_thread_and_deferrals_do_not_race(tmp_path, deferred):
    fs = atomic_local_filesystem()
    paths = [_checkpoint(tmp_path / "t", n) for n in range(40)]

    def land():
        for _ in range(20):
            _land_snapshot(fs, tmp_path)

    thread = threading.Thread(target=land)
    thread.start()
    for path in paths:
        fs.delete_dir(str(path))
    thread.join()
    _land_snapshot(fs, tmp_path)
    _land_snapshot(fs, tmp_path)
    assert deferred.pending == 0 and not any(p.exists() for p in paths)


# -- Ray's forced snapshots ------------------------------------------------------------------------------


class _Trial:
    pass


def test_rays_forced_snapshot_switch_is_where_we_set_it():
    """Fails when an upgrade of Ray moves the private attribute stop_forced_snapshots sets."""
    manager = _ExperimentCheckpointManager(storage=None, checkpoint_period="auto", sync_every_n_trial_checkpoints=2)
    trial = _Trial()
    manager.on_trial_checkpoint(trial)
    manager.on_trial_checkpoint(trial)
    assert manager._should_force_sync_up  # Ray's behaviour: forced after num_to_keep checkpoints of one trial

    manager = _ExperimentCheckpointManager(storage=None, checkpoint_period="auto", sync_every_n_trial_checkpoints=2)
    controller = type("Controller", (), {"_checkpoint_manager": manager})()
    assert stop_forced_snapshots(controller) is True
    for _ in range(5):
        manager.on_trial_checkpoint(trial)
    assert not manager._should_force_sync_up
    assert stop_forced_snapshots(controller) is False  # already off
    # The controller creates the manager with num_to_keep as the switch, under the name used above.
    source = inspect.getsource(TuneController._create_checkpoint_manager)
    assert "sync_every_n_trial_checkpoints=self._trial_checkpoint_config.num_to_keep" in source
    assert "self._checkpoint_manager = self._create_checkpoint_manager()" in inspect.getsource(TuneController)


@pytest.mark.parametrize("make", [lambda tmp: StudyFIFO(),
                                  lambda tmp: PersistentASHA(study_dir=tmp, time_attr="training_iteration",
                                                             metric="m", mode="max", max_t=4, grace_period=1)])
def test_the_study_schedulers_switch_forced_snapshots_off_only_when_deletions_are_deferred(tmp_path, make):
    def controller():
        manager = _ExperimentCheckpointManager(storage=None, checkpoint_period="auto",
                                               sync_every_n_trial_checkpoints=2)
        return type("Controller", (), {"_checkpoint_manager": manager})()

    scheduler = make(tmp_path)
    plain = controller()
    scheduler.on_trial_add(plain, _TrialForScheduler("a"))  # object storage: Ray's forced snapshots stay
    assert plain._checkpoint_manager._sync_every_n_trial_checkpoints == 2
    DEFERRED.enable()
    try:
        paced = controller()
        scheduler.on_trial_add(paced, _TrialForScheduler("b"))
        assert paced._checkpoint_manager._sync_every_n_trial_checkpoints is None
    finally:
        DEFERRED.disable()


class _TrialForScheduler:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id
        self.config = {}
        self.evaluated_params = {}

    def __hash__(self):
        return hash(self.trial_id)



def _full_result(step: int) -> dict:
    """What Ray makes of one dastudy report: the payload plus Ray's bookkeeping and the trial's config."""
    return {"val/mIoU16": 0.1 * step, "val/mIoU13": 0.2 * step, "iteration": 100 * step, "time/engine_s": 1.5 * step,
            "training_iteration": step, "time_total_s": 2.0 * step, "time_this_iter_s": 2.0, "done": False,
            "should_checkpoint": True, "checkpoint_dir_name": f"checkpoint_{step - 1:06d}", "trial_id": "abc",
            "hostname": "node-1", "pid": 4242, "config": {"adapt.lambda_adv_main": 0.001}}


def test_rays_run_metadata_is_what_we_subclass():
    """Fails when an upgrade of Ray changes the private run metadata lean_run_metadata subclasses: the snapshot
    keeps max/min/avg/last of the summaries only, as compact JSON that Ray's own loader reads back."""
    from ray.tune.experiment.trial import Trial
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    from study.run.snapshots import LeanRunMetadata, lean_run_metadata

    trial = Trial("probe", stub=True)
    assert type(trial.run_metadata) is _TrainingRunMetadata and trial.run_metadata._n_steps == (5, 10)
    trial.update_last_result(_full_result(1))
    plain = len(trial.run_metadata.get_json_state())
    assert lean_run_metadata(trial) and isinstance(trial.run_metadata, LeanRunMetadata)
    assert set(trial.run_metadata.metric_analysis) == {"val/mIoU16", "val/mIoU13"}  # converted: Ray's keys gone
    for step in range(2, 7):
        trial.update_last_result(_full_result(step))
    state = trial.run_metadata.get_json_state()
    assert len(state) < 0.5 * plain  # 1,450 characters after six results; Ray's own: 6,493 after one, 7,621 after six
    analysis = trial.run_metadata.metric_analysis
    assert set(analysis) == {"val/mIoU16", "val/mIoU13"}
    assert analysis["val/mIoU16"]["max"] == pytest.approx(0.6) and analysis["val/mIoU16"]["min"] == pytest.approx(0.1)
    assert analysis["val/mIoU16"]["avg"] == pytest.approx(0.35)  # (0.1 + ... + 0.6) / 6, Ray's running mean
    assert analysis["val/mIoU13"]["last"] == pytest.approx(1.2)
    assert "last-5-avg" not in state and "\n" not in state and "metric_n_steps" not in state
    restored = Trial("probe", stub=True)
    restored.restore_run_metadata(state)  # Ray's loader: plain metadata again, the same values
    assert restored.run_metadata.metric_analysis == analysis
    # the last result as a restore and dastudy read it: no config, host, pid or Ray's timings
    assert restored.run_metadata.last_result == {k: v for k, v in _full_result(6).items() if k in (
        "val/mIoU16", "val/mIoU13", "iteration", "training_iteration", "time_total_s", "done", "checkpoint_dir_name",
        "trial_id")}
    assert trial.run_metadata.last_result["hostname"] == "node-1"  # in memory: whole
    assert lean_run_metadata(restored)  # added back on resume: lean again, and it keeps counting
    restored.update_last_result(_full_result(7))
    assert restored.run_metadata.metric_analysis["val/mIoU16"]["max"] == pytest.approx(0.7)


def test_rays_checkpoint_manager_fields_are_where_we_cut_them(tmp_path):
    """Fails when an upgrade of Ray moves the checkpoint manager's private fields: the snapshot keeps the retained
    checkpoints with their metrics cut to the summaries and what a restore reads; after forget_checkpoints none."""
    from ray.tune import Checkpoint, CheckpointConfig
    from ray.tune.experiment.trial import _CheckpointManager
    from ray.tune.experiment.trial import _TrainingResult
    from ray.tune.experiment.trial import Trial

    from study.run.snapshots import forget_checkpoints, lean_run_metadata

    trial = Trial("probe", stub=True)
    assert lean_run_metadata(trial)
    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val/mIoU16",
                                                  checkpoint_score_order="max"))
    trial.run_metadata.checkpoint_manager = manager
    for step, score in ((1, 0.3), (2, 0.1), (3, 0.2)):
        path = tmp_path / f"checkpoint_{step - 1:06d}"
        path.mkdir()
        manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(path)),
                                                    {**_full_result(step), "val/mIoU16": score}))
    restored = Trial("probe", stub=True)
    restored.restore_run_metadata(trial.run_metadata.get_json_state())
    kept = restored.run_metadata.checkpoint_manager._checkpoint_results
    assert [r.checkpoint.path for r in kept] == [str(tmp_path / "checkpoint_000002"),
                                                 str(tmp_path / "checkpoint_000000")]
    assert kept[0] is restored.run_metadata.checkpoint_manager._latest_checkpoint_result  # one object, as in Ray
    assert set(kept[1].metrics) == {"val/mIoU16", "val/mIoU13", "iteration", "training_iteration", "time_total_s",
                                    "checkpoint_dir_name"}
    assert restored.checkpoint.path == str(tmp_path / "checkpoint_000002")  # what a resume restores from
    assert set(manager._checkpoint_results[0].metrics) == set(_full_result(3))  # in memory: untouched
    forget_checkpoints(trial)
    gone = Trial("probe", stub=True)
    gone.restore_run_metadata(trial.run_metadata.get_json_state())
    assert gone.run_metadata.checkpoint_manager._checkpoint_results == [] and gone.checkpoint is None
    assert trial.checkpoint.path == str(tmp_path / "checkpoint_000002")  # this driver still has it


def test_rays_syncer_command_is_where_we_clear_it(tmp_path):
    """Fails when an upgrade of Ray moves the private field idle_syncer clears: Ray's trials share the driver's
    syncer (a shallow copy of the experiment's storage context), so each trial record pickled the driver's last
    upload command; with a syncer of its own, the trial's record holds none, and the driver's syncs never reach it."""
    from ray import cloudpickle
    from ray.tune import SyncConfig
    from ray.tune.experiment.trial import StorageContext
    from ray.tune.experiment.trial import Trial

    from study.run.snapshots import idle_syncer

    # sync_artifacts (object-store studies): the trial keeps a syncer, its own (without it, it has none: below)
    experiment = StorageContext(storage_path=str(tmp_path / "studies"), experiment_dir_name="s",
                                sync_config=SyncConfig(sync_artifacts=True),
                                storage_filesystem=atomic_local_filesystem())
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "searcher-state.pkl").write_bytes(b"x")

    def driver_sync() -> None:  # what Ray's experiment snapshot does with the driver's staging directory
        assert experiment.syncer.sync_up(local_dir=str(staging), remote_dir=experiment.experiment_fs_path)
        experiment.syncer.wait()

    def stored_storage(record: str):  # the trial's storage context as the snapshot has it
        value = json.loads(record)["storage"]
        return cloudpickle.loads(bytes.fromhex(value["value"] if isinstance(value, dict) else value))

    trial = Trial("probe", stub=True, storage=experiment)
    assert trial.storage.syncer is experiment.syncer  # Ray's sharing
    driver_sync()
    shared = trial.get_json_state()[0]
    assert stored_storage(shared).syncer._current_cmd is not None
    assert str(staging).encode().hex() in shared  # the driver's staging path, in every trial's record

    assert idle_syncer(trial) and trial.storage.syncer is not experiment.syncer
    driver_sync()
    own = trial.get_json_state()[0]
    restored = stored_storage(own)
    assert restored.syncer._current_cmd is None and str(staging).encode().hex() not in own
    # at least the hex-encoded staging path less (2,649 -> 2,211 characters with pytest's default tmp_path; the
    # saving grows with the path, so a fixed number of characters failed under a short --basetemp)
    assert len(own) <= len(shared) - len(str(staging).encode().hex())
    assert experiment.syncer._current_cmd is not None  # the driver's own syncer works as before
    assert restored.experiment_fs_path == trial.storage.experiment_fs_path
    assert restored.sync_config == SyncConfig(sync_artifacts=True) and type(restored.sync_config) is SyncConfig


def test_without_artifact_sync_a_trial_has_no_syncer_and_ray_never_asks_for_it(tmp_path):
    """Fails when an upgrade of Ray uses a trial's syncer without ``sync_artifacts`` (a filesystem study): then
    idle_syncer must keep one. Ray's persist_artifacts is the only user of a trial's syncer in Ray 2.60."""
    from ray import cloudpickle
    from ray.tune import SyncConfig
    from ray.tune.experiment.trial import StorageContext
    from ray.tune.experiment.trial import Trial

    from study.run.snapshots import idle_syncer

    experiment = StorageContext(storage_path=str(tmp_path / "studies"), experiment_dir_name="s",
                                sync_config=SyncConfig(), storage_filesystem=atomic_local_filesystem())
    trial = Trial("probe", stub=True, storage=experiment)
    before = len(trial.get_json_state()[0])
    assert idle_syncer(trial) and trial.storage.syncer is None and experiment.syncer is not None
    after = trial.get_json_state()[0]
    assert len(after) < before - 300, (before, len(after))  # syncer gone, sync config compact: 2,211 -> 1,823
    value = json.loads(after)["storage"]
    restored = cloudpickle.loads(bytes.fromhex(value["value"] if isinstance(value, dict) else value))
    assert restored.syncer is None and type(restored.sync_config) is SyncConfig
    trial.storage.trial_dir_name = "trial_probe"
    # what a worker calls after each report: returns before the syncer (and the working directory) without
    # sync_artifacts
    trial.storage.persist_artifacts(force=True)
    trial.storage.persist_artifacts(force=False)


def test_compact_objects_rebuild_as_rays_own():
    """Fails when an upgrade of Ray moves the private fields of its resource request that compact reads, or when
    a compact object stops unpickling as Ray's own (equal, same type, same hash)."""
    from ray import cloudpickle
    from ray.tune import CheckpointConfig, SyncConfig
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    from study.run.snapshots import compact

    for obj in (SyncConfig(), SyncConfig(sync_artifacts=True, sync_period=60),
                CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val/mIoU16", checkpoint_score_order="min"),
                PlacementGroupFactory([{"CPU": 1}]), PlacementGroupFactory([{"CPU": 2, "GPU": 0.25}]),
                PlacementGroupFactory([{}, {"CPU": 1, "GPU": 1}], strategy="SPREAD")):
        lean = compact(obj)
        assert isinstance(lean, type(obj)) and compact(lean) is lean
        assert len(cloudpickle.dumps(lean)) < len(cloudpickle.dumps(obj))
        back = cloudpickle.loads(cloudpickle.dumps(lean))
        assert type(back) is type(obj) and back == obj, (back, obj)
        if isinstance(obj, PlacementGroupFactory):
            assert hash(back) == hash(obj) == hash(lean) and lean == obj
            assert (back.head_bundle_is_empty, back.bundles, back.strategy, back.required_resources) == (
                obj.head_bundle_is_empty, obj.bundles, obj.strategy, obj.required_resources)
    extra = PlacementGroupFactory([{"CPU": 1}], "PACK", lifetime="detached")
    assert compact(extra) is extra  # arguments compact does not carry: left whole
    assert compact({"a": 1}) == {"a": 1} and compact(SyncConfig) is SyncConfig

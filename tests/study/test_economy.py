"""1,000-trial economy: scalar-only Tune reports, a last-evaluation record per trial, the checkpoint estimate
and disk check before launch, checkpoints of PRUNED/FAILED trials removed when they end, TPE for parallel trials,
one device per trial."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from study.config.study_config import study_from_dict
from study_helpers import TEST_RAY_ENV, study_table, tiny_train_table

ray = pytest.importorskip("ray")


# ---------------------------------------------------------------------------------------------------------
# fast


def test_tune_summary_keeps_headline_scalars_only():
    from trainables.tune import tune_summary

    metrics = {"val/mIoU16": 0.41, "val/mIoU13": 0.45, "val/pixel_acc": 0.8, "val/IoU/road": 0.9,
               "select/IoU/sky": 0.7, "IoU/car": 0.2, "train/loss_seg": 1.5, "val/mIoU19": float("nan"),
               "note": "text"}
    assert tune_summary(metrics) == {"val/mIoU16": 0.41, "val/mIoU13": 0.45, "val/pixel_acc": 0.8,
                                     "train/loss_seg": 1.5}


class _Trainer:
    total_iterations = 4
    cfg = SimpleNamespace(runtime=SimpleNamespace(seed=0), eval=SimpleNamespace(interval=2))

    def save_checkpoint(self, path):
        Path(path).write_bytes(b"state")


def test_each_evaluation_reports_summaries_to_tune_and_everything_to_last_eval(tmp_path, monkeypatch):
    import trainables.tune as tt

    reported = []
    monkeypatch.setattr(tt.tune, "report", lambda metrics, checkpoint=None: reported.append((metrics, checkpoint)))
    reporter = tt._TuneReporter(metric="val/mIoU16", started=0.0, run_dir=tmp_path)
    reporter.on_log(2, {"train/loss_seg": 1.25})
    metrics = {"val/mIoU16": 0.5, "val/mIoU13": 0.55, "val/pixel_acc": 0.9, "val/IoU/road": 0.8,
               "val/IoU/train": float("nan")}
    reporter.on_evaluate(2, metrics, _Trainer())
    (report, checkpoint), = reported
    assert checkpoint is not None
    assert not [k for k in report if "IoU/" in k]
    assert report["val/mIoU16"] == 0.5 and report["iteration"] == 2
    # Training scalars stay in metrics.jsonl and TensorBoard: each key Tune receives costs state in every snapshot.
    assert sorted(report) == ["iteration", "time/engine_s", "time/setup_s", "val/mIoU13", "val/mIoU16",
                              "val/pixel_acc"]
    assert "finished" not in report
    last = json.loads((tmp_path / tt.LAST_EVAL_FILE).read_text())
    assert last["iteration"] == 2 and last["val/IoU/road"] == 0.8 and last["val/IoU/train"] is None
    reporter.on_evaluate(4, {**metrics, "val/mIoU16": 0.6}, _Trainer())
    assert reported[-1][0]["finished"] == 1.0
    assert json.loads((tmp_path / tt.LAST_EVAL_FILE).read_text())["val/mIoU16"] == 0.6


def test_report_reads_the_last_evaluation_record_not_the_log(tmp_path):
    from study.report.collect import _last_eval

    run = tmp_path / "run"
    run.mkdir()
    lines = [{"kind": "train", "iteration": i, "train/loss": 1.0} for i in range(1, 1000)]
    lines.append({"kind": "eval", "iteration": 1000, "val/mIoU16": 0.1})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert _last_eval(run)["val/mIoU16"] == 0.1  # an older run: the log is still read
    (run / "last_eval.json").write_text(json.dumps({"iteration": 1000, "val/mIoU16": 0.25, "val/IoU/road": None}))
    out = _last_eval(run)
    assert out["val/mIoU16"] == 0.25 and out["val/IoU/road"] != out["val/IoU/road"]  # NaN from null


@pytest.mark.parametrize("value, ok", [(1, True), (0.25, True), (2, False), (4, False)])
def test_more_than_one_gpu_per_trial_is_refused(tiny_benchmark, value, ok):
    from trainables.config import ConfigError

    table = study_table(tiny_benchmark, resources={"cpu": 1, "gpu": value})
    table["train"]["runtime"]["device"] = "auto"
    if ok:
        assert study_from_dict(table, source="t.toml").resources.gpu == value
    else:
        with pytest.raises(ConfigError, match=r"resources.gpu.*one trial trains on one device"):
            study_from_dict(table, source="t.toml")


@pytest.mark.parametrize("space, grouped", [("lambda_lr", False), ("lr_backbone", True)])
def test_tpe_is_set_up_for_parallel_trials(tiny_benchmark, space, grouped):
    from study.run.tuner import make_sampler

    params = {"models": ["deeplabv2_tiny", "deeplabv2_resnet101"]} if space == "lr_backbone" else {}
    table = study_table(tiny_benchmark, search={"space": space, "sampler": "tpe", "seed": 0, "startup_trials": 2,
                                                "params": params}, max_concurrent_trials=16)
    sampler = make_sampler(study_from_dict(table, source="t.toml"))
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._constant_liar and sampler._multivariate and sampler._group is grouped


def test_checkpoint_state_bytes_matches_a_saved_checkpoint(tiny_benchmark, tmp_path):
    """The pre-launch estimate per checkpoint is within 10 % of a real full-state checkpoint of the engine (after
    training: optimizer moments exist from the first step on)."""
    from trainables.config import TrainConfig, from_dict
    from trainables.engine import Trainer
    from trainables.tune import checkpoint_state_bytes

    cfg = from_dict(TrainConfig, tiny_train_table(tiny_benchmark, iterations=1, interval=1), source="tiny")
    trainer = Trainer(cfg, None)
    try:
        trainer.fit()
        saved = trainer.save_checkpoint(tmp_path / "state.pt").stat().st_size
    finally:
        trainer.close()
    estimate = checkpoint_state_bytes(cfg)
    assert abs(estimate - saved) / saved < 0.10, (estimate, saved)


def test_checkpoint_estimate_and_disk_refusal(tmp_path):
    from study.config.resources import PreflightError, check_checkpoint_space, estimate_checkpoint_bytes

    common = dict(state_bytes=400 * 2 ** 20, kept=3, num_samples=1000, max_t=8, grace_period=1, reduction_factor=2,
                  asha=True)
    kept_all = estimate_checkpoint_bytes(keep_pruned=True, **common)
    cleaned = estimate_checkpoint_bytes(keep_pruned=False, **common)
    assert kept_all.total == 400 * 2 ** 20 * 3 * 1000
    assert cleaned.trials == 125 and cleaned.total == kept_all.total // 8  # 1 -> 2 -> 4 -> 8: 3 rungs of 2x
    check_checkpoint_space(cleaned.__class__(per_checkpoint=1, kept=1, trials=1, note=""), tmp_path)
    free = shutil.disk_usage(tmp_path).free
    huge = cleaned.__class__(per_checkpoint=free, kept=1, trials=2, note="test")
    with pytest.raises(PreflightError, match=r"checkpoints: about .* free"):
        check_checkpoint_space(huge, tmp_path / "not" / "yet")


# ---------------------------------------------------------------------------------------------------------
# a study of checkpointing probes (no torch): ~20-40 s on 2 loaded cores


@pytest.fixture
def local_ray(monkeypatch):
    for key, value in TEST_RAY_ENV.items():
        monkeypatch.setenv(key, value)
    tmp = tempfile.mkdtemp(prefix="re", dir="/tmp")  # short: unix socket paths are limited to ~107 characters
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False, object_store_memory=100 * 1024 ** 2, _temp_dir=tmp)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def _checkpoint_bytes(trial_dir: Path) -> int:
    return sum(f.stat().st_size for d in trial_dir.glob("checkpoint_*") for f in d.rglob("*") if f.is_file())


def run_probe_study(benchmark: Path, storage: Path, *, name: str, num_samples: int, keep_pruned: bool,
                    concurrent: int = 2):
    """A study of :func:`trainables.tune.checkpoint_probe` (8 evaluations, ASHA, 64 KiB checkpoints); returns its
    home and Optuna trials. Also used for the 64-trial measurement (docs/performance.md)."""
    from study.run.tuner import run_study
    from trainables.tune import checkpoint_probe

    table = study_table(benchmark, name=name, num_samples=num_samples, max_concurrent_trials=concurrent,
                        keep_pruned_checkpoints=keep_pruned, checkpoints_to_keep=2, reuse_actors=True,
                        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2},
                        search={"space": "lambda_lr", "sampler": "random", "seed": 3})
    table["train"]["optim"].update(iter_max=16, iter_stop=16)  # 8 evaluations
    _, location = run_study(study_from_dict(table, source="test"), storage=str(storage), trainable=checkpoint_probe)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    trials = optuna.load_study(study_name=name, storage=JournalStorage(
        JournalFileBackend(str(location.home / "optuna.journal")))).trials
    return location.home, trials


@pytest.mark.slow
def test_pruned_and_diverged_trials_leave_no_checkpoints(local_ray, tiny_benchmark, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DASTUDY_PROBE_CKPT_BYTES", str(64 * 1024))
    monkeypatch.setenv("DASTUDY_PROBE_DIVERGE_BELOW", "0.2")
    home, trials = run_probe_study(tiny_benchmark, tmp_path / "studies", name="economy", num_samples=10,
                                   keep_pruned=False)
    out = capsys.readouterr().out
    assert "checkpoints: about" in out  # the pre-launch estimate was printed
    states = {t.user_attrs["trial_dir"]: t.state.name for t in trials}
    assert "PRUNED" in states.values() and "COMPLETE" in states.values(), states
    for trial, state in states.items():
        trial_dir = home / trial
        assert (trial_dir / "result.json").is_file()  # everything but the checkpoints stays
        left = sorted(p.name for p in trial_dir.glob("checkpoint_*"))
        if state in ("PRUNED", "FAIL"):
            assert not left, f"{trial} ({state}) kept {left}"
        else:
            assert left, f"{trial} (COMPLETE) has no checkpoint"
            assert len(left) <= 3  # checkpoints_to_keep best + the latest
    if "FAIL" in states.values():
        failed = [t for t, s in states.items() if s == "FAIL"]
        assert json.loads((home / failed[0] / "failure.json").read_text())["kind"] == "diverged"


# ---------------------------------------------------------------------------------------------------------
# experiment snapshots


def test_searcher_snapshot_never_leaves_a_temporary_file_in_the_staging_dir(tmp_path, monkeypatch):
    """Ray uploads its driver staging directory in a background thread while the next snapshot is written; a
    temporary file listed by the upload and renamed before it was read failed the sync (FileNotFoundError on
    ``.<uuid>-tmp-searcher-state-*.pkl``). While the searcher state is written, the staging directory must hold
    only whole files under their final names."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from study.run.search import StudySearch
    from study.config.spaces import get_space, make_define_by_run, resolve_params

    space = get_space("lambda_adv")
    searcher = StudySearch(make_define_by_run(space, resolve_params(space, {})), metric="val/mIoU16", mode="max",
                           max_t=4, study_dir=tmp_path, sampler=optuna.samplers.RandomSampler(seed=0),
                           study_name="snap", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))
    searcher.suggest("a")
    staging = tmp_path / "driver_artifacts"
    staging.mkdir()
    (staging / "experiment_state-x.json").write_text("{}")
    seen_while_writing: list[list[str]] = []
    real_save = StudySearch.save

    def watched_save(self, path):
        real_save(self, path)  # written, not yet renamed to its final name
        seen_while_writing.append(sorted(os.listdir(staging)))  # what a concurrent upload would list now

    monkeypatch.setattr(StudySearch, "save", watched_save)
    searcher.save_to_dir(str(staging), session_str="s1")
    searcher.save_to_dir(str(staging), session_str="s1")  # and again over the existing file
    assert seen_while_writing == [["experiment_state-x.json"],
                                  ["experiment_state-x.json", "searcher-state-s1.pkl"]]
    assert sorted(os.listdir(staging)) == ["experiment_state-x.json", "searcher-state-s1.pkl"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dastudy-searcher-")]


def test_checkpoint_every_k_evaluations_and_the_last(tmp_path, monkeypatch):
    import trainables.tune as tt

    reported = []
    monkeypatch.setattr(tt.tune, "report", lambda metrics, checkpoint=None: reported.append(checkpoint is not None))
    trainer = _Trainer()
    trainer.total_iterations = 10
    reporter = tt._TuneReporter(metric="val/mIoU16", started=0.0, run_dir=tmp_path, checkpoint_every=2)
    for iteration in (2, 4, 6, 8, 10):
        reporter.on_evaluate(iteration, {"val/mIoU16": 0.5}, trainer)
    assert reported == [False, True, False, True, True]  # evaluations 2 and 4, and the last (5)
    assert json.loads((tmp_path / tt.LAST_EVAL_FILE).read_text())["iteration"] == 10  # every evaluation recorded


def test_janitor_deletes_only_ray_checkpoints_of_pruned_trials_after_a_snapshot(tmp_path):
    """Only ``checkpoint_<n>`` directories of a PRUNED trial go, and only at the second experiment snapshot after
    it ended (a driver killed before the first one resumes from a state in which the trial still runs, and Ray
    would restart it from its checkpoint); completed trials keep theirs."""
    import pyarrow.fs as pafs

    from study.run.storage import CheckpointJanitor

    def trial(name: str, result: dict):
        root = tmp_path / name
        for sub in ("checkpoint_000000", "checkpoint_000001"):
            (root / sub).mkdir(parents=True)
            (root / sub / "state.pt").write_bytes(b"x" * 1000)
        (root / "checkpoint_notes").mkdir()  # not Ray's: kept
        (root / "result.json").write_text("{}")
        storage = SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(root))
        return SimpleNamespace(storage=storage, last_result=result), root

    janitor = CheckpointJanitor(max_t=4)
    pruned, pruned_dir = trial("trial_p", {"training_iteration": 1})
    done, done_dir = trial("trial_c", {"training_iteration": 4, "finished": 1.0})
    janitor.on_trial_complete(0, [], pruned)
    janitor.on_trial_complete(0, [], done)
    assert janitor.get_state() is None  # the snapshot that records the trial as ended
    assert (pruned_dir / "checkpoint_000001").is_dir()
    janitor.get_state()
    assert sorted(p.name for p in pruned_dir.iterdir()) == ["checkpoint_notes", "result.json"]
    assert janitor.removed_dirs == 2 and janitor.removed_bytes == 2000
    assert (done_dir / "checkpoint_000000").is_dir() and (done_dir / "checkpoint_000001").is_dir()
    late, late_dir = trial("trial_l", {"training_iteration": 2})
    janitor.on_trial_complete(0, [], late)
    janitor.on_experiment_end([])
    assert not list(late_dir.glob("checkpoint_0*"))


def test_janitor_makes_the_next_snapshot_forget_the_checkpoints_it_will_delete(tmp_path):
    """A pruned trial's checkpoints leave the stored state when the trial ends (its files go two snapshots later);
    a completed trial's stay."""
    import pyarrow.fs as pafs
    from ray.tune import Checkpoint
    from ray.tune.experiment.trial import _CheckpointManager
    from ray.tune.experiment.trial import _TrainingResult
    from ray.tune.experiment.trial import Trial

    from study.run.snapshots import lean_run_metadata
    from study.run.storage import CheckpointJanitor

    def trial(name: str, result: dict) -> Trial:
        (tmp_path / name / "checkpoint_000000").mkdir(parents=True)
        made = Trial("probe", stub=True)
        lean_run_metadata(made)
        made.run_metadata.checkpoint_manager = _CheckpointManager(None)
        made.run_metadata.checkpoint_manager.register_checkpoint(_TrainingResult(
            Checkpoint.from_directory(str(tmp_path / name / "checkpoint_000000")), result))
        made.update_last_result(result)
        made.storage = SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(tmp_path / name))
        return made

    def stored_checkpoint(made: Trial):
        restored = Trial("probe", stub=True)
        restored.restore_run_metadata(made.run_metadata.get_json_state())
        return restored.checkpoint

    janitor = CheckpointJanitor(max_t=4)
    pruned = trial("trial_p", {"training_iteration": 1, "val/mIoU16": 0.1})
    done = trial("trial_c", {"training_iteration": 4, "val/mIoU16": 0.5, "finished": 1.0})
    assert stored_checkpoint(pruned) is not None
    janitor.on_trial_complete(0, [], pruned)
    janitor.on_trial_complete(0, [], done)
    assert stored_checkpoint(pruned) is None and (tmp_path / "trial_p" / "checkpoint_000000").is_dir()
    assert stored_checkpoint(done).path == str(tmp_path / "trial_c" / "checkpoint_000000")


def test_resume_finishes_the_deletions_a_killed_driver_left_pending(tmp_path, capsys):
    """A driver killed with checkpoint deletions pending (Ray's num_to_keep ones deferred by DeferredDeletes, the
    janitor's two snapshots away) left them on disk for good; when the resume adds each trial restored from the
    saved state, the checkpoint folders that state no longer names and nothing will read go: all of a trial the
    janitor had marked, the ones older than the newest named otherwise. Anything else stays."""
    import pyarrow.fs as pafs
    from ray.tune import Checkpoint, CheckpointConfig
    from ray.tune.experiment.trial import _CheckpointManager
    from ray.tune.experiment.trial import _TrainingResult
    from ray.tune.experiment.trial import Trial

    from study.run.snapshots import StudyFIFO, forget_checkpoints, lean_run_metadata

    def killed_run(name: str, *, on_disk: range, kept: tuple[int, ...], forget: bool = False) -> str:
        """The trial as the killed driver last saved it; returns that saved run metadata."""
        root = tmp_path / name
        for index in on_disk:
            (root / f"checkpoint_{index:06d}").mkdir(parents=True)
            (root / f"checkpoint_{index:06d}" / "state.pt").write_bytes(b"x" * 100)
        (root / "checkpoint_notes").mkdir(parents=True)  # not Ray's: kept whatever happens
        made = Trial("probe", stub=True)
        lean_run_metadata(made)
        manager = _CheckpointManager(CheckpointConfig(num_to_keep=len(kept) or None))
        made.run_metadata.checkpoint_manager = manager
        for index in kept:
            manager.register_checkpoint(_TrainingResult(
                Checkpoint.from_directory(str(root / f"checkpoint_{index:06d}")), {"training_iteration": index + 1}))
        if forget:
            forget_checkpoints(made)
        return made.run_metadata.get_json_state()

    def resumed(name: str, saved: str, status: str) -> tuple[Trial, list[str]]:
        trial = Trial("probe", stub=True)
        trial.restore_run_metadata(saved)  # as Ray restores it: plain metadata from the saved JSON
        trial.storage = SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(),
                                        trial_fs_path=str(tmp_path / name), trial_dir_name=name)
        trial.set_status(status)
        StudyFIFO().on_trial_add(SimpleNamespace(), trial)
        return trial, sorted(p.name for p in (tmp_path / name).iterdir())

    # num_to_keep = 2: Ray had deleted 0-2 (deferred, lost with the driver); 5 was written after the last snapshot
    trial, left = resumed("trial_a", killed_run("trial_a", on_disk=range(6), kept=(3, 4)), "PENDING")
    assert left == ["checkpoint_000003", "checkpoint_000004", "checkpoint_000005", "checkpoint_notes"]
    assert trial.checkpoint.path == str(tmp_path / "trial_a" / "checkpoint_000004")  # what it resumes from
    assert "removing 3 checkpoint folder(s) (0.0 MiB) of trial_a" in capsys.readouterr().err
    # pruned: the janitor had marked it (the saved state names none of its checkpoints), the deletion was pending
    trial, left = resumed("trial_p", killed_run("trial_p", on_disk=range(2), kept=(1,), forget=True), "TERMINATED")
    assert left == ["checkpoint_notes"] and trial.run_metadata.forget_checkpoints
    # finally failed, and resume_errored runs it again: its old checkpoints go, its new ones will be stored
    trial, left = resumed("trial_f", killed_run("trial_f", on_disk=range(2), kept=(1,), forget=True), "PENDING")
    assert left == ["checkpoint_notes"] and not trial.run_metadata.forget_checkpoints
    assert '"forget_checkpoints":false' in trial.run_metadata.get_json_state()
    assert capsys.readouterr().err.count("removing 2 checkpoint folder(s)") == 2
    # a trial that never saved a checkpoint through Ray (killed before it recorded one): nothing to decide
    trial, left = resumed("trial_n", killed_run("trial_n", on_disk=range(1), kept=()), "PENDING")
    assert left == ["checkpoint_000000", "checkpoint_notes"] and capsys.readouterr().err == ""

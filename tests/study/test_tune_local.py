"""Real studies on a local Ray (2 CPUs, one logical GPU) with the tiny model on the tiny synthetic benchmark."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import optuna
import pytest

from study.config.study_config import study_from_dict
from study_helpers import TEST_RAY_ENV, study_table

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    saved = {k: os.environ.get(k) for k in TEST_RAY_ENV}
    os.environ.update(TEST_RAY_ENV)
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: unix socket paths are limited to ~107 characters
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False, object_store_memory=200 * 1024 ** 2, _temp_dir=tmp)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _optuna_trials(home: Path, name: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(home / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage).trials


def _rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_tiny_study_end_to_end(local_ray, tiny_benchmark, tmp_path, capsys):
    from study.run.tuner import run_study

    table = study_table(tiny_benchmark, name="e2e", num_samples=6, checkpoints_to_keep=3)
    study = study_from_dict(table, source="test")
    results, location = run_study(study, storage=str(tmp_path / "studies"))
    home = location.home
    assert home == tmp_path / "studies" / "e2e"
    assert len(results) == 6 and results.num_errors == 0
    for name in ("study.toml", "space.json", "provenance.json", "optuna.journal", "asha_rungs.json"):
        assert (home / name).is_file(), name
    provenance = json.loads((home / "provenance.json").read_text())
    assert provenance["sampler_seed"] == 0 and provenance["versions"]["ray"] and provenance["versions"]["optuna"]

    trial_dirs = sorted(p for p in home.iterdir() if p.name.startswith("trial_"))
    assert len(trial_dirs) == 6
    by_dir = {t.user_attrs["trial_dir"]: t for t in _optuna_trials(home, "e2e")}
    assert sorted(by_dir) == [p.name for p in trial_dirs]  # the same trials in Ray and in Optuna
    for trial_dir in trial_dirs:
        rows = _rows(trial_dir)
        run = trial_dir / "run"
        assert (run / "config.toml").is_file() and (run / "metrics.jsonl").is_file()
        events = list((run / "tb").glob("events.out.tfevents.*"))
        assert events, f"{trial_dir.name}: no TensorBoard events"
        assert not list(trial_dir.glob("events.out.tfevents.*"))  # Ray's TBX logger (ray/tune/ tags) is off
        # A PRUNED trial's checkpoints are removed when it ends (keep_pruned_checkpoints = false, the default).
        assert bool(list(trial_dir.glob("checkpoint_*/state.pt"))) == bool(rows[-1].get("finished")), trial_dir.name
        assert json.loads((run / "last_eval.json").read_text())["iteration"] == rows[-1]["iteration"]
        assert [r["training_iteration"] for r in rows] == list(range(1, len(rows) + 1))  # one report per eval
        assert [r["iteration"] for r in rows] == [2 * k for k in range(1, len(rows) + 1)]
        ot = by_dir[trial_dir.name]
        finished = bool(rows[-1].get("finished"))
        # ASHA-stopped trials are PRUNED in Optuna (Ray would say COMPLETE); full runs are COMPLETE.
        assert ot.state.name == ("COMPLETE" if finished else "PRUNED"), trial_dir.name
        assert finished == (len(rows) == 3)
        assert ot.value == pytest.approx(rows[-1]["val/mIoU16"])
        for row in rows[:-1]:
            assert ot.intermediate_values[row["training_iteration"]] == pytest.approx(row["val/mIoU16"])
        if ot.state.name == "PRUNED":  # the result that made ASHA stop it is its last intermediate value
            assert ot.user_attrs["pruned_at"] == len(rows)
            assert ot.intermediate_values[len(rows)] == pytest.approx(rows[-1]["val/mIoU16"])
    out = capsys.readouterr().out
    assert "started" in out and "eval 1/3  val/mIoU16=" in out and "study ended: 6 trials, 0 failed" in out

    # Clean TensorBoard tags (no ray/tune/ prefix) in a trial's own event file.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trial_dirs[0] / "run" / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "val/mIoU16 %" in tags and not [t for t in tags if t.startswith("ray/")]

    # `dastudy study status` reads the study directory and the journal alone.
    from study.cli import main

    assert main(["study", "status", str(home)]) == 0
    status = capsys.readouterr().out
    for trial_dir in trial_dirs:
        assert trial_dir.name in status
    assert "of 6 trials" in status and "best val/mIoU16" in status

    # A checkpoint restarts the run exactly: continue a trial from its first checkpoint with the engine and
    # compare with what the trial reported at its end.
    import torch

    from trainables.config import TrainConfig, from_dict, to_dict
    from trainables.engine import Trainer
    from trainables.tune import apply_overrides

    full = next(d for d in trial_dirs if _rows(d)[-1].get("finished"))
    first = sorted(full.glob("checkpoint_*"))[0] / "state.pt"
    params = json.loads((full / "params.json").read_text())
    cfg = from_dict(TrainConfig, apply_overrides(to_dict(study.train), params))
    torch.set_num_threads(1)  # trials run with one thread (Ray: OMP_NUM_THREADS = CPUs of the trial)
    trainer = Trainer(cfg, None)
    trainer.load_checkpoint(first)
    assert trainer.iteration == 2
    metrics = trainer.fit()
    trainer.close()
    assert metrics["val/mIoU16"] == pytest.approx(_rows(full)[-1]["val/mIoU16"], abs=1e-6)


@pytest.mark.slow
def test_diverged_trial_fails_with_its_reason_and_the_study_goes_on(local_ray, tiny_benchmark, tmp_path):
    from study.run.tuner import run_study

    # A grid over two learning rates: 0.01 trains, 1e15 blows the weights up at the first step. Both trials hold
    # a quarter of the logical GPU: they must fall back to the CPU (torch sees no CUDA here).
    table = study_table(tiny_benchmark, name="nan", num_samples=2,
                        search={"space": "lr", "sampler": "grid", "seed": 0, "params": {"lr_grid": [0.01, 1e15]}},
                        scheduler={"kind": "fifo"}, resources={"cpu": 0.5, "gpu": 0.25})
    table["train"]["runtime"]["device"] = "auto"
    results, location = run_study(study_from_dict(table, source="test"), storage=str(tmp_path / "studies"))
    assert len(results) == 2 and results.num_errors == 1
    trials = {t.params["optim.lr@deeplabv2_tiny"]: t for t in _optuna_trials(location.home, "nan")}
    bad, good = trials[1e15], trials[0.01]
    assert bad.state.name == "FAIL" and "diverged at iteration" in bad.user_attrs["fail_reason"]
    assert good.state.name == "COMPLETE" and good.value > 0
    bad_dir = location.home / bad.user_attrs["trial_dir"]
    failure = json.loads((bad_dir / "failure.json").read_text())
    assert failure["kind"] == "diverged"
    assert json.loads((bad_dir / "run" / "result.json").read_text())["status"] == "diverged"
    # It ended at its first evaluation instead of holding its share until the end.
    assert json.loads((bad_dir / "run" / "result.json").read_text())["iterations"] <= 2
    for trial in trials.values():
        provenance = json.loads((location.home / trial.user_attrs["trial_dir"] / "run" / "provenance.json")
                                .read_text())
        assert provenance["device"] == "cpu" and provenance["ray_gpu_ids"] == ["0"]
        assert provenance["gpu_share"] == 0.25


@pytest.mark.slow  # > 3 s: outside make test-quick
def test_four_quarter_gpu_trials_run_at_once_on_one_gpu(local_ray, tiny_benchmark, tmp_path):
    from study.run.tuner import run_study
    from trainables.tune import probe_trial

    table = study_table(tiny_benchmark, name="pack", num_samples=4, max_concurrent_trials=4,
                        search={"space": "lambda_adv", "sampler": "random", "seed": 0},
                        scheduler={"kind": "fifo"}, resources={"cpu": 0.5, "gpu": 0.25})
    table["train"]["optim"].update(iter_max=4, iter_stop=4)
    table["train"]["eval"]["interval"] = 2
    results, location = run_study(study_from_dict(table, source="test"), storage=str(tmp_path / "studies"),
                                  trainable=probe_trial)
    assert results.num_errors == 0
    probes = [json.loads(p.read_text()) for p in location.home.glob("trial_*/probe.json")]
    assert len(probes) == 4
    assert all(p["gpu_ids"] == ["0"] and p["cuda_visible_devices"] == "0" for p in probes)
    assert len({p["pid"] for p in probes}) == 4
    # All four intervals overlap: the last one to start began before the first one ended.
    assert max(p["start"] for p in probes) < min(p["end"] for p in probes)


# --- the study's baseline: reused only when it really finished; an interrupted one never blocks the study ------


def _baseline_study(tiny_benchmark):
    table = study_table(tiny_benchmark, name="with_baseline")
    table["baseline"] = {"overrides": {"optim": {"iter_max": 8, "iter_stop": 8}}}
    return study_from_dict(table, source="test")


def _fake_run(run_dir: Path, *, status: str | None, iterations: int, checkpoints=("last.pt", "best.pt")) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in checkpoints:
        (run_dir / "checkpoints" / name).write_bytes(b"weights")
    (run_dir / "config.toml").write_text("name = 'source_only'\n")
    if status is not None:
        (run_dir / "result.json").write_text(json.dumps({"status": status, "iterations": iterations,
                                                         "best_metric": "val/mIoU16", "best_value": 0.1}))


def test_a_baseline_stopped_early_is_not_reused_as_completed(tiny_benchmark, tmp_path, monkeypatch):
    """Ctrl-C during the baseline wrote result.json `completed` at iteration 149 of 400 and every later study
    reused it (issue 11). Reused: only a run that trained all its iterations; else it is resumed."""
    import study.run.baseline as baseline

    study = _baseline_study(tiny_benchmark)
    run_dir = baseline.baseline_dir(study, tmp_path)
    _fake_run(run_dir, status="completed", iterations=3)
    assert baseline.baseline_state(run_dir, 8)[0] == "resumable"

    started = []
    monkeypatch.setattr(baseline, "cluster_nodes", lambda: started.append("trains") or (_ for _ in ()).throw(
        RuntimeError("stop here: the baseline would be trained")))
    with pytest.raises(RuntimeError, match="would be trained"):
        baseline.prepare_baseline(study, storage_root=tmp_path, log=lambda _: None)
    assert started == ["trains"]

    (run_dir / "result.json").write_text(json.dumps({"status": "completed", "iterations": 8, "best_value": 0.2}))
    assert baseline.prepare_baseline(study, storage_root=tmp_path, log=lambda _: None) == (
        run_dir, str(run_dir / "checkpoints" / "best.pt"))  # all 8 iterations: reused, nothing trained


def test_a_baseline_killed_before_its_first_checkpoint_is_kept_aside_and_trained_again(
        tiny_benchmark, tmp_path, monkeypatch):
    """It blocked the study name for good: `FileExistsError ... pass --overwrite` (an option `study run` lacks)."""
    import study.run.baseline as baseline

    study = _baseline_study(tiny_benchmark)
    run_dir = baseline.baseline_dir(study, tmp_path)
    _fake_run(run_dir, status=None, iterations=0, checkpoints=())
    (run_dir / "metrics.jsonl").write_text('{"iteration": 1}\n')
    assert baseline.baseline_state(run_dir, 8)[0] == "partial"
    monkeypatch.setattr(baseline, "cluster_nodes", lambda: (_ for _ in ()).throw(RuntimeError("stop: trains")))
    with pytest.raises(RuntimeError, match="stop: trains"):
        baseline.prepare_baseline(study, storage_root=tmp_path, log=lambda _: None)
    kept = run_dir.with_name(run_dir.name + ".attempt-1")
    assert not run_dir.exists() and (kept / "metrics.jsonl").read_text() == '{"iteration": 1}\n'  # kept, not deleted

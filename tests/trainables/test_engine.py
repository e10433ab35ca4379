"""Training behaviour on the tiny synthetic benchmark: discriminator labels, learning rates, divergence, hooks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from trainables.engine import Trainer, TrainingDiverged, run_training
from trainables.losses import SOURCE_LABEL, TARGET_LABEL
from trainables.reporters import Reporter, StopTraining
from trainables.schedules import poly_lr

# source images 64×64, target 64×32: a discriminator's output height tells which domain it saw (2 vs 1 rows)
SOURCE_ROWS, TARGET_ROWS = 2, 1


class Recorder(Reporter):
    def __init__(self):
        self.logs, self.evals, self.events = [], [], []

    def on_start(self, trainer):
        self.events.append("start")

    def on_log(self, iteration, scalars):
        self.logs.append((iteration, dict(scalars)))

    def on_evaluate(self, iteration, metrics, trainer):
        self.evals.append((iteration, dict(metrics), list(trainer.last_eval_samples), trainer.num_classes))

    def on_checkpoint(self, iteration, path):
        self.events.append(("checkpoint", iteration, path.name))


def test_discriminators_see_their_own_outputs_with_source_0_and_target_1(make_config, monkeypatch):
    trainer = Trainer(make_config(data__source__size=[64, 64], adapt__lambda_adv_main=0.5,
                                  adapt__lambda_adv_aux=0.5))
    produced = {}  # id(discriminator output) → (level, rows)
    for level, discriminator in trainer.discriminators.items():
        def hook(module, args, output, level=level):
            produced[id(output)] = (level, output.shape[-2])
        discriminator.register_forward_hook(hook)
    calls = []
    real_loss = trainer.gan_loss

    def recording_loss(d_logits, label):
        level, rows = produced[id(d_logits)]
        domain = "source" if rows == SOURCE_ROWS else "target" if rows == TARGET_ROWS else "?"
        d_trainable = any(p.requires_grad for p in trainer.discriminators[level].parameters())
        calls.append((level, domain, label, d_trainable))
        return real_loss(d_logits, label)

    trainer.gan_loss = recording_loss
    bce_targets = []  # the target tensors that actually reach BCE-with-logits
    real_bce = torch.nn.functional.binary_cross_entropy_with_logits

    def recording_bce(input, target, *args, **kwargs):
        bce_targets.append(sorted(set(target.flatten().tolist())))
        return real_bce(input, target, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits", recording_bce)
    trainer.fit(until_iteration=1)
    assert bce_targets == [[0.0], [0.0], [0.0], [1.0], [0.0], [1.0]]
    assert calls == [
        # generator step: D frozen, target maps labelled "source" to fool each D
        ("main", "target", SOURCE_LABEL, False), ("aux", "target", SOURCE_LABEL, False),
        # discriminator step: each D on its own level's maps, source → 0, target → 1 (seed: 0 for both, S1)
        ("main", "source", SOURCE_LABEL, True), ("main", "target", TARGET_LABEL, True),
        ("aux", "source", SOURCE_LABEL, True), ("aux", "target", TARGET_LABEL, True),
    ]
    assert (SOURCE_LABEL, TARGET_LABEL) == (0.0, 1.0)


def test_learning_rates_head_10x_and_every_discriminator_decays(make_config):
    recorder = Recorder()
    cfg = make_config(optim__lr=0.01, optim__iter_max=10, optim__iter_stop=3, adapt__lr_d=1e-4)
    trainer = Trainer(cfg, reporters=[recorder])
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    head_ids = {id(p) for m in trainer.model.head_modules() for p in m.parameters()}
    assert {id(p) for p in groups["head"]["params"]} == head_ids
    trainer.fit()
    for iteration, scalars in recorder.logs:  # the rates logged after step k were set for iteration k - 1
        expected = poly_lr(0.01, iteration - 1, 10, 0.9)
        assert scalars["lr/backbone"] == pytest.approx(expected)
        assert scalars["lr/head"] == pytest.approx(10 * expected)
        assert scalars["lr/d_main"] == pytest.approx(poly_lr(1e-4, iteration - 1, 10, 0.9))
        assert scalars["lr/d_aux"] == pytest.approx(poly_lr(1e-4, iteration - 1, 10, 0.9))  # seed: D2 constant, S3
    assert [i for i, _ in recorder.logs] == [1, 2, 3]
    assert all(opt.param_groups[0]["lr"] < 1e-4 for opt in trainer.d_optimizers.values())
    keys = set(recorder.logs[0][1])
    assert {"train/loss_seg", "train/loss_seg_aux", "train/loss_adv_main", "train/loss_adv_aux", "train/loss_d_main",
            "train/loss_d_aux", "time/step_s"} <= keys


def test_source_only_evaluates_and_exposes_samples(make_config):
    recorder = Recorder()
    trainer = Trainer(make_config(mode="source_only", multi_level=False, optim__iter_stop=2, eval__interval=1),
                      reporters=[recorder])
    assert trainer.discriminators == {} and "target" not in trainer.streams
    trainer.fit()
    assert [e[0] for e in recorder.evals] == [1, 2]
    iteration, metrics, samples, num_classes = recorder.evals[-1]
    assert num_classes == 16 and len(samples) == 2  # eval.max_images = 2
    assert {"val/mIoU16", "val/mIoU13", "val/pixel_acc", "val/IoU/road"} <= set(metrics)
    assert "val/mIoU19" not in metrics
    sample = samples[0]
    assert sample["image"].dtype.name == "uint8" and sample["image"].shape == (32, 64, 3)
    assert sample["label"].shape == sample["pred"].shape == (32, 64) and sample["pred"].dtype.name == "int64"
    assert set(recorder.logs[0][1]) >= {"train/loss_seg", "lr/backbone", "lr/head"}
    assert not any(k.startswith("train/loss_adv") for k in recorder.logs[0][1])


def test_target_loss_modes(make_config):
    only = Trainer(make_config(adapt__mode="target_loss", adapt__target_loss="iw_maxsquare", multi_level=False))
    recorder = Recorder()
    only.reporters.append(recorder)
    only.fit(until_iteration=1)
    assert only.discriminators == {}
    assert "train/loss_target" in recorder.logs[0][1] and "train/loss_adv_main" not in recorder.logs[0][1]
    both = Trainer(make_config(adapt__target_loss="entropy", multi_level=False), reporters=[recorder])
    both.fit(until_iteration=1)
    assert {"train/loss_target", "train/loss_adv_main", "train/loss_d_main"} <= set(recorder.logs[-1][1])


def test_holdout_selection_split_is_excluded_from_the_target_stream(make_config):
    trainer = Trainer(make_config(eval__selection="holdout", eval__holdout_size=3, optim__iter_stop=1))
    assert len(trainer.selection_dataset) == 3
    assert len(trainer.streams["target"].dataset) == 12 - 3  # data.target.max_items = 12
    held_out = set(trainer.selection_dataset.indices)
    assert held_out == {9, 10, 11} and not held_out & set(trainer.streams["target"].dataset.indices)
    metrics = trainer.fit()
    assert "select/mIoU13" in metrics and "val/mIoU13" in metrics
    assert trainer.best["metric"] == "select/mIoU13" and trainer.best["iteration"] == 1


def test_huge_learning_rate_stops_as_diverged(make_config, tmp_path):
    result = run_training(make_config(mode="source_only", optim__lr=1e30, optim__iter_stop=6), tmp_path / "run")
    assert result["status"] == "diverged"
    assert result["message"].startswith("diverged at iteration ")
    assert "loss_seg" in result["message"] or "logits" in result["message"]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["status"] == "diverged" and saved["iterations"] < 6


def test_nan_loss_raises_training_diverged_with_iteration(make_config, monkeypatch):
    trainer = Trainer(make_config(mode="source_only", multi_level=False, runtime__log_interval=2))
    import trainables.engine as engine

    real_step = engine.source_only_step

    def poisoned(trainer_, batch):
        losses = real_step(trainer_, batch)
        return {**losses, "loss_seg": losses["loss_seg"] * math.nan} if trainer_.iteration == 2 else losses

    monkeypatch.setattr(engine, "source_only_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"diverged at iteration 4 \(loss_seg = nan\)"):
        trainer.fit()  # iteration index 2 is the third step; checked at the log of iteration 4


def test_reporter_can_stop_the_run(make_config, tmp_path):
    class StopAtTwo(Reporter):
        def on_log(self, iteration, scalars):
            if iteration == 2:
                raise StopTraining("enough")

    recorder = Recorder()
    result = run_training(make_config(optim__iter_stop=4), tmp_path / "run", reporters=[StopAtTwo(), recorder])
    assert result["status"] == "stopped" and result["message"] == "enough" and result["iterations"] == 2
    assert [i for i, _ in recorder.logs] == [1, 2]  # every reporter still saw iteration 2
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("error", [SystemExit(1), KeyboardInterrupt(), GeneratorExit()],
                         ids=lambda e: type(e).__name__)
def test_run_leaving_early_by_a_base_exception_is_interrupted_not_completed(make_config, tmp_path, error):
    """Ray's worker shutdown raises SystemExit inside training: the run is recorded as interrupted (issue 11: a
    baseline stopped at 149 of 400 was recorded completed and reused)."""
    class ExitAtTwo(Reporter):
        def on_log(self, iteration, scalars):
            if iteration == 2:
                raise error

    ends = []

    class End(Reporter):
        def on_end(self, result):
            ends.append(result)

    with pytest.raises(type(error)):
        run_training(make_config(optim__iter_stop=4), tmp_path / "run", reporters=[ExitAtTwo(), End()])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "interrupted" and result["iterations"] == 2 < 4
    assert "iteration 2 of 4" in result["message"] and type(error).__name__ in result["message"]
    assert [r["status"] for r in ends] == ["interrupted"]


def test_run_that_reaches_its_last_iteration_is_completed(make_config, tmp_path):
    result = run_training(make_config(optim__iter_stop=3), tmp_path / "run")
    assert result["status"] == "completed" and result["iterations"] == 3 and result["message"] is None
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "completed"


def test_no_host_sync_per_step_outside_log_intervals(make_config, monkeypatch):
    trainer = Trainer(make_config(mode="source_only", multi_level=False, runtime__log_interval=4))
    trainer.fit(until_iteration=1)  # starts the DataLoader iterator (it draws its base seed with one .item())
    reads = []
    real_tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append("item") or 0.0)
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append("tolist") or real_tolist(self))
    trainer.fit(until_iteration=3)
    assert reads == []
    monkeypatch.undo()
    assert trainer._pending_count == 3 and trainer._pending["loss_seg"].dim() == 0


def test_bf16_autocast_and_channels_last_keep_losses_float32(make_config):
    recorder = Recorder()
    trainer = Trainer(make_config(runtime__amp="bf16", runtime__channels_last=True, adapt__target_loss="maxsquare",
                                  optim__iter_stop=1), reporters=[recorder])
    trainer.fit()
    scalars = recorder.logs[0][1]
    assert all(math.isfinite(v) for v in scalars.values())
    assert trainer._pending == {}  # flushed at the end
    assert {"val/mIoU16", "val/mIoU13"} <= set(recorder.evals[-1][1])

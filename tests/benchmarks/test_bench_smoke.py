"""Every benchmark script's ``main`` runs at the tiniest sizes for a couple of steps and writes its report.

Not timing assertions: these keep the benchmarks from rotting while the engine changes underneath them.
"""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest

TINY = ["--threads", "1", "--warmup", "1", "--steps", "2"]


def _report(out, stem):
    payload = json.loads((out / f"{stem}.json").read_text())
    assert (out / f"{stem}.md").read_text().count("|") > 10  # a table was written
    assert payload["machine"]["cpu"] and payload["machine"]["torch"]
    return payload


@pytest.mark.slow  # > 3 s: outside make test-quick
def test_step_reference_vs_project(tmp_path):
    from benchmarks import step

    step.main(["--source-size", "64x32", "--target-size", "64x40", "--batch", "2", "--ref-batch", "1", "--ndf", "4",
               *TINY, "--out", str(tmp_path), "--tag", "s"])
    rows = {r["variant"]: r for r in _report(tmp_path, "s")["rows"]}
    assert set(rows) == {"reference", "project"}
    assert rows["reference"]["batch"] == 1 and rows["project"]["batch"] == 2
    # the same step: FLOPs per image agree (the reference's masked loss adds no matrix products)
    per_image = {name: r["tflop_per_step"] / r["batch"] for name, r in rows.items()}
    assert per_image["project"] > 0 and per_image["reference"] == pytest.approx(per_image["project"], rel=1e-6)
    assert rows["reference"]["ratio_vs_reference"] == 1.0
    # and the meta-device count of benchmarks.flops (the doc's floor) agrees with the real step's
    from benchmarks import flops

    setting = dict(step.SETTINGS["demo"], source_size=(64, 32), target_size=(64, 40), ndf=4)
    assert flops.count(setting, batch=2)["adversarial_step"] / 1e12 == pytest.approx(rows["project"]["tflop_per_step"],
                                                                                     rel=1e-9)
    assert all(math.isfinite(r["median_ms"]) and r["samples"] == 2 for r in rows.values())


def test_published_style_reference_syncs_the_host_every_step(tmp_path, monkeypatch):
    """The reference reads every logged loss on the host at every step, as the published loop."""
    import torch

    from benchmarks import step

    setting = dict(step.SETTINGS["demo"], source_size=(64, 32), target_size=(64, 32), ndf=4)
    run = step.build_reference(setting, batch=1, device=torch.device("cpu"))
    reads = []
    real_item = torch.Tensor.item
    # losses only (they have a grad_fn); torch's for-loop Adam also reads its step counters with .item()
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(self.grad_fn is not None) or real_item(self))
    run()
    assert sum(reads) == 8  # seg ×2, adv ×2, D ×4


@pytest.mark.slow  # > 3 s: outside make test-quick
def test_step_packing(tmp_path):
    from benchmarks import step

    step.main(["--source-size", "64x32", "--target-size", "64x32", "--batch", "1", "--ndf", "4", *TINY,
               "--procs", "2", "--out", str(tmp_path), "--tag", "p"])
    packing = _report(tmp_path, "p")["packing"]
    assert [p["procs"] for p in packing] == [1, 2] and packing[1]["images"] == 4
    assert packing[1]["throughput_vs_one"] > 0


@pytest.mark.slow  # > 2 s: outside make test-quick
def test_ablation(tmp_path):
    from benchmarks import ablation

    ablation.main(["--variant", "fp32", "--variant", "fp32,default-optim", *TINY, "--out", str(tmp_path),
                   "--tag", "a"])
    rows = _report(tmp_path, "a")["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "fp32,default-optim"] and rows[0]["vs_first"] == 1.0


def test_loader(tmp_path):
    from benchmarks import loader

    small = ["--set", "optim.batch_size=1", "--set", "data.source.size=[64,32]", "--set", "data.target.size=[64,32]",
             "--set", 'eval.selection="val"']
    loader.main(["--small", "--data", str(tmp_path / "synth"), "--workers", "0", "--pairs", "2", "--steps", "2",
                 "--warmup", "1", "--threads", "1", *small, "--out", str(tmp_path), "--tag", "l"])
    payload = _report(tmp_path, "l")
    assert {(r["labels"], r["cache"]) for r in payload["loader"]} == {
        ("raw", False), ("raw", True), ("prepared", False), ("prepared", True)}
    assert all(r["pairs_per_s"] > 0 for r in payload["loader"]) and len(payload["iterations"]) == 4
    assert all(r["reads_prepared_labels"] == (r["labels"] == "prepared") for r in payload["loader"])


def test_evaluate(tmp_path):
    from benchmarks import evaluate

    evaluate.main(["--input-size", "32x16", "--label-size", "48x24", "--images", "2", "--repeats", "1",
                   "--threads", "1", "--decode", "2", "--out", str(tmp_path), "--tag", "e"])
    payload = _report(tmp_path, "e")
    result = payload["evaluator"]
    assert result["images"] == 2 and result["images_per_s"] > 0 and result["tflop_per_image"] > 0
    # the eval dataset's items: input-size image, label at its native (here 48x24) size, the "full" protocol
    assert payload["decoding"]["image_shape"] == [3, 16, 32] and payload["decoding"]["label_shape"] == [24, 48]


def test_precision(tmp_path):
    from benchmarks import precision

    precision.main(["--small", "--data", str(tmp_path / "synth"), "--iterations", "2", "--baseline-iterations", "2",
                    "--seeds", "0,1", "--variants", "fp32,bf16", "--threads", "1",
                    "--set", "optim.batch_size=1", "--set", "data.source.size=[64,32]",
                    "--set", "data.target.size=[64,32]", "--set", "data.val.size=[64,32]",
                    "--set", 'eval.selection="val"',
                    "--out", str(tmp_path), "--tag", "q"])
    payload = _report(tmp_path, "q")
    assert [(r["variant"], r["seed"]) for r in payload["runs"]] == [("fp32", 0), ("bf16", 0), ("fp32", 1),
                                                                     ("bf16", 1)]
    assert all(0 <= r["mIoU16"] <= 100 for r in payload["runs"])


def test_asha_efficiency_configs_and_summary(tmp_path):
    from benchmarks import asha_efficiency as A

    payload = A.main(["--dry-run", "--data", str(tmp_path), "--out", str(tmp_path)])
    studies = payload["studies"]
    assert set(studies) == {"fifo", "asha"} and studies["asha"]["max_t"] == 4
    assert studies["fifo"]["iterations"] == 160 and studies["fifo"]["interval"] == 40

    def fake(values, iteration, finished, total, end):
        return SimpleNamespace(metrics={"iteration": iteration, "training_iteration": len(values),
                                        "finished": finished, "time/setup_s": 2.0, "time/engine_s": total - 3.0,
                                        "time_total_s": total, "timestamp": end},
                               metrics_dataframe=pd.DataFrame({"val/mIoU16": values}), error=None)

    # trial 1 runs from t=100 to 120, trial 2 from t=104 to 144: the trial phase spans 44 s
    rows = A.trial_rows([fake([0.30, 0.40], 80, False, 20.0, 120.0),
                         fake([0.2, 0.3, 0.35, 0.38], 160, True, 40.0, 144.0)], "val/mIoU16")
    summary = A.summarize_study(rows, wall_s=300.0, concurrency=2)
    assert summary["trial_iterations"] == 240 and summary["best"] == 0.40 and summary["best_complete"] == 0.38
    assert summary["trials_span_s"] == pytest.approx(44.0)
    assert summary["overhead_per_trial_s"] == pytest.approx((44.0 * 2 - 60.0) / 2)
    assert summary["in_trial_overhead_s"] == pytest.approx(3.0)
    comparison = A.compare({"fifo": {"summary": {"trial_iterations": 1000, "best": 0.40}},
                            "asha": {"summary": {"trial_iterations": 390, "best": 0.395}}})
    assert comparison["goal_met"] and comparison["iterations_ratio"] == 0.39
    assert not A.compare({"fifo": {"summary": {"trial_iterations": 1000, "best": 0.40}},
                          "asha": {"summary": {"trial_iterations": 410, "best": 0.40}}})["goal_met"]


@pytest.mark.slow  # > 2 s: outside make test-quick
def test_gpu_path_imports_without_ray_optuna_pypng_tomli_w(tmp_path):
    """The GPU machine has torch, torchvision, numpy and pillow only: the benchmarks gpu_check.sh runs must import
    and build their configs there."""
    import subprocess
    import sys

    from benchmarks._common import REPO

    code = (
        "import sys\n"
        "for name in ('ray', 'optuna', 'png', 'tomli_w', 'tensorboard', 'study.config.files'):\n"
        "    sys.modules[name] = None\n"
        "import benchmarks.step, benchmarks.evaluate, benchmarks.precision, benchmarks.loader\n"
        "table = benchmarks.loader.demo_train_table()\n"
        "assert table['model']['name'] == 'deeplabv2_tiny' and 'init_checkpoint' not in table['model'], table\n"
        "print('ok', table['data']['source']['size'])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok [128, 64]")


def test_sync_check(tmp_path):
    from benchmarks import sync_check

    sync_check.main(["--source-size", "64x32", "--target-size", "64x32", "--ndf", "4", "--batch", "1", "--steps", "2",
                     "--threads", "1", "--out", str(tmp_path), "--tag", "c"])
    payload = _report(tmp_path, "c")
    assert payload["syncs"]["syncs"] == 0 and payload["syncs"]["steps"] == 2 and payload["step_ms"] > 0


def test_flops_of_the_engine_steps_on_meta(tmp_path):
    from benchmarks import flops

    payload = flops.main(["--setting", "demo", "--out", str(tmp_path), "--tag", "f"])
    tflop = {r["what"]: r["tflop"] for r in _report(tmp_path, "f")["rows"]}
    # adaptation = source-only step + target forward/backward + discriminators: strictly more work
    assert 0 < tflop["evaluation_image"] < tflop["source_only_step"] < tflop["adversarial_step"]
    assert payload["peak_tflops"] == 800.0

"""TensorBoardReporter: events are read back with TensorBoard's own reader, not with our writer's helpers."""
from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator, plugin_event_multiplexer
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from data.labels import class_colors
from trainables.config import EvalConfig, TrainConfig
from trainables.tensorboard import TensorBoardReporter, prediction_panel, write_session_end

H, W = 6, 8


def _sample(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 16, size=(H, W))
    label[0, 0] = 255  # an ignored pixel
    pred = label.copy()
    pred[0, 0] = 2
    pred[1, 1] = (label[1, 1] + 1) % 16
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    return {"image": image, "label": label, "pred": pred}


def _trainer(samples, selection="val"):
    cfg = TrainConfig(eval=EvalConfig(selection=selection))
    return SimpleNamespace(cfg=cfg, num_classes=16, last_eval_samples=samples)


def _run(logdir, status="completed", hparams=None, samples=2, panel_every=1):
    reporter = TensorBoardReporter(logdir, hparams=hparams, metric_tags=("val/mIoU16",), panel_every=panel_every)
    trainer = _trainer([_sample(k) for k in range(samples)])
    reporter.on_start(trainer)
    for it in (10, 20, 30):
        reporter.on_log(it, {"train/loss_seg": 1.0 / it, "train/loss_adv_main": 0.5, "lr/backbone": 2.5e-4,
                             "note": "strings are not scalars"})
        reporter.on_evaluate(it, {"val/mIoU16": it / 100, "val/mIoU13": it / 90, "val/IoU/road": 0.7,
                                  "select/mIoU16": it / 110}, trainer)
        reporter.on_checkpoint(it, logdir / f"ckpt_{it}")
    reporter.on_end({"status": status})
    return reporter


def _accumulator(path):
    acc = event_accumulator.EventAccumulator(str(path), size_guidance={event_accumulator.IMAGES: 0,
                                                                       event_accumulator.SCALARS: 0})
    acc.Reload()
    return acc


def test_prediction_panel_layout_and_colours():
    sample = _sample(0)
    panel = prediction_panel(sample["image"], sample["label"], sample["pred"], num_classes=16, gap=2)
    assert panel.shape == (H, 3 * W + 4, 3) and panel.dtype == np.uint8
    colors = class_colors(16)
    np.testing.assert_array_equal(panel[:, :W], sample["image"])
    assert (panel[:, W:W + 2] == 255).all()  # separator
    gt, pr = panel[:, W + 2:2 * W + 2], panel[:, 2 * W + 4:]
    assert tuple(gt[0, 0]) == (0, 0, 0)  # ignore is black
    assert tuple(pr[0, 0]) == colors[2]
    assert tuple(gt[2, 3]) == colors[sample["label"][2, 3]]
    assert tuple(pr[1, 1]) == colors[(sample["label"][1, 1] + 1) % 16]


def test_prediction_panel_resizes_image_to_label():
    sample = _sample(1)
    small = sample["image"][::2, ::2]  # 3x4 image for a 6x8 label
    panel = prediction_panel(small, sample["label"], sample["pred"], num_classes=16)
    assert panel.shape == (H, 3 * W + 4, 3)
    np.testing.assert_array_equal(panel[2:4, 2:4], np.broadcast_to(small[1, 1], (2, 2, 3)))
    with pytest.raises(ValueError, match="label"):
        prediction_panel(sample["image"], sample["label"], sample["pred"][:2], num_classes=16)


def test_scalars_images_and_hparams_in_one_run(tmp_path):
    logdir = tmp_path / "trial_a" / "tb"
    _run(logdir, hparams={"adapt.lambda_adv_main": 0.002, "optim.lr": 2.5e-4, "model.multi_level": True,
                          "data.size": [64, 32]})
    acc = _accumulator(logdir)
    tags = acc.Tags()
    # IoUs in percent with the unit in the tag (as in the report and the CLI); no fraction-valued twin
    assert {"train/loss_seg", "train/loss_adv_main", "lr/backbone", "val/mIoU16 %", "val/mIoU13 %",
            "val/IoU/road %", "select/mIoU16 %", "trial/pruned", "trial/failed"} <= set(tags["scalars"])
    assert not [t for t in tags["scalars"] if t.startswith("ray/") or t == "note" or t.endswith("IoU16")]
    assert [e.step for e in acc.Scalars("val/mIoU16 %")] == [10, 20, 30]
    assert acc.Scalars("val/mIoU16 %")[-1].value == pytest.approx(30.0)
    assert acc.Scalars("lr/backbone")[-1].value == pytest.approx(2.5e-4)  # not an IoU: its own scale
    assert acc.Scalars("train/loss_seg")[0].value == pytest.approx(0.1)
    assert acc.Scalars("trial/pruned")[-1].value == 0.0

    assert sorted(tags["images"]) == ["val/panel/0", "val/panel/1"]
    events = acc.Images("val/panel/1")
    assert [e.step for e in events] == [10, 20, 30]
    decoded = np.asarray(Image.open(io.BytesIO(events[-1].encoded_image_string)))
    assert decoded.shape[:2] == (H, 3 * W + 4)
    sample = _sample(1)
    np.testing.assert_array_equal(decoded[..., :3], prediction_panel(sample["image"], sample["label"],
                                                                      sample["pred"], num_classes=16))

    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert set(content) == {hparams_metadata.EXPERIMENT_TAG, hparams_metadata.SESSION_START_INFO_TAG,
                            hparams_metadata.SESSION_END_INFO_TAG}
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["adapt.lambda_adv_main"].number_value == pytest.approx(0.002)
    assert start.hparams["optim.lr"].number_value == pytest.approx(2.5e-4)
    assert start.hparams["model.multi_level"].string_value == "true"
    assert start.hparams["data.size"].string_value == "[64, 32]"
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    assert [m.name.tag for m in experiment.metric_infos] == ["val/mIoU16 %", "trial/pruned"]
    assert {h.name for h in experiment.hparam_infos} == {"adapt.lambda_adv_main", "optim.lr",
                                                         "model.multi_level", "data.size"}
    end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS

    # The multiplexer over the parent directory sees exactly one run: HParams and scalars live together.
    mux = plugin_event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    assert list(mux.Runs()) == ["trial_a/tb"]
    assert "val/mIoU16 %" in mux.PluginRunToTagToContent("scalars")["trial_a/tb"]
    assert list(mux.PluginRunToTagToContent(hparams_metadata.PLUGIN_NAME)) == ["trial_a/tb"]


@pytest.mark.parametrize("status, expected, pruned", [("stopped", None, 1.0),
                                                       ("diverged", api_pb2.STATUS_FAILURE, 0.0)])
def test_end_status_is_visible(tmp_path, status, expected, pruned):
    _run(tmp_path, status=status, hparams={"optim.lr": 1e-3}, samples=1, panel_every=2)
    acc = _accumulator(tmp_path)
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    if expected is None:  # an early stop leaves the session open (shown as Unknown): a resume may still close it
        assert hparams_metadata.SESSION_END_INFO_TAG not in content
    else:
        end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
        assert end.status == expected
    assert acc.Scalars("trial/pruned")[-1].value == pruned
    assert acc.Scalars("trial/failed")[-1].value == (1.0 if status == "diverged" else 0.0)
    assert acc.Scalars("trial/pruned")[-1].step == 30
    # one sample → a single tag; panel_every=2 → evaluations 1 and 3
    assert [e.step for e in acc.Images("val/panel")] == [10, 30]


def test_without_hparams_no_session_and_default_metric_tags(tmp_path):
    _run(tmp_path / "plain")
    acc = _accumulator(tmp_path / "plain")
    assert hparams_metadata.PLUGIN_NAME not in acc.Tags().get("plugins", {}) or \
        not acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert "val/mIoU16 %" in acc.Tags()["scalars"]

    reporter = TensorBoardReporter(tmp_path / "holdout", hparams={"seed": 3})
    reporter.on_start(_trainer([], selection="holdout"))
    reporter.close()
    content = _accumulator(tmp_path / "holdout").PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    assert [m.name.tag for m in experiment.metric_infos] == ["val/mIoU16 %", "val/mIoU13 %",
                                                             "select/mIoU16 %", "select/mIoU13 %",
                                                             "trial/pruned"]


def test_session_end_written_afterwards_for_a_killed_trial(tmp_path):
    reporter = TensorBoardReporter(tmp_path, hparams={"optim.lr": 1e-3})
    trainer = _trainer([])
    reporter.on_start(trainer)
    reporter.on_evaluate(5, {"val/mIoU16": 0.1}, trainer)
    reporter.close()  # the scheduler killed the actor: on_end never ran
    write_session_end(tmp_path, "pruned", iteration=5)
    acc = _accumulator(tmp_path)
    assert acc.Scalars("trial/pruned")[-1].value == 1.0
    assert acc.Scalars("val/mIoU16 %")[-1].value == pytest.approx(10.0)
    assert hparams_metadata.SESSION_END_INFO_TAG not in acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)

    # resumed later (dastudy study resume) and finished: the session closes as a success, pruned goes back to 0
    reporter = TensorBoardReporter(tmp_path, hparams={"optim.lr": 1e-3})
    reporter.on_start(trainer)
    reporter.on_evaluate(10, {"val/mIoU16": 0.3}, trainer)
    reporter.on_end({"status": "completed", "iterations": 10})
    acc = _accumulator(tmp_path)
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    assert acc.Scalars("trial/pruned")[-1].value == 0.0
    assert acc.Scalars("val/mIoU16 %")[-1].value == pytest.approx(30.0)
    with pytest.raises(ValueError, match="status"):
        write_session_end(tmp_path, "exploded")


def test_stop_at_the_last_iteration_is_a_completed_run(tmp_path):
    reporter = TensorBoardReporter(tmp_path, hparams={"optim.lr": 1e-3})
    trainer = _trainer([])
    reporter.on_start(trainer)
    reporter.on_evaluate(40, {"val/mIoU16": 0.2}, trainer)
    reporter.on_end({"status": "stopped", "iterations": 40, "total_iterations": 40})
    acc = _accumulator(tmp_path)
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    assert acc.Scalars("trial/pruned")[-1].value == 0.0


def test_resume_drops_what_the_interrupted_run_logged_after_its_checkpoint(tmp_path):
    trainer = _trainer([])
    first = TensorBoardReporter(tmp_path, hparams={"optim.lr": 1e-3})
    first.on_start(trainer)
    for it in (10, 20, 30):
        first.on_evaluate(it, {"val/mIoU16": it / 100}, trainer)
    first.close()  # crashed after iteration 30; the last checkpoint is from iteration 20
    time.sleep(1.1)  # event files are read in name order, named by the second they were opened (as a real resume)
    trainer.iteration = 20
    second = TensorBoardReporter(tmp_path, hparams={"optim.lr": 1e-3})
    second.on_start(trainer)
    second.on_evaluate(30, {"val/mIoU16": 0.5}, trainer)
    second.on_end({"status": "completed", "iterations": 30})
    acc = _accumulator(tmp_path)
    assert [(e.step, round(e.value, 3)) for e in acc.Scalars("val/mIoU16 %")] == [(10, 10.0), (20, 20.0),
                                                                                    (30, 50.0)]


def test_bad_panel_every():
    with pytest.raises(ValueError, match="panel_every"):
        TensorBoardReporter("unused", panel_every=0)


def test_with_the_real_engine(make_config, tmp_path):
    """The engine's own scalars, metrics and evaluation samples end up as clean tags and panels."""
    from trainables.engine import run_training

    cfg = make_config(optim__iter_stop=4, eval__interval=2)
    run_dir = tmp_path / "run"
    reporter = TensorBoardReporter(run_dir / "tb", hparams={"adapt.lambda_adv_main": cfg.adapt.lambda_adv_main})
    result = run_training(cfg, run_dir, reporters=[reporter])
    assert result["status"] == "completed"
    acc = _accumulator(run_dir / "tb")
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss_seg", "train/loss_adv_main", "train/loss_d_main", "lr/backbone", "val/mIoU16 %",
            "val/mIoU13 %", "val/IoU/road %", "trial/pruned"} <= scalars
    assert not [t for t in scalars if t.startswith("ray/")]
    assert [e.step for e in acc.Scalars("val/mIoU16 %")] == [2, 4]
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in evals if r["kind"] == "eval"][-1]
    assert acc.Scalars("val/mIoU13 %")[-1].value == pytest.approx(100 * last_eval["val/mIoU13"], rel=1e-6)
    panels = [t for t in acc.Tags()["images"] if t.startswith("val/panel")]
    assert panels
    image = acc.Images(panels[0])[-1]
    assert (image.height, image.width) == (32, 3 * 64 + 4)  # label size 64x32, three panes, two separators
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS


def test_declared_domains_give_one_typed_column_per_parameter(tmp_path):
    """The study's space as HParams domains: intervals (λ, lr log-uniform), a discrete seed and backbone; one
    column per parameter (no log10_ twin), a log domain says so in its description; constants are no columns."""
    domains = {"lambda_adv": {"low": 1e-4, "high": 1e-2, "log": True},
               "lr": {"values": [0.01, 0.02], "log": True},
               "seed": {"values": [1, 2, 3], "log": False},
               "backbone": {"values": ["deeplabv2_tiny", "deeplabv3plus_tiny"], "log": False}}
    reporter = TensorBoardReporter(tmp_path, metric_tags=("val/mIoU16",), hparam_domains=domains,
                                   hparams={"lambda_adv": 1e-3, "lr": 0.02, "seed": 2, "backbone": "deeplabv2_tiny",
                                            "model.multi_level": True})
    reporter.on_start(_trainer([]))
    reporter.on_end({"status": "completed", "iterations": 10})
    content = _accumulator(tmp_path).PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    infos = {h.name: h for h in experiment.hparam_infos}
    assert list(infos) == ["lambda_adv", "lr", "seed", "backbone"]
    assert (infos["lambda_adv"].domain_interval.min_value, infos["lambda_adv"].domain_interval.max_value) == (
        1e-4, 1e-2)
    assert list(infos["lr"].domain_discrete) == [0.01, 0.02]
    assert "Logarithmic" in infos["lambda_adv"].description and "Logarithmic" in infos["lr"].description
    assert not infos["seed"].description and not infos["backbone"].description
    assert list(infos["seed"].domain_discrete) == [1.0, 2.0, 3.0] and infos["seed"].type == api_pb2.DATA_TYPE_FLOAT64
    assert infos["backbone"].type == api_pb2.DATA_TYPE_STRING
    assert [m.name.tag for m in experiment.metric_infos] == ["val/mIoU16 %", "trial/pruned"]
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    assert set(start.hparams) == {"lambda_adv", "lr", "seed", "backbone", "model.multi_level"}
    assert start.hparams["lambda_adv"].number_value == pytest.approx(1e-3)


def test_custom_scalars_layout_in_the_run_itself_with_one_chart_per_miou(tmp_path):
    """The layout lives in the trial's own event file (no extra run holds it), and mIoU13 and mIoU16 are never
    on one chart: each chart's regex matches one mean's tags only."""
    import re

    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import metadata as cs_metadata

    _run(tmp_path / "trial", hparams={"optim.lr": 1e-3}, samples=1)
    acc = _accumulator(tmp_path / "trial")
    assert cs_metadata.CONFIG_SUMMARY_TAG in acc.Tags()["tensors"]
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto.string_val[0])
    scalars = acc.Tags()["scalars"]
    charts = {chart.title: [t for t in scalars if any(re.search(r, t) for r in chart.multiline.tag)]
              for category in layout.category for chart in category.chart}
    assert sorted(charts["mIoU16 (%)"]) == ["select/mIoU16 %", "val/mIoU16 %"]
    assert charts["mIoU13 (%)"] == ["val/mIoU13 %"]
    assert "mIoU19 (%)" not in charts  # a 16-class run: no chart that can never match
    # Custom Scalars reads a tag as a regex when it draws it: a tag with brackets would be an empty chart
    assert not [t for t in scalars if set(t) & set("()[]{}+*?|^$\\")]
    assert layout.category[0].title == "mIoU (%)"  # the study's metric first, the losses after
    mux = plugin_event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    assert list(mux.Runs()) == ["trial"]

"""Console and JSON-lines reporters, driven through their hooks with a stand-in trainer."""
from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

from trainables.config import TrainConfig
from trainables.reporters import ConsoleReporter, JsonLinesReporter, Reporter


def _trainer(iteration=0):
    return SimpleNamespace(cfg=TrainConfig(name="r"), iteration=iteration, total_iterations=10, num_classes=16,
                           describe=lambda: "adversarial | tiny")


def test_base_reporter_hooks_are_no_ops(tmp_path):
    """Every hook returns None, keeps no state, and leaves what it is given (scalars, metrics, result, trainer,
    checkpoint file) exactly as it was."""
    import copy

    reporter = Reporter()
    trainer = _trainer(iteration=3)
    scalars, metrics, result = {"train/loss_seg": 1.0}, {"val/mIoU16": 0.5}, {"status": "completed"}
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"weights")
    before = copy.deepcopy((scalars, metrics, result, {k: v for k, v in vars(trainer).items() if k != "describe"}))
    calls = [reporter.on_start(trainer), reporter.on_log(1, scalars), reporter.on_evaluate(1, metrics, trainer),
             reporter.on_checkpoint(1, checkpoint), reporter.on_end(result)]
    assert calls == [None] * 5
    assert vars(reporter) == {}
    assert (scalars, metrics, result, {k: v for k, v in vars(trainer).items() if k != "describe"}) == before
    assert checkpoint.read_bytes() == b"weights" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_jsonl_writes_one_object_per_event_and_nan_as_null(tmp_path):
    path = tmp_path / "metrics.jsonl"
    reporter = JsonLinesReporter(path)
    reporter.on_start(_trainer())
    reporter.on_log(5, {"train/loss_seg": 0.5, "lr/backbone": 1e-3})
    reporter.on_evaluate(5, {"val/mIoU16": 0.25, "val/IoU/wall": math.nan}, _trainer(5))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0]["kind"] == "train" and records[0]["iteration"] == 5 and records[0]["train/loss_seg"] == 0.5
    assert records[1]["kind"] == "eval" and records[1]["val/mIoU16"] == 0.25 and records[1]["val/IoU/wall"] is None


def test_jsonl_drops_lines_written_after_the_resumed_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"kind": "train", "iteration": i}) + "\n" for i in range(1, 6))
                    + '{"kind": "tra')  # a line torn by a crash
    JsonLinesReporter(path).on_start(_trainer(iteration=3))
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_console_prints_logs_tables_and_result_without_progress_bar():
    stream = io.StringIO()
    reporter = ConsoleReporter(progress=False, stream=stream)
    reporter.on_start(_trainer())
    reporter.on_log(2, {"train/loss_seg": 0.123456, "lr/backbone": 0.01, "time/step_s": 0.2})
    metrics = {"val/mIoU16": 0.5, "val/mIoU13": 0.6, "val/pixel_acc": 0.9, "val/IoU/sky": 0.75}
    reporter.on_evaluate(2, metrics, _trainer(2))
    reporter.on_end({"status": "completed", "iterations": 2, "wall_s": 1.5, "best_metric": "val/mIoU13",
                     "best_value": 0.6, "best_iteration": 2})
    text = stream.getvalue()
    assert "adversarial | tiny" in text and "[2] loss_seg=0.1235" in text
    assert "iteration 2: target val" in text and "sky" in text and "75.00" in text and "mIoU16 50.00" in text
    assert "completed: 2 iterations" in text and "best val/mIoU13 = 60.00 % at 2" in text
    # a label-free selection score is not a percentage
    reporter.on_end({"status": "completed", "iterations": 2, "wall_s": 1.5, "best_metric": "uda/im",
                     "best_value": 0.97753, "best_iteration": 2})
    assert stream.getvalue().rstrip().endswith("best uda/im = 0.9775 at 2")


def test_console_progress_bar_reaches_the_total():
    stream = io.StringIO()
    reporter = ConsoleReporter(progress=True, stream=stream)
    reporter.on_start(_trainer())
    reporter.on_log(10, {"train/loss_seg": 0.5})
    reporter.on_end({"status": "completed", "iterations": 10, "wall_s": 1.0})
    assert "10/10" in stream.getvalue()

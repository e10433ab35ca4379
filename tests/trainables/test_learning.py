"""Training learns on the synthetic benchmark (issue 11: nothing tested that it does). 60 iterations of the tiny
DeepLabV2 at 64x32 on the session's tiny benchmark, about 30 s for both runs on one core:

- source-only beats chance: its target-val pixel accuracy beats the best constant prediction (the majority class's
  share of the val pixels, computed here) and its mIoU16 beats the untrained network's;
- the oracle (the same network trained on target train labels) beats source-only on target val mIoU16.

Measured when written (seeds 1, 2, 7): source-only mIoU16 4.5-8.0 %, pixel accuracy 0.35-0.44 (majority share
0.285); oracle mIoU16 13.2-13.8 %; untrained 0.3 %."""
from __future__ import annotations

import numpy as np
import pytest

from trainables import builders
from trainables.engine import Trainer

ITERATIONS = 60


def _run(make_config, tiny_benchmark, *, oracle: bool, iterations: int = ITERATIONS):
    overrides = dict(mode="source_only", multi_level=False, optim__iter_max=ITERATIONS, optim__iter_stop=ITERATIONS,
                     optim__batch_size=4, optim__lr=0.01, eval__interval=10 ** 6, eval__max_images=None,
                     eval__holdout_size=6, runtime__seed=7)
    if oracle:
        overrides.update(data__source__dataset="cityscapes", data__source__root=str(tiny_benchmark / "target"),
                         data__source__split="train")
    trainer = Trainer(make_config(**overrides))
    if iterations:
        trainer.fit(until_iteration=iterations)
    return trainer, trainer.evaluate()


def _majority_share(trainer) -> float:
    dataset = builders.build_eval_dataset(trainer.cfg, normalization=trainer.normalization)
    counts = np.zeros(trainer.num_classes, dtype=np.int64)
    for index in range(len(dataset)):
        label = dataset[index]["label"].numpy().ravel()
        counts += np.bincount(label[label < trainer.num_classes], minlength=trainer.num_classes)
    return float(counts.max() / counts.sum())


@pytest.mark.slow
def test_source_only_beats_chance_and_the_oracle_beats_source_only(make_config, tiny_benchmark):
    untrained, at_start = _run(make_config, tiny_benchmark, oracle=False, iterations=0)
    source, source_metrics = _run(make_config, tiny_benchmark, oracle=False)
    _, oracle_metrics = _run(make_config, tiny_benchmark, oracle=True)
    majority = _majority_share(source)
    assert source.iteration == ITERATIONS
    assert source_metrics["val/pixel_acc"] > majority + 0.03, (source_metrics["val/pixel_acc"], majority)
    assert source_metrics["val/mIoU16"] > 5 * at_start["val/mIoU16"] and source_metrics["val/mIoU16"] > 0.03
    assert oracle_metrics["val/mIoU16"] > source_metrics["val/mIoU16"] + 0.02, (oracle_metrics, source_metrics)

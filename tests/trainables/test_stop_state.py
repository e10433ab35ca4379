"""A graceful stop between two evaluations: the engine saves its full state where it is (``request_save``), and
the trial's next start continues from that state instead of the evaluation before it, bit-exactly; a state outside
the window (older than the restored checkpoint, or past the next evaluation) is ignored."""
from __future__ import annotations

import threading

import torch

from trainables.engine import Trainer
from trainables.reporters import Reporter


class LossLog(Reporter):
    def __init__(self):
        self.values = []

    def on_log(self, iteration, scalars):
        self.values.append((iteration, {k: v for k, v in scalars.items() if k.startswith("train/")}))


def _same_weights(a: Trainer, b: Trainer) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_a_save_requested_from_another_thread_happens_after_the_current_iteration(make_config, tmp_path):
    cfg = make_config(optim__iter_stop=6, eval__interval=100)
    trainer = Trainer(cfg)
    trainer.fit(until_iteration=2)
    seen = []
    asker = threading.Thread(target=trainer.request_save,
                             args=(tmp_path / "checkpoints" / "stop.pt", lambda it, path: seen.append((it, path))))
    asker.start()
    asker.join()
    trainer.fit(until_iteration=4)
    assert seen == [(3, tmp_path / "checkpoints" / "stop.pt")]  # once, after the first iteration that followed
    assert torch.load(seen[0][1], weights_only=True)["iteration"] == 3


def test_a_stop_state_between_evaluations_continues_bit_exactly(make_config, tmp_path):
    from trainables.tune import STOP_STATE, _continue_from_stop_state

    cfg = make_config(optim__iter_stop=8, eval__interval=4, data__hflip=True)
    straight = LossLog()
    reference = Trainer(cfg, reporters=[straight])
    reference.fit()

    run_dir = tmp_path / "run"
    first = Trainer(cfg)
    first.fit(until_iteration=4)
    first.save_checkpoint(tmp_path / "ray_checkpoint.pt")  # what Ray holds: the evaluation at 4
    first.request_save(run_dir / "checkpoints" / STOP_STATE, lambda it, path: None)
    first.fit(until_iteration=6)  # the stop came during iteration 5: saved after it
    assert torch.load(run_dir / "checkpoints" / STOP_STATE, weights_only=True)["iteration"] == 5

    later = LossLog()
    resumed = Trainer(cfg, reporters=[later])
    resumed.load_checkpoint(tmp_path / "ray_checkpoint.pt")
    assert _continue_from_stop_state(resumed, run_dir) == run_dir / "checkpoints" / STOP_STATE
    assert resumed.iteration == 5
    resumed.fit()
    assert later.values == straight.values[5:]  # iterations 6..8, exact float equality
    assert _same_weights(resumed, reference)

    # the same stop state after a later checkpoint (the evaluation at 8, or a crash retried from 4 after a
    # resume that passed 8): not used
    past = Trainer(cfg)
    past.load_checkpoint(tmp_path / "ray_checkpoint.pt")
    past.fit(until_iteration=8)
    assert _continue_from_stop_state(past, run_dir) is None and past.iteration == 8


def test_a_stop_state_past_the_next_evaluation_or_torn_is_ignored(make_config, tmp_path):
    from trainables.tune import STOP_STATE, _continue_from_stop_state

    cfg = make_config(optim__iter_stop=8, eval__interval=2)
    run_dir = tmp_path / "run"
    trainer = Trainer(cfg)
    trainer.fit(until_iteration=2)
    trainer.save_checkpoint(tmp_path / "ray_checkpoint.pt")
    trainer.fit(until_iteration=5)
    trainer.save_checkpoint(run_dir / "checkpoints" / STOP_STATE)  # iteration 5: past the evaluation at 4
    restored = Trainer(cfg)
    restored.load_checkpoint(tmp_path / "ray_checkpoint.pt")
    assert _continue_from_stop_state(restored, run_dir) is None and restored.iteration == 2  # Ray saw eval 4
    (run_dir / "checkpoints" / STOP_STATE).write_bytes(b"torn")
    assert _continue_from_stop_state(restored, run_dir) is None and restored.iteration == 2

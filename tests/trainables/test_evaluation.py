"""evaluate_model and predict on hand-built models whose right answer is known: eval mode during the pass and the
caller's mode restored after it, flip test-time augmentation mirrored back, metrics from the predictions
(issue 11: evaluation not restoring train mode and flip TTA not flipping back both passed the suite)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.evaluation import evaluate_model, predict

C = 16  # metrics know 16 or 19 classes


class Asymmetric(nn.Module):
    """Per-pixel logits from the pixel's value (so it commutes with a mirror, as flip TTA assumes): class 0 where
    channel 0 is positive, class 2 where it is negative. The images below are positive on the left half and
    negative on the right, so a mirrored prediction that is not flipped back is wrong everywhere. Records its
    mode (and its batch norm's) at each call."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)  # a submodule whose mode must follow
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, image):
        self.modes.append((self.training, self.norm.training))
        x0, x1 = image[:, :1], image[:, 1:2]
        rest = torch.full_like(x0, -10.0).expand(-1, C - 3, -1, -1)
        return {"out": torch.cat([4 * x0, 0.1 * x1, -4 * x0, rest], dim=1)}


def batches(n=2, height=4, width=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        image = 0.1 * torch.randn(1, 3, height, width, generator=generator)
        image[:, 0, :, : width // 2] += 1.0
        image[:, 0, :, width // 2:] -= 1.0
        label = torch.zeros(1, height, width, dtype=torch.long)
        label[..., width // 2:] = 2
        out.append({"image": image, "label": label})
    return out


@pytest.mark.parametrize("start_training", [True, False])
def test_pass_runs_in_eval_mode_and_restores_the_callers_mode(start_training):
    model = Asymmetric()
    model.train(start_training)
    evaluate_model(model, batches(), num_classes=C, device=torch.device("cpu"))
    assert model.modes and all(mode == (False, False) for mode in model.modes)
    assert model.training is start_training and model.norm.training is start_training


def test_mode_is_restored_when_the_pass_fails():
    model = Asymmetric().train()

    def broken():
        yield from batches(1)
        raise RuntimeError("reader failed")

    with pytest.raises(RuntimeError, match="reader failed"):
        evaluate_model(model, broken(), num_classes=C, device=torch.device("cpu"))
    assert model.training and model.norm.training


def test_trainer_keeps_training_in_train_mode_after_an_evaluation(make_config):
    from trainables.engine import Trainer

    trainer = Trainer(make_config(mode="adversarial"))
    assert trainer.model.training
    trainer.evaluate()
    assert trainer.model.training and all(m.training for m in trainer.model.modules())
    assert all(d.training for d in trainer.discriminators.values())


def test_flip_averages_the_softmax_with_the_mirrored_prediction_flipped_back():
    model = Asymmetric().eval()
    image = batches(1)[0]["image"]
    plain = predict(model, image, (4, 8))
    flipped = predict(model, image, (4, 8), flip=True)
    mirrored_back = model(image.flip(-1))["out"].flip(-1)
    expected = (F.softmax(plain, dim=1) + F.softmax(mirrored_back, dim=1)) / 2
    torch.testing.assert_close(flipped, expected)
    assert torch.equal(flipped.argmax(1), plain.argmax(1))  # the ramp dominates: same classes, left 0, right 2
    assert (flipped.argmax(1)[..., :4] == 0).all() and (flipped.argmax(1)[..., 4:] == 2).all()


def test_flip_evaluation_scores_a_column_dependent_model_perfectly():
    model = Asymmetric()
    for flip in (False, True):
        metrics = evaluate_model(model, batches(), num_classes=C, device=torch.device("cpu"), flip=flip).metrics
        assert metrics["pixel_acc"] == pytest.approx(1.0), (flip, metrics)

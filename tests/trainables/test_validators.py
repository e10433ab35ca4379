"""Label-free validators: hand-computed values on tiny tensors, fixed sampling, engine wiring and selection."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables import validators as V
from trainables.config import ConfigError, TrainConfig, from_dict
from trainables.engine import Trainer, run_training

ONE_HOT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
UNIFORM = torch.full((2, 2), 0.5)
LOG2 = math.log(2)


def binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_entropy_hand_values():
    assert V.entropy_score(ONE_HOT).item() == pytest.approx(0.0)
    assert V.entropy_score(UNIFORM).item() == pytest.approx(-LOG2)
    # rows [0.9, 0.1] and [1, 0]: −(H(0.9) + 0)/2
    probs = torch.tensor([[0.9, 0.1], [1.0, 0.0]])
    assert V.entropy_score(probs).item() == pytest.approx(-binary_entropy(0.9) / 2, rel=1e-6)


def test_im_hand_values():
    # confident and diverse: H(mean) = log 2, mean H = 0; uniform: log 2 − log 2; collapsed one-hot: 0 − 0
    assert V.im_score(ONE_HOT).item() == pytest.approx(LOG2)
    assert V.im_score(UNIFORM).item() == pytest.approx(0.0, abs=1e-7)
    assert V.im_score(torch.tensor([[1.0, 0.0], [1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-7)
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]])  # mean (0.7, 0.3)
    expected = binary_entropy(0.7) - (binary_entropy(0.9) + LOG2) / 2
    assert V.im_score(probs).item() == pytest.approx(expected, rel=1e-6)


def test_bnm_hand_values():
    # identity 2×2: singular values 1, 1 → 2 / 2; all-0.5: rank one with σ = ‖P‖_F = 1 → 1 / 2
    assert V.bnm_score(ONE_HOT).item() == pytest.approx(1.0)
    assert V.bnm_score(UNIFORM).item() == pytest.approx(0.5)
    # [I; uniform] as one matrix: PᵀP = [[1.5, 0.5], [0.5, 1.5]], eigenvalues 2 and 1 → (√2 + 1) / 4
    stacked = torch.cat([ONE_HOT, UNIFORM])
    assert V.bnm_score(stacked).item() == pytest.approx((math.sqrt(2) + 1) / 4, rel=1e-6)
    # a rotation of the columns' space does not matter: it agrees with the SVD of the whole matrix
    probs = torch.softmax(torch.randn(300, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    assert V.bnm_score(probs).item() == pytest.approx(torch.linalg.svdvals(probs.double()).sum().item() / 300,
                                                      rel=1e-6)


CLASSES, IMAGES, SIDE = 16, 16, 16  # 16 images of 16 × 16 = 256 pixels: the 256 pixels per image


class ClassImages(torch.utils.data.Dataset):
    """Images whose first channel holds each pixel's class: ``mixed`` = every image holds all 16 classes (16 pixels
    each), else image k holds class k only. Both have the same global class balance (256 pixels per class)."""

    def __init__(self, mixed: bool):
        self.mixed = mixed

    def __len__(self):
        return IMAGES

    def __getitem__(self, index):
        if self.mixed:
            classes = torch.arange(SIDE * SIDE).remainder(CLASSES).reshape(SIDE, SIDE)
        else:
            classes = torch.full((SIDE, SIDE), index)
        return {"image": classes.float()[None].repeat(3, 1, 1), "label": "not read", "name": str(index)}


class Oracle(torch.nn.Module):
    """Predicts the class in the image's first channel with a softmax of 1 − O(e^-50) (one-hot to float32)."""

    def forward(self, image):
        logits = 50.0 * F.one_hot(image[:, 0].long(), CLASSES).permute(0, 3, 1, 2).float()
        return {"out": logits}


@pytest.mark.parametrize("mixed", [True, False])
def test_bnm_scores_the_whole_sample_not_each_image(mixed):
    """Issue 18: rows are gathered image by image, so a chunk of 256 rows was one image, and BNM scored each image's
    class diversity: 0.25 for images that hold all 16 classes (16 rows per class: PᵀP = 16·I, σ = 4, ‖P‖_* = 64,
    64/256), 0.0625 for one-class images (one σ = √256 = 16, 16/256). Over the whole sample both hold 256 rows of
    each class: PᵀP = 256·I, σ = 16 for each of the 16 classes, ‖P‖_* = 256, N = 4096 → 0.0625 for both."""
    vset = V.ValidatorSet(["bnm", "im"], target=ClassImages(mixed), source_val=None, images=IMAGES,
                          pixels=SIDE * SIDE, num_classes=CLASSES, select_metric="mIoU16",
                          device=torch.device("cpu"))
    scores = vset.score(Oracle(), lambda ds: torch.utils.data.DataLoader(ds, batch_size=4))
    assert scores["uda/bnm"] == pytest.approx(256 / 4096, rel=1e-5)
    assert scores["uda/im"] == pytest.approx(math.log(16), rel=1e-5)  # same global balance: H(mean) = log 16


def test_snd_hand_values():
    # p1 = p2 = (1, 0), p3 = (0, 1): cosines s12 = 1, s13 = s23 = 0. With τ = 1:
    # q1 = softmax(1, 0) over {2, 3}, same for q2; q3 = softmax(0, 0) → H = log 2
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    p = math.e / (math.e + 1)
    expected = (2 * binary_entropy(p) + LOG2) / 3
    assert V.snd_score(probs, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    # chunking does not change the value; τ = 0.05 sharpens q1, q2 to near one-hot
    assert V.snd_score(probs, temperature=1.0, chunk=1).item() == pytest.approx(expected, rel=1e-6)
    p_sharp = 1 / (1 + math.exp(-20))
    assert V.snd_score(probs).item() == pytest.approx((2 * binary_entropy(p_sharp) + LOG2) / 3, rel=1e-4)


def test_snd_prefers_dense_neighbourhoods():
    # two tight clusters (dense) score higher than the same points spread uniformly on the simplex
    gen = torch.Generator().manual_seed(0)
    clustered = torch.cat([torch.tensor([0.95, 0.05]).repeat(20, 1), torch.tensor([0.05, 0.95]).repeat(20, 1)])
    clustered = clustered + 0.001 * torch.rand(40, 2, generator=gen)
    spread = torch.stack([torch.linspace(0, 1, 40), 1 - torch.linspace(0, 1, 40)], dim=1)
    assert V.snd_score(clustered) > V.snd_score(spread)


@pytest.mark.parametrize("source, target, expected_auc", [
    ([0.0, 1.0], [2.0, 3.0], 1.0),   # D separates perfectly
    ([2.0, 3.0], [0.0, 1.0], 0.0),   # separates, the other way round
    ([0.0, 2.0], [1.0, 3.0], 0.75),  # 3 of 4 pairs ordered
    ([1.0], [1.0], 0.5),             # a tie counts half
])
def test_auc_and_d_confusion(source, target, expected_auc):
    s, t = torch.tensor(source), torch.tensor(target)
    assert V.auc(s, t).item() == pytest.approx(expected_auc)
    assert V.d_confusion_score(s, t).item() == pytest.approx(1 - abs(2 * expected_auc - 1))


def test_sampling_is_fixed_and_distinct():
    a, b = V.sample_indices(100, 8), V.sample_indices(100, 8)
    assert a == b and len(set(a)) == 8 and a == sorted(a) and max(a) < 100
    assert V.sample_indices(5, 8) == [0, 1, 2, 3, 4]
    pix = V.pixel_indices(3, 4, 8, 10)
    assert np.array_equal(pix, V.pixel_indices(3, 4, 8, 10)) and len(set(pix.tolist())) == 10 and pix.max() < 32
    assert not np.array_equal(pix, V.pixel_indices(4, 4, 8, 10))  # each image has its own positions
    assert np.array_equal(V.pixel_indices(0, 2, 2, 10), np.arange(4))


def test_config_validation():
    cfg = from_dict(TrainConfig, {"eval": {"selection": "snd", "validators": ["im"]}})
    assert cfg.eval.active_validators == ("im", "snd")
    with pytest.raises(ConfigError, match=r"run.toml: eval.validators\[0\] = 'snd2'"):
        from_dict(TrainConfig, {"eval": {"validators": ["snd2"]}}, source="run.toml")
    with pytest.raises(ConfigError, match="d_confusion"):
        from_dict(TrainConfig, {"adapt": {"mode": "source_only"}, "eval": {"selection": "d_confusion"}})
    with pytest.raises(ConfigError, match="eval.validator_pixels"):
        from_dict(TrainConfig, {"eval": {"validator_pixels": 0}})


ALL = list(V.VALIDATORS)


def test_engine_reports_validators_and_selects_on_one(make_config, tmp_path):
    cfg = make_config(optim__iter_stop=4, eval__interval=2, eval__validators=ALL, eval__selection="snd",
                      eval__validator_images=3, eval__validator_pixels=20)
    result = run_training(cfg, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if any(k.startswith("val/") for k in line.get("metrics", line))]
    assert len(evals) == 2
    for line in evals:
        metrics = line.get("metrics", line)
        for name in ALL:
            assert math.isfinite(metrics[f"uda/{name}"]), name
    best = max(evals, key=lambda line: line.get("metrics", line)["uda/snd"])
    assert result["best_metric"] == "uda/snd"
    assert result["best_value"] == pytest.approx(best.get("metrics", best)["uda/snd"])


def test_validator_pass_is_fixed_and_leaves_training_untouched(make_config):
    """Same weights → same scores (fixed images and pixels); the pass neither draws from the global RNG nor leaves
    the model in eval mode, so a run with validators trains exactly like one without."""
    plain = Trainer(make_config(optim__iter_stop=2, eval__interval=1))
    scored = Trainer(make_config(optim__iter_stop=2, eval__interval=1, eval__validators=ALL,
                                 eval__validator_images=2, eval__validator_pixels=16))
    try:
        plain.fit()
        scored.fit()
        for a, b in zip(plain.model.state_dict().values(), scored.model.state_dict().values()):
            assert torch.equal(a, b)
        assert scored.model.training and scored.discriminators["main"].training
        first = scored.evaluate()
        again = scored.evaluate()
        assert {k: v for k, v in first.items() if k.startswith("uda/")} == \
            {k: v for k, v in again.items() if k.startswith("uda/")}
    finally:
        plain.close()
        scored.close()


def test_target_sample_never_reads_labels_and_skips_holdout(make_config):
    cfg = make_config(eval__validators=["entropy"], eval__selection="holdout", eval__holdout_size=4,
                      eval__validator_images=100)
    trainer = Trainer(cfg)
    try:
        # target.max_items = 12, 4 held out: the sample is the 8 items left, never the holdout
        assert trainer.validators.target_ids == list(range(8))
        probe = trainer.validators.target

        class NoLabels(torch.utils.data.Dataset):
            def __len__(self):
                return len(probe)

            def __getitem__(self, i):
                return {"image": probe[i]["image"], "label": "not read", "name": ""}

        trainer.validators.target = NoLabels()
        scores = trainer.validators.score(trainer.model, lambda ds: torch.utils.data.DataLoader(ds, batch_size=2))
        assert set(scores) == {"uda/entropy"} and scores["uda/entropy"] <= 0
    finally:
        trainer.close()

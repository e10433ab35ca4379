"""Loss functions against values computed by hand on tiny tensors."""
from __future__ import annotations

import math

import pytest
import torch

from trainables.losses import (GANLoss, entropy_loss, iw_maxsquare_loss, maxsquare_loss, multi_level_seg_loss,
                               segmentation_loss, target_loss, upsample)

LN3 = math.log(3.0)


def _logits(*pixels: tuple[float, float]) -> torch.Tensor:
    """(1, 2, 1, N) logits from per-pixel (class0, class1) pairs."""
    return torch.tensor(pixels, dtype=torch.float32).T.reshape(1, 2, 1, len(pixels))


def test_cross_entropy_ignores_255_and_averages_valid_pixels():
    logits = _logits((0.0, 0.0), (LN3, 0.0), (5.0, -5.0))
    label = torch.tensor([[[1, 0, 255]]])
    # pixel 0: p = (1/2, 1/2), label 1 → ln 2; pixel 1: p = (3/4, 1/4), label 0 → ln(4/3); pixel 2 ignored
    expected = (math.log(2) + math.log(4 / 3)) / 2
    assert segmentation_loss(logits, label).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_upsamples_logits_to_label_size():
    logits = torch.tensor([0.0, LN3]).view(1, 2, 1, 1)  # p = (1/4, 3/4) everywhere after upsampling
    label = torch.tensor([[[1, 1], [255, 0]]])
    expected = (2 * math.log(4 / 3) + math.log(4)) / 3
    assert segmentation_loss(logits, label).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_of_an_all_ignored_batch_is_zero_not_nan():
    loss = segmentation_loss(torch.randn(1, 3, 2, 2), torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0


def test_multi_level_loss_keeps_aux_term_separate():
    label = torch.tensor([[[1, 0]]])
    outputs = {"out": _logits((0.0, 0.0), (0.0, 0.0)), "aux": _logits((0.0, LN3), (0.0, LN3))}
    losses = multi_level_seg_loss(outputs, label, lambda_seg=0.1)
    assert losses["loss_seg"].item() == pytest.approx(math.log(2), rel=1e-6)
    # aux: p = (1/4, 3/4): label 1 → ln(4/3), label 0 → ln 4
    assert losses["loss_seg_aux"].item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2, rel=1e-6)
    assert "loss_seg_aux" not in multi_level_seg_loss({"out": outputs["out"]}, label, lambda_seg=0.1)


def test_upsample_is_bilinear_with_aligned_corners():
    x = torch.tensor([0.0, 3.0]).view(1, 1, 1, 2)
    assert upsample(x, (1, 4)).flatten().tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0])


def test_vanilla_gan_loss_is_bce_with_logits():
    gan = GANLoss("vanilla")
    assert gan(torch.zeros(1, 1, 2, 2), 1.0).item() == pytest.approx(math.log(2), rel=1e-6)
    d = torch.full((1, 1, 1, 1), LN3)  # sigmoid = 3/4
    assert gan(d, 0.0).item() == pytest.approx(math.log(4), rel=1e-6)
    assert gan(d, 1.0).item() == pytest.approx(math.log(4 / 3), rel=1e-6)


def test_lsgan_loss_is_mean_squared_error():
    gan = GANLoss("lsgan")
    assert gan(torch.full((1, 1, 1, 1), 2.0), 0.0).item() == pytest.approx(4.0)
    assert gan(torch.tensor([0.5, 1.5]).view(1, 1, 1, 2), 1.0).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="lsgan"):
        GANLoss("wgan")


def test_entropy_loss_matches_mean_of_minus_p_log_p():
    # p = (1/2, 1/2): Σ_c −p log p = ln 2, averaged over B·C·H·W = 2 entries
    assert entropy_loss(torch.zeros(1, 2, 1, 1)).item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    # p = (3/4, 1/4) and (1/2, 1/2): mean over 4 entries
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy_loss(_logits((LN3, 0.0), (0.0, 0.0))).item() == pytest.approx((h + math.log(2)) / 4, rel=1e-6)


def test_maxsquare_loss_matches_published_normalisation():
    # p = (3/4, 1/4): Σ p² = 10/16; loss = −Σ p² / (2·B·C·H·W) = −(10/16) / 4
    assert maxsquare_loss(_logits((LN3, 0.0))).item() == pytest.approx(-10 / 64, rel=1e-6)
    assert maxsquare_loss(torch.zeros(2, 4, 3, 3)).item() == pytest.approx(-(1 / 16) * 72 / (2 * 72), rel=1e-6)


def test_iw_maxsquare_single_image_by_hand():
    # pixels: argmax 0, 0, 1 with p = (3/4, 1/4), (3/4, 1/4), (1/4, 3/4); N_0 = 2, N_1 = 1, N = 3, α = 0.2
    logits = _logits((LN3, 0.0), (LN3, 0.0), (0.0, LN3))
    w0 = 1 / max(2 ** 0.2 * 3 ** 0.8, 1)
    w1 = 1 / max(1 ** 0.2 * 3 ** 0.8, 1)
    sq = 0.75 ** 2 + 0.25 ** 2
    expected = -(w0 * sq * 2 + w1 * sq) / (1 * 2)
    assert iw_maxsquare_loss(logits, ratio=0.2).item() == pytest.approx(expected, rel=1e-6)


def test_iw_maxsquare_batch_is_mean_of_single_images():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4, 6) * 3
    singles = [iw_maxsquare_loss(logits[i:i + 1], ratio=0.2) for i in range(3)]
    batch = iw_maxsquare_loss(logits, ratio=0.2)
    assert batch.item() == pytest.approx(torch.stack(singles).mean().item(), rel=1e-6)
    # the class weights really are per image: a batch of one image repeated equals that image
    same = iw_maxsquare_loss(logits[:1].repeat(3, 1, 1, 1), ratio=0.2)
    assert same.item() == pytest.approx(singles[0].item(), rel=1e-6)


def test_iw_weights_are_detached_but_probabilities_are_not():
    """The gradient is that of −Σ w·p² / (B·C) with the weights w as constants (computed here independently, per
    image, from the argmax counts) and the probabilities p differentiated."""
    ratio = 0.2
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = iw_maxsquare_loss(logits, ratio=ratio)
    loss.backward()

    reference_logits = logits.detach().clone().requires_grad_(True)
    prob = torch.softmax(reference_logits, dim=1)
    batch, classes, height, width = prob.shape
    weights = torch.empty(batch, height, width)
    for b in range(batch):  # constants: plain numbers from the argmax of each image
        argmax = prob[b].argmax(0).tolist()
        flat = [c for row in argmax for c in row]
        per_class = [1.0 / max(flat.count(c) ** ratio * (height * width) ** (1 - ratio), 1.0) for c in range(classes)]
        weights[b] = torch.tensor([[per_class[c] for c in row] for row in argmax])
    assert not weights.requires_grad
    reference = -(weights[:, None] * prob ** 2).sum() / (batch * classes)
    reference.backward()
    torch.testing.assert_close(loss.detach(), reference.detach())
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # the probabilities carry the gradient
    torch.testing.assert_close(logits.grad, reference_logits.grad)


def test_target_loss_dispatch_and_unknown_name():
    logits = torch.randn(1, 3, 2, 2)
    assert target_loss("maxsquare", logits).item() == pytest.approx(maxsquare_loss(logits).item())
    assert target_loss("entropy", logits).item() == pytest.approx(entropy_loss(logits).item())
    with pytest.raises(ValueError, match="maxsquare"):
        target_loss("hard", logits)


def test_iw_ratio_reaches_the_loss_and_defaults_to_the_papers_0_2():
    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(1))
    for ratio in (0.2, 0.5):
        assert target_loss("iw_maxsquare", logits, iw_ratio=ratio).item() == pytest.approx(
            iw_maxsquare_loss(logits, ratio=ratio).item())
    assert iw_maxsquare_loss(logits, ratio=0.5).item() != pytest.approx(iw_maxsquare_loss(logits, ratio=0.2).item())
    assert target_loss("iw_maxsquare", logits).item() == pytest.approx(iw_maxsquare_loss(logits, ratio=0.2).item())
    assert iw_maxsquare_loss(logits).item() == pytest.approx(iw_maxsquare_loss(logits, ratio=0.2).item())


def test_iw_weight_of_a_one_pixel_image_is_one():
    """N = N_c = 1: w = 1 / max(1, 1) = 1, so the loss is −Σ_c p_c² / C (the clamp at 1 keeps w ≤ 1, not lower)."""
    logits = torch.tensor([[[[2.0]], [[0.0]], [[-1.0]]]])
    prob = torch.softmax(logits, dim=1)
    assert iw_maxsquare_loss(logits).item() == pytest.approx(-(prob ** 2).sum().item() / 3)


def test_one_valid_pixel_gives_its_own_cross_entropy():
    logits = torch.tensor([[[[2.0, 0.5]], [[0.0, 1.0]]]])  # (1, 2 classes, 1, 2)
    label = torch.tensor([[[1, 255]]])  # one valid pixel, one ignored
    expected = -torch.log_softmax(logits[0, :, 0, 0], dim=0)[1]
    assert segmentation_loss(logits, label).item() == pytest.approx(expected.item())


def test_no_auxiliary_loss_when_its_weight_is_zero_and_the_default_gan_is_bce():
    outputs = {"out": torch.randn(1, 3, 2, 2), "aux": torch.randn(1, 3, 2, 2)}
    label = torch.zeros(1, 2, 2, dtype=torch.long)
    assert set(multi_level_seg_loss(outputs, label, lambda_seg=0.0)) == {"loss_seg"}
    assert set(multi_level_seg_loss(outputs, label, lambda_seg=0.1)) == {"loss_seg", "loss_seg_aux"}
    d_logits = torch.tensor([0.3, -1.2])
    assert GANLoss()(d_logits, 1.0).item() == pytest.approx(GANLoss("vanilla")(d_logits, 1.0).item())
    assert GANLoss()(d_logits, 1.0).item() != pytest.approx(GANLoss("lsgan")(d_logits, 1.0).item())

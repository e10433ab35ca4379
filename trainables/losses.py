"""Loss functions of source-only training, output-space adversarial adaptation and target-domain objectives.

Every function works on raw logits at the network's output stride and does its own upsampling (bilinear,
``align_corners=True``, as AdaptSegNet and MaxSquareLoss), always in float32 so that bf16 autocast never reaches
a softmax, a log or a reduction.

- Segmentation: cross-entropy with ``ignore_index=255`` at the label resolution.
- Adversarial (AdaptSegNet, Tsai et al. CVPR 2018, https://arxiv.org/abs/1802.10349): "vanilla" GAN loss
  (BCE with logits) or "lsgan" (MSE on the raw discriminator output); source label 0, target label 1.
- Target losses (MaxSquareLoss, Chen et al. ICCV 2019,
  https://openaccess.thecvf.com/content_ICCV_2019/papers/Chen_Domain_Adaptation_for_Semantic_Segmentation_With_Maximum_Squares_Loss_ICCV_2019_paper.pdf):
  entropy minimisation, MaxSquare and image-wise weighted MaxSquare, normalised as in the published code
  (see ``docs/training.md``), except that the image-wise weights are computed and applied per image, so that a
  batch of B images gives the mean of the B single-image losses.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE_INDEX", "SOURCE_LABEL", "TARGET_LABEL", "upsample", "segmentation_loss", "multi_level_seg_loss",
    "GANLoss", "entropy_loss", "maxsquare_loss", "iw_maxsquare_loss", "target_loss",
]

IGNORE_INDEX = 255
# Discriminator labels (AdaptSegNet / ADVENT): 0 = "comes from the source domain", 1 = "comes from the target".
SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, ``align_corners=True`` resize of (B, C, h, w) logits to ``size = (H, W)``, in float32."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the pixels of ``label`` that are not 255, logits upsampled to the label size.

    A batch whose pixels are all ignored gives 0 (not NaN): a crop can contain only void pixels.
    """
    logits = upsample(logits, tuple(label.shape[-2:]))
    per_pixel = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="sum")
    valid = (label != IGNORE_INDEX).sum()
    return per_pixel / valid.clamp(min=1)


def multi_level_seg_loss(outputs: dict[str, torch.Tensor], label: torch.Tensor, *, lambda_seg: float
                         ) -> dict[str, torch.Tensor]:
    """``{"loss_seg": CE(main), "loss_seg_aux": CE(aux)}`` (aux only when the model returns it).

    The total source loss is ``loss_seg + lambda_seg * loss_seg_aux`` (AdaptSegNet multi-level, λ_seg = 0.1).
    """
    losses = {"loss_seg": segmentation_loss(outputs["out"], label)}
    if "aux" in outputs and lambda_seg > 0:
        losses["loss_seg_aux"] = segmentation_loss(outputs["aux"], label)
    return losses


class GANLoss:
    """Adversarial loss on discriminator logits against a constant domain label.

    ``kind="vanilla"``: BCE with logits (AdaptSegNet default); ``kind="lsgan"``: mean squared error on the raw
    output (AdaptSegNet ``--gan LS``). A callable object, so that tests can wrap it and see the labels used.
    """

    def __init__(self, kind: Literal["vanilla", "lsgan"] = "vanilla"):
        if kind not in ("vanilla", "lsgan"):
            raise ValueError(f"GAN loss kind = {kind!r} is not valid; allowed: 'vanilla', 'lsgan'")
        self.kind = kind

    def __call__(self, d_logits: torch.Tensor, label: float) -> torch.Tensor:
        d_logits = d_logits.float()
        target = torch.full_like(d_logits, float(label))
        if self.kind == "vanilla":
            return F.binary_cross_entropy_with_logits(d_logits, target)
        return F.mse_loss(d_logits, target)

    def __repr__(self) -> str:
        return f"GANLoss({self.kind!r})"


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Entropy minimisation as in MaxSquareLoss's ``softCrossEntropy(p, p)``: mean over B·C·H·W of −p·log p.

    (Equals the mean per-pixel entropy divided by C.) Gradients flow through both factors.
    """
    logits = logits.float()
    return -(F.softmax(logits, dim=1) * F.log_softmax(logits, dim=1)).mean()


def maxsquare_loss(logits: torch.Tensor) -> torch.Tensor:
    """MaxSquare: −Σ p² / (2·B·C·H·W) (the published code's normalisation, with its extra 1/C). Not detached."""
    prob = F.softmax(logits.float(), dim=1)
    return -(prob ** 2).sum() / (2 * prob.numel())


def iw_maxsquare_loss(logits: torch.Tensor, *, ratio: float = 0.2) -> torch.Tensor:
    """Image-wise weighted MaxSquare.

    For each image, N_c = pixels whose argmax is c, N = H·W, w_c = 1 / max(N_c^α · N^(1−α), 1) with α = ``ratio``;
    each pixel takes the (detached) weight of its argmax class and the image's loss is −Σ_{pixels, classes} w·p² / C.
    The batch loss is the mean over images. The published code divides a batch sum by B·C as well but multiplies
    (B, C, H, W) by (B, H, W) weights, which broadcasts correctly only for B = 1; here the weights are indexed per
    image, so B > 1 equals the mean of the B single-image losses.
    """
    prob = F.softmax(logits.float(), dim=1)
    batch, num_classes, height, width = prob.shape
    with torch.no_grad():
        argmax = prob.argmax(dim=1).flatten(1)  # (B, H·W)
        counts = torch.zeros(batch, num_classes, device=prob.device, dtype=torch.float32)
        counts.scatter_add_(1, argmax, torch.ones_like(argmax, dtype=torch.float32))
        total = float(height * width)
        class_weight = 1.0 / torch.clamp(counts.pow(ratio) * total ** (1.0 - ratio), min=1.0)  # (B, C)
        pixel_weight = torch.gather(class_weight, 1, argmax).view(batch, 1, height, width)
    return -(pixel_weight * prob ** 2).sum() / (batch * num_classes)


def target_loss(kind: str, logits: torch.Tensor, *, iw_ratio: float = 0.2) -> torch.Tensor:
    """Dispatch ``adapt.target_loss`` = ``entropy`` | ``maxsquare`` | ``iw_maxsquare`` on target logits."""
    if kind == "entropy":
        return entropy_loss(logits)
    if kind == "maxsquare":
        return maxsquare_loss(logits)
    if kind == "iw_maxsquare":
        return iw_maxsquare_loss(logits, ratio=iw_ratio)
    raise ValueError(f"adapt.target_loss = {kind!r} is not valid; allowed: entropy, maxsquare, iw_maxsquare")

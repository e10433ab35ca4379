"""One optimisation step of each training mode. Each returns detached scalar loss tensors (no host sync).

Source-only (and the oracle, whose "source" is the target train split): SGD on
``CE(main) + λ_seg·CE(aux)``.

Adaptation (AdaptSegNet, Tsai et al. CVPR 2018, https://arxiv.org/abs/1802.10349), per iteration:

1. G step, discriminators frozen: the source CE as above (backward at once, which frees the source graph before
   the target forward, as AdaptSegNet does), then on the target batch
   ``Σ_levels λ_adv,level · GAN(D_level(softmax(upsampled target logits)), SOURCE_LABEL)`` (fool each D into
   calling target maps "source") plus ``λ_target · target_loss`` when one is selected;
2. D step, on detached softmax maps: each D_level gets its own outputs on the source maps with label 0 and on the
   target maps with label 1 (the seed used 0 for both, defect S1, and fed D1's output to D2's loss, S2), each term
   halved;
3. one optimiser step for G and for every D.

``adapt.mode = "target_loss"`` skips the discriminators and keeps the source CE + ``λ_target · target_loss``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from trainables.losses import SOURCE_LABEL, TARGET_LABEL, multi_level_seg_loss, target_loss, upsample

if TYPE_CHECKING:
    from trainables.engine import Trainer

__all__ = ["source_only_step", "adaptation_step", "OUTPUT_KEY"]

OUTPUT_KEY = {"main": "out", "aux": "aux"}  # output level → key of the model's output dict


def _forward(trainer: Trainer, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    image = batch["image"].to(trainer.device, non_blocking=True)
    if trainer.cfg.runtime.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with trainer.autocast():
        outputs = trainer.forward_model(image)
    return outputs, image


def _source_loss(trainer: Trainer, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Backpropagates the source CE; returns (losses, source outputs)."""
    outputs, _ = _forward(trainer, batch)
    label = batch["label"].to(trainer.device, non_blocking=True)
    losses = multi_level_seg_loss(outputs, label, lambda_seg=trainer.cfg.optim.lambda_seg)
    total = losses["loss_seg"]
    if "loss_seg_aux" in losses:
        total = total + trainer.cfg.optim.lambda_seg * losses["loss_seg_aux"]
    total.backward()
    return losses, outputs


def source_only_step(trainer: Trainer, source: dict) -> dict[str, torch.Tensor]:
    trainer.optimizer.zero_grad(set_to_none=True)
    losses, _ = _source_loss(trainer, source)
    trainer.optimizer.step()
    return {k: v.detach() for k, v in losses.items()}


def _set_requires_grad(modules, flag: bool) -> None:
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(flag)


def adaptation_step(trainer: Trainer, source: dict, target: dict) -> dict[str, torch.Tensor]:
    adapt = trainer.cfg.adapt
    discriminators = trainer.discriminators  # empty unless adapt.mode == "adversarial"
    lambda_adv = {"main": adapt.lambda_adv_main, "aux": adapt.lambda_adv_aux}
    trainer.optimizer.zero_grad(set_to_none=True)
    for optimizer in trainer.d_optimizers.values():
        optimizer.zero_grad(set_to_none=True)

    # 1. generator: source CE, then fool the (frozen) discriminators with the target maps, plus the target loss
    _set_requires_grad(discriminators.values(), False)
    losses, source_out = _source_loss(trainer, source)
    target_out, target_image = _forward(trainer, target)
    target_size = tuple(target_image.shape[-2:])
    target_logits = {level: upsample(target_out[OUTPUT_KEY[level]], target_size) for level in discriminators}
    if adapt.target_loss != "none" and "main" not in target_logits:
        target_logits["main"] = upsample(target_out["out"], target_size)
    target_prob = {level: F.softmax(target_logits[level], dim=1) for level in discriminators}
    generator_loss = torch.zeros((), device=trainer.device)
    for level, discriminator in discriminators.items():
        with trainer.autocast():
            d_out = discriminator(target_prob[level])
        losses[f"loss_adv_{level}"] = trainer.gan_loss(d_out, SOURCE_LABEL)
        generator_loss = generator_loss + lambda_adv[level] * losses[f"loss_adv_{level}"]
    if adapt.target_loss != "none":
        losses["loss_target"] = target_loss(adapt.target_loss, target_logits["main"], iw_ratio=adapt.iw_ratio)
        generator_loss = generator_loss + adapt.lambda_target * losses["loss_target"]
    if generator_loss.requires_grad:
        generator_loss.backward()

    # 2. discriminators on detached maps: source → SOURCE_LABEL (0), target → TARGET_LABEL (1)
    _set_requires_grad(discriminators.values(), True)
    source_size = tuple(source["label"].shape[-2:])
    for level, discriminator in discriminators.items():
        source_prob = F.softmax(upsample(source_out[OUTPUT_KEY[level]].detach(), source_size), dim=1)
        with trainer.autocast():
            d_source = discriminator(source_prob)
        loss_source = trainer.gan_loss(d_source, SOURCE_LABEL) / 2
        loss_source.backward()
        with trainer.autocast():
            d_target = discriminator(target_prob[level].detach())
        loss_target = trainer.gan_loss(d_target, TARGET_LABEL) / 2
        loss_target.backward()
        losses[f"loss_d_{level}"] = loss_source.detach() + loss_target.detach()

    # 3. one step for the segmentation network and for every discriminator
    trainer.optimizer.step()
    for optimizer in trainer.d_optimizers.values():
        optimizer.step()
    return {k: v.detach() for k, v in losses.items()}

"""Each weight of the training objective acts on the gradient exactly as written: the segmentation network's
gradient of one step is affine in λ (g(λ) = g(0) + λ·Δ, Δ ≠ 0). A step that ignores a λ, drops its term or applies it
twice fails here (issue 11: the adversarial step ignoring λ_adv passed every test)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from trainables.engine import Trainer
from trainables.steps import adaptation_step, source_only_step

# (section, field, mode, extra overrides): one row per weight of the objective
WEIGHTS = [
    ("adapt", "lambda_adv_main", "adversarial", {}),
    ("adapt", "lambda_adv_aux", "adversarial", {}),
    ("adapt", "lambda_target", "adversarial", {"adapt__target_loss": "maxsquare"}),
    ("adapt", "lambda_target", "target_loss", {"adapt__target_loss": "entropy"}),
    ("optim", "lambda_seg", "source_only", {}),
    ("optim", "lambda_seg", "adversarial", {}),
]


def _gradient(trainer: Trainer, batches, section: str, name: str, value: float) -> torch.Tensor:
    """The segmentation network's gradient of one step with ``section.name = value`` (no parameter changes)."""
    part = dataclasses.replace(getattr(trainer.cfg, section), **{name: value})
    trainer.cfg = dataclasses.replace(trainer.cfg, **{section: part})
    if trainer.cfg.adapt.mode == "source_only":
        source_only_step(trainer, batches[0])
    else:
        adaptation_step(trainer, *batches)
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                      for p in trainer.model.parameters()])


@pytest.mark.parametrize("section, name, mode, extra", WEIGHTS, ids=lambda v: v if isinstance(v, str) else "")
def test_every_loss_weight_scales_its_term_of_the_gradient(make_config, section, name, mode, extra):
    trainer = Trainer(make_config(mode=mode, **extra))
    trainer.model.eval()  # batch norm statistics frozen: the same batch gives the same forward every time
    for module in (trainer.optimizer, *trainer.d_optimizers.values()):
        module.step = lambda *args, **kwargs: None  # gradients only: the weights stay as they are
    batches = [next(trainer.streams["source"])]
    if "target" in trainer.streams:
        batches.append(next(trainer.streams["target"]))
    g0 = _gradient(trainer, batches, section, name, 0.0)
    g1 = _gradient(trainer, batches, section, name, 0.5)
    g2 = _gradient(trainer, batches, section, name, 1.0)
    assert torch.equal(_gradient(trainer, batches, section, name, 0.5), g1)  # deterministic
    delta = g1 - g0
    assert delta.abs().max() > 1e-6 * max(g0.abs().max().item(), 1e-12), f"{section}.{name} has no effect"
    torch.testing.assert_close(g2 - g0, 2 * delta, rtol=1e-3, atol=1e-6 * g2.abs().max().item())


def test_adversarial_step_gradients_equal_a_hand_written_objective(make_config):
    """The step's gradients against the objective written out here from the paper's formulas (AdaptSegNet):
    G: CE(source) + λ_adv·BCE(D(softmax(up(target))), source) + λ_target·MaxSquare(up(target));
    D: ½·BCE(D(softmax(up(source)).detach()), source) + ½·BCE(D(target map.detach()), target).
    Kills sign flips, divisions and the D terms' halves that the affine test cannot see."""
    from trainables.losses import SOURCE_LABEL, TARGET_LABEL, multi_level_seg_loss, target_loss, upsample

    cfg = make_config(mode="adversarial", multi_level=False, adapt__lambda_adv_main=0.7,
                      adapt__target_loss="maxsquare", adapt__lambda_target=0.3)
    trainer = Trainer(cfg)
    trainer.model.eval()
    for module in (trainer.optimizer, *trainer.d_optimizers.values()):
        module.step = lambda *args, **kwargs: None
    source, target = next(trainer.streams["source"]), next(trainer.streams["target"])
    adaptation_step(trainer, source, target)
    model_params = [p for p in trainer.model.parameters() if p.requires_grad]
    discriminator = trainer.discriminators["main"]
    d_params = list(discriminator.parameters())
    step_model = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model_params]
    step_d = [p.grad.clone() for p in d_params]

    source_out = trainer.forward_model(source["image"])
    seg = multi_level_seg_loss(source_out, source["label"], lambda_seg=cfg.optim.lambda_seg)["loss_seg"]
    target_up = upsample(trainer.forward_model(target["image"])["out"], tuple(target["image"].shape[-2:]))
    adv = trainer.gan_loss(discriminator(torch.softmax(target_up, dim=1)), SOURCE_LABEL)
    objective = seg + 0.7 * adv + 0.3 * target_loss("maxsquare", target_up)
    expected_model = torch.autograd.grad(objective, model_params, allow_unused=True)
    for got, want in zip(step_model, expected_model):
        torch.testing.assert_close(got, torch.zeros_like(got) if want is None else want, rtol=1e-4, atol=1e-7)

    source_map = torch.softmax(upsample(source_out["out"].detach(), tuple(source["label"].shape[-2:])), dim=1)
    d_objective = (trainer.gan_loss(discriminator(source_map), SOURCE_LABEL) / 2
                   + trainer.gan_loss(discriminator(torch.softmax(target_up.detach(), dim=1)), TARGET_LABEL) / 2)
    for got, want in zip(step_d, torch.autograd.grad(d_objective, d_params)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)

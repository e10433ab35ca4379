"""Population-based training restarts (issue 22): a member continues from a donor's full-state checkpoint.

The donor's checkpoint holds G, D, both optimizers, the data streams and the RNGs; a member restarted from it
with the same hyperparameters must continue bit-exactly as the donor would have, and with mutated ones (λ_adv,
learning rates) the new values must be in effect from the next iteration, the poly schedule continuing from the
donor's iteration on the new base rates. Anything else that differs from the donor's config is refused.
"""
from __future__ import annotations

import pytest
import torch

from trainables.checkpoint import CheckpointError
from trainables.engine import Trainer
from trainables.reporters import Reporter
from trainables.schedules import poly_lr

MUTABLE = ("adapt.lambda_adv_main", "adapt.lambda_adv_aux", "optim.lr", "adapt.lr_d")


class Log(Reporter):
    def __init__(self):
        self.lines: list[tuple[int, dict[str, float]]] = []

    def on_log(self, iteration, scalars):
        self.lines.append((iteration, {k: v for k, v in scalars.items() if not k.startswith("time/")}))


def _donor(make_config, tmp_path, *, until=3):
    """A donor run of 6 iterations whose state at ``until`` is saved (what PBT exploits)."""
    cfg = make_config(name="donor", optim__iter_stop=6, optim__iter_max=12)
    log = Log()
    donor = Trainer(cfg, reporters=[log])
    donor.fit(until_iteration=until)
    donor.save_checkpoint(tmp_path / "donor.pt")
    donor.fit()
    return cfg, donor, log


def _member(cfg, tmp_path, **changes):
    """A member restarted from the donor's checkpoint under its own name with ``changes`` (dotted keys)."""
    from dataclasses import replace

    for key, value in changes.items():
        section, attr = key.split(".")
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{attr: value})})
    log = Log()
    member = Trainer(replace(cfg, name="member"), reporters=[log])
    member.load_checkpoint(tmp_path / "donor.pt", allow_changes=MUTABLE)
    return member, log


def test_clone_with_the_same_hyperparameters_continues_bit_exactly(make_config, tmp_path):
    cfg, donor, donor_log = _donor(make_config, tmp_path)
    torch.manual_seed(12345)  # the member's process RNGs are whatever they are: the checkpoint restores them
    member, member_log = _member(cfg, tmp_path)
    assert member.iteration == 3
    member.fit()
    assert [i for i, _ in member_log.lines] == [4, 5, 6]
    assert member_log.lines == donor_log.lines[3:]  # losses, rates, λ: exact float equality
    for ours, theirs in [(member.model, donor.model),
                         *[(member.discriminators[k], donor.discriminators[k]) for k in donor.discriminators]]:
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), name


def test_a_new_lambda_takes_effect_from_the_next_iteration(make_config, tmp_path):
    cfg, donor, donor_log = _donor(make_config, tmp_path)
    assert {v["hparams/lambda_adv_main"] for _, v in donor_log.lines} == {cfg.adapt.lambda_adv_main}
    new = cfg.adapt.lambda_adv_main * 50
    member, log = _member(cfg, tmp_path, **{"adapt.lambda_adv_main": new})
    member.fit()
    assert [v["hparams/lambda_adv_main"] for _, v in log.lines] == [new] * 3
    first, theirs = log.lines[0][1], donor_log.lines[3][1]
    # iteration 4 starts from the donor's state: the adversarial loss G sees is the donor's own ...
    assert first["train/loss_adv_main"] == theirs["train/loss_adv_main"]
    assert first["train/loss_seg"] == theirs["train/loss_seg"]
    # ... but G's update used the new weight, so the trajectories part from there on
    assert log.lines[1][1]["train/loss_seg"] != donor_log.lines[4][1]["train/loss_seg"]
    assert any(not torch.equal(a, b) for a, b in zip(member.model.parameters(), donor.model.parameters()))


def test_new_learning_rates_continue_the_poly_schedule_from_the_donor_iteration(make_config, tmp_path):
    cfg, donor, donor_log = _donor(make_config, tmp_path)
    lr, lr_d = cfg.optim.lr * 3, cfg.adapt.lr_d / 4
    member, log = _member(cfg, tmp_path, **{"optim.lr": lr, "adapt.lr_d": lr_d})
    member.fit()
    power, iter_max = cfg.optim.poly_power, cfg.optim.iter_max
    for iteration, scalars in log.lines:  # logged after the step: the rate of step `iteration` - 1 (0-based)
        assert scalars["lr/d_main"] == pytest.approx(poly_lr(lr_d, iteration - 1, iter_max, power), rel=1e-12)
        backbone = [v for k, v in scalars.items() if k.startswith("lr/") and not k.startswith("lr/d_")]
        assert min(backbone) == pytest.approx(poly_lr(lr, iteration - 1, iter_max, power), rel=1e-12)
    donor_rates = dict(donor_log.lines[3][1])
    assert donor_rates["lr/d_main"] == pytest.approx(poly_lr(cfg.adapt.lr_d, 3, iter_max, power), rel=1e-12)


def test_only_the_mutated_keys_may_differ(make_config, tmp_path):
    cfg, _, _ = _donor(make_config, tmp_path)
    from dataclasses import replace

    other = replace(cfg, name="member", optim=replace(cfg.optim, momentum=0.5))
    with pytest.raises(CheckpointError, match=r"optim\.momentum: 0\.9 -> 0\.5"):
        Trainer(other).load_checkpoint(tmp_path / "donor.pt", allow_changes=MUTABLE)
    mutated = replace(cfg, name="member", adapt=replace(cfg.adapt, lambda_adv_main=0.5))
    with pytest.raises(CheckpointError, match=r"adapt\.lambda_adv_main"):  # a plain resume allows no mutation
        Trainer(mutated).load_checkpoint(tmp_path / "donor.pt")
    Trainer(mutated).load_checkpoint(tmp_path / "donor.pt", allow_changes=("adapt.lambda_adv_main",))

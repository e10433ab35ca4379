"""The engine's fast paths (issue 7) compute what the plain implementations compute."""
from __future__ import annotations

import pytest
import torch

from trainables.engine import make_optimizer

FUSED_ON_CPU = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 4)


def _params_with_grads(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in ((7, 5), (5,), (3, 4, 2))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    return params


@pytest.mark.skipif(not FUSED_ON_CPU, reason="fused SGD/Adam on CPU needs torch >= 2.4")
@pytest.mark.parametrize("cls, kwargs", [
    (torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=5e-4)),
    (torch.optim.Adam, dict(lr=1e-2, betas=(0.9, 0.99))),
])
def test_fused_optimizer_matches_the_loop_implementation(cls, kwargs):
    fused_params, loop_params = _params_with_grads(0), _params_with_grads(0)
    fused = make_optimizer(cls, iter(fused_params), **kwargs)  # a generator, as model.parameters()
    loop = cls(loop_params, foreach=False, **kwargs)
    assert fused.defaults["fused"] is True and len(fused.param_groups[0]["params"]) == 3
    for step in range(3):
        for a, b in zip(fused_params, loop_params):
            g = torch.randn(a.shape, generator=torch.Generator().manual_seed(10 + step))
            a.grad, b.grad = g.clone(), g.clone()
        fused.step()
        loop.step()
    moved = sum((a - b0).abs().sum() for a, b0 in zip(fused_params, _params_with_grads(0)))
    assert moved > 1e-3  # the parameters did change
    for a, b in zip(fused_params, loop_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_make_optimizer_falls_back_when_fused_is_refused():
    class NoFusedSGD(torch.optim.SGD):
        def __init__(self, params, fused=None, **kwargs):
            if fused:
                raise RuntimeError("fused=True requires ... supported devices")
            super().__init__(params, **kwargs)

    params = _params_with_grads(1)
    optimizer = make_optimizer(NoFusedSGD, (p for p in params), lr=0.1)
    assert not optimizer.defaults.get("fused") and len(optimizer.param_groups[0]["params"]) == 3
    before = params[0].detach().clone()
    optimizer.step()
    torch.testing.assert_close(params[0].detach(), before - 0.1 * params[0].grad)


@pytest.mark.skipif(not FUSED_ON_CPU, reason="fused SGD/Adam on CPU needs torch >= 2.4")
def test_trainer_builds_fused_optimizers(tiny_benchmark):
    from benchmarks.step import SETTINGS, project_config
    from trainables.engine import Trainer

    setting = dict(SETTINGS["demo"], source_size=(64, 32), target_size=(64, 32), ndf=4)
    cfg = project_config(setting, data_root=tiny_benchmark, batch=1, device=torch.device("cpu"), precision="fp32",
                         channels_last=False, compile=False)
    trainer = Trainer(cfg, None)
    try:
        assert trainer.optimizer.defaults["fused"] is True
        assert {level: o.defaults["fused"] for level, o in trainer.d_optimizers.items()} == {"main": True, "aux": True}
    finally:
        trainer.close()


def test_adversarial_step_reads_no_tensor_values_between_log_intervals(tiny_benchmark):
    """The engine's adversarial step never reads a tensor value on the host (a device sync on CUDA) except at log
    intervals; the published-style reference, checked the same way, reads each logged loss every step."""
    from benchmarks.step import SETTINGS, build_project, build_reference
    from benchmarks.sync_check import check_syncs

    cpu = torch.device("cpu")
    setting = dict(SETTINGS["demo"], source_size=(64, 32), target_size=(64, 32), ndf=4)
    run, trainer = build_project(setting, data_root=tiny_benchmark, batch=2, device=cpu, precision="fp32",
                                 channels_last=False, compile=False)
    try:
        run()
        assert trainer.cfg.runtime.log_interval > 4
        assert check_syncs(run, device=cpu, steps=3)["syncs"] == 0
        assert trainer.iteration == 4 and set(trainer._pending) >= {"loss_seg", "loss_adv_main", "loss_d_aux"}
    finally:
        trainer.close()
    reference = check_syncs(build_reference(setting, batch=1, device=cpu), device=cpu, steps=1)
    assert reference["syncs"] >= 8 and "item" in reference["reads"]

"""run/lineage.jsonl written by the engine's reporter: a member's hyperparameters over iterations and whose state
it cloned when, read back as one trajectory (issue 22), on the CPU without Ray."""
from __future__ import annotations

from dataclasses import replace

from trainables.engine import Trainer
import pytest
import torch

from trainables.config import ConfigError
from trainables.lineage import LineageReporter, ScheduleReporter, load_schedule, member_history, read_lineage

KEYS = ("adapt.lambda_adv_main", "optim.lr")


def _run(cfg, run_dir, *, name, checkpoint=None, origin=None, until=None, save=None):
    reporter = LineageReporter(run_dir, keys=KEYS, metric="val/mIoU16", name=name)
    trainer = Trainer(replace(cfg, name=name), reporters=[reporter])
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint, allow_changes=KEYS)
        reporter.origin = (origin, trainer.iteration)
    trainer.fit(until_iteration=until)
    if save is not None:
        trainer.save_checkpoint(save)
    return trainer


def test_lineage_records_the_clone_and_the_schedule(make_config, tmp_path):
    cfg = make_config(optim__iter_stop=6, optim__iter_max=12, eval__interval=2)
    study = tmp_path / "study"  # <study>/<trial>/run as in a Ray study
    donor = _run(cfg, study / "A" / "run", name="A", until=4, save=tmp_path / "A4.pt")
    donor.fit()
    _run(cfg, study / "B" / "run", name="B", until=2)
    lam = cfg.adapt.lambda_adv_main * 4
    clone_cfg = replace(cfg, adapt=replace(cfg.adapt, lambda_adv_main=lam), optim=replace(cfg.optim, lr=cfg.optim.lr / 3))
    member = _run(clone_cfg, study / "B" / "run", name="B", checkpoint=tmp_path / "A4.pt", origin="A")
    records = read_lineage(study / "B" / "run")
    assert [(r["event"], r["iteration"]) for r in records] == [("start", 0), ("eval", 2), ("clone", 4), ("eval", 6)]
    clone = records[2]
    assert clone["donor"] == "A" and clone["donor_iteration"] == 4
    assert clone["hparams"] == {"adapt.lambda_adv_main": lam, "optim.lr": cfg.optim.lr / 3}
    assert records[3]["hparams"]["adapt.lambda_adv_main"] == lam
    history = member_history("B", lambda name: study / name / "run")
    assert [(r["run"], r["iteration"], r["hparams"]["adapt.lambda_adv_main"]) for r in history] == [
        ("A", 2, cfg.adapt.lambda_adv_main), ("A", 4, cfg.adapt.lambda_adv_main), ("B", 6, lam)]
    # a plain resume of a member from its own checkpoint is a "resume", not a clone
    _run(cfg, study / "C" / "run", name="C", until=2, save=tmp_path / "C2.pt")
    _run(cfg, study / "C" / "run", name="C", checkpoint=tmp_path / "C2.pt", origin="C")
    assert [r["event"] for r in read_lineage(study / "C" / "run")] == ["start", "eval", "resume", "eval", "eval"]

    # replay: the member's schedule rerun as ONE run from the same start reaches the member's state bit-exactly
    # (same seed and start for every member, and a clone continues its donor exactly), unlike its donor
    segments = load_schedule(study / "B" / "run" / "lineage.jsonl")
    assert segments == [(0, records[0]["hparams"] | {"adapt.lambda_adv_main": cfg.adapt.lambda_adv_main,
                                                     "optim.lr": cfg.optim.lr}), (4, clone["hparams"])]
    replay = Trainer(replace(cfg, name="replay"), reporters=[ScheduleReporter(segments)])
    replay.fit()
    for ours, theirs, other in zip(replay.model.parameters(), member.model.parameters(), donor.model.parameters()):
        assert torch.equal(ours, theirs)
    assert any(not torch.equal(a, b) for a, b in zip(replay.model.parameters(), donor.model.parameters()))
    assert replay.cfg.adapt.lambda_adv_main == lam and replay.cfg.optim.lr == cfg.optim.lr / 3
    with pytest.raises(ConfigError, match="multiple of eval.interval"):  # values change only at evaluations
        Trainer(replace(cfg, name="odd"), reporters=[ScheduleReporter([(0, {}), (3, {})])]).fit()

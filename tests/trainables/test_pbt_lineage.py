"""run/lineage.jsonl written by the engine's reporter: a member's hyperparameters over iterations and whose state
it cloned when, read back as one trajectory (issue 22), on the CPU without Ray."""
from __future__ import annotations

from dataclasses import replace

from trainables.engine import Trainer
from trainables.lineage import LineageReporter, member_history, read_lineage

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
    _run(cfg, tmp_path / "A", name="A", until=4, save=tmp_path / "A4.pt")
    _run(cfg, tmp_path / "B", name="B", until=2)
    lam = cfg.adapt.lambda_adv_main * 4
    clone_cfg = replace(cfg, adapt=replace(cfg.adapt, lambda_adv_main=lam))
    _run(clone_cfg, tmp_path / "B", name="B", checkpoint=tmp_path / "A4.pt", origin="A")
    records = read_lineage(tmp_path / "B")
    assert [(r["event"], r["iteration"]) for r in records] == [("start", 0), ("eval", 2), ("clone", 4), ("eval", 6)]
    clone = records[2]
    assert clone["donor"] == "A" and clone["donor_iteration"] == 4
    assert clone["hparams"] == {"adapt.lambda_adv_main": lam, "optim.lr": cfg.optim.lr}
    assert records[3]["hparams"]["adapt.lambda_adv_main"] == lam
    history = member_history("B", lambda name: tmp_path / name)
    assert [(r["run"], r["iteration"], r["hparams"]["adapt.lambda_adv_main"]) for r in history] == [
        ("A", 2, cfg.adapt.lambda_adv_main), ("A", 4, cfg.adapt.lambda_adv_main), ("B", 6, lam)]
    # a plain resume of a member from its own checkpoint is a "resume", not a clone
    _run(cfg, tmp_path / "C", name="C", until=2, save=tmp_path / "C2.pt")
    _run(cfg, tmp_path / "C", name="C", checkpoint=tmp_path / "C2.pt", origin="C")
    assert [r["event"] for r in read_lineage(tmp_path / "C")] == ["start", "eval", "resume", "eval", "eval"]

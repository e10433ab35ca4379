"""Checkpoints: bit-exact resume, file format, init from a source-only model, run directories."""
from __future__ import annotations

import json
import math

import pytest
import torch

import models
from trainables.checkpoint import CheckpointError
from trainables.config import ConfigError
from trainables.engine import Trainer, run_training
from trainables.reporters import Reporter


class LossLog(Reporter):
    def __init__(self):
        self.values = []

    def on_log(self, iteration, scalars):
        self.values.append((iteration, {k: v for k, v in scalars.items() if k.startswith("train/")}))


def test_resume_in_a_fresh_trainer_gives_identical_losses(make_config, tmp_path):
    cfg = make_config(optim__iter_stop=6, optim__batch_size=2, data__hflip=True, data__blur=True)
    straight = LossLog()
    reference = Trainer(cfg, reporters=[straight])
    reference.fit()

    first_half = LossLog()
    first = Trainer(cfg, reporters=[first_half])
    first.fit(until_iteration=3)
    first.save_checkpoint(tmp_path / "state.pt")
    torch.manual_seed(999)  # whatever happens to the global RNGs in between must not matter
    second_half = LossLog()
    resumed = Trainer(cfg, reporters=[second_half])
    resumed.load_checkpoint(tmp_path / "state.pt")
    assert resumed.iteration == 3
    resumed.fit()
    assert [i for i, _ in straight.values] == list(range(1, 7))
    assert first_half.values + second_half.values == straight.values  # exact float equality
    assert {"train/loss_adv_main", "train/loss_d_aux"} <= set(straight.values[-1][1])
    # and the weights themselves (the tiny runs' val metrics are degenerate and cannot tell runs apart)
    for name, module in [("model", None), *[(f"D_{level}", level) for level in reference.discriminators]]:
        ours = (resumed.model if module is None else resumed.discriminators[module]).state_dict()
        theirs = (reference.model if module is None else reference.discriminators[module]).state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), (name, key)
    # the comparison can fail: three more iterations do change the weights
    assert any(not torch.equal(a, b) for a, b in zip(first.model.parameters(), reference.model.parameters()))


def test_checkpoint_loads_weights_only_and_into_load_weights(make_config, tmp_path):
    result = run_training(make_config(optim__iter_stop=2, eval__interval=1), tmp_path / "run")
    assert result["status"] == "completed" and result["best_iteration"] in (1, 2)
    last = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert {"model", "meta", "discriminators", "optimizers", "iteration", "rng", "streams", "best"} <= set(last)
    assert set(last["discriminators"]) == {"main", "aux"} and last["iteration"] == 2
    assert last["meta"]["model"] == "deeplabv2_tiny" and last["meta"]["num_classes"] == 16
    assert last["meta"]["config"]["optim"]["iter_stop"] == 2 and last["meta"]["dastudy_version"]
    best = torch.load(tmp_path / "run/checkpoints/best.pt", weights_only=True)
    fresh = models.create_model("deeplabv2_tiny", num_classes=16)
    summary = models.load_weights(fresh, tmp_path / "run/checkpoints/best.pt")
    assert summary.format == "dastudy" and not summary.missing
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in best["model"].items())
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.toml", "provenance.json", "metrics.jsonl", "result.json", "checkpoints"} <= files
    provenance = json.loads((tmp_path / "run/provenance.json").read_text())
    assert provenance["seed"] == 7 and provenance["versions"]["torch"] == torch.__version__
    lines = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["iteration"]) for r in lines] == [("train", 1), ("eval", 1), ("train", 2), ("eval", 2)]


def test_run_training_resumes_its_run_directory(make_config, tmp_path):
    cfg = make_config(optim__iter_stop=4, eval__interval=2)
    straight = run_training(cfg, tmp_path / "a")
    run_training(make_config(optim__iter_stop=2, eval__interval=2), tmp_path / "b")
    resumed = run_training(cfg, tmp_path / "b", resume=True)  # iter_stop may grow on resume
    assert resumed["status"] == "completed" and resumed["iterations"] == 4
    assert _same_metrics(resumed["metrics"], straight["metrics"])
    provenance = json.loads((tmp_path / "b/provenance.json").read_text())
    assert [r["iteration"] for r in provenance["resumes"]] == [2]
    with pytest.raises(CheckpointError, match="different configuration.*optim.lr"):
        run_training(make_config(optim__iter_stop=6, optim__lr=0.5), tmp_path / "b", resume=True)


def _same_metrics(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def _save_model_checkpoint(path, name, num_classes, multi_level=True):
    kwargs = {"multi_level": multi_level} if models.model_info(name).multi_level_capable else {}
    model = models.create_model(name, num_classes=num_classes, **kwargs)
    torch.save({"model": model.state_dict(), "meta": models.checkpoint_meta(model)}, path)
    return path


def test_init_checkpoint_is_loaded_and_logged(make_config, tmp_path):
    path = _save_model_checkpoint(tmp_path / "source.pt", "deeplabv2_tiny", 16)
    trainer = Trainer(make_config(model__init_checkpoint=str(path)))
    expected = torch.load(path, weights_only=True)["model"]
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in expected.items())
    assert str(path) in str(trainer.init_summary) and str(path) in trainer.describe()


@pytest.mark.parametrize("name, num_classes, multi_level", [
    ("deeplabv2_tiny", 19, True),  # other class count
    ("deeplabv3plus_tiny", 16, False),  # other model
    ("deeplabv2_tiny", 16, False),  # single-level source model into a multi-level run
])
def test_init_checkpoint_that_does_not_fit_fails_before_training(make_config, tmp_path, monkeypatch, name,
                                                                 num_classes, multi_level):
    path = _save_model_checkpoint(tmp_path / "other.pt", name, num_classes, multi_level)
    import trainables.engine as engine

    monkeypatch.setattr(engine, "adaptation_step", lambda *a: pytest.fail("training started"))
    with pytest.raises(CheckpointError, match="init_checkpoint"):
        run_training(make_config(model__init_checkpoint=str(path)), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_missing_init_checkpoint_is_a_config_error(make_config, tmp_path):
    with pytest.raises(ConfigError, match="model.init_checkpoint.*nowhere.pt"):
        Trainer(make_config(model__init_checkpoint=str(tmp_path / "nowhere.pt")))


def test_existing_run_directory_is_refused_and_overwrite_keeps_foreign_files(make_config, tmp_path):
    cfg = make_config(mode="source_only", optim__iter_stop=1)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_training(cfg, foreign)
    with pytest.raises(FileExistsError, match="not a dastudy run directory"):
        run_training(cfg, foreign, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"

    run = tmp_path / "run"
    run_training(cfg, run)
    (run / "my_notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(cfg, run)
    result = run_training(cfg, run, overwrite=True)
    assert result["status"] == "completed" and (run / "my_notes.txt").read_text() == "keep me"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # the old run's lines are gone


def test_overwrite_removes_only_what_the_run_wrote(make_config, tmp_path):
    """--overwrite used to delete every *.pt in checkpoints/ and all of tb/ (issue 11): now the run's manifest."""
    from trainables.rundir import MANIFEST, read_manifest
    from trainables.tensorboard import TensorBoardReporter

    cfg = make_config(mode="source_only", optim__iter_stop=2, eval__interval=1)
    run = tmp_path / "run"
    run_training(cfg, run, reporters=[TensorBoardReporter(run / "tb")])
    first = read_manifest(run)
    old_events = [f for f in first if f.startswith("tb/")]
    assert old_events and {"config.toml", "provenance.json", "metrics.jsonl", "result.json", "checkpoints/last.pt",
                           "checkpoints/best.pt"} <= set(first)
    assert all((run / f).is_file() for f in first)
    # the user's files, written after the run, some with names like ours
    (run / "checkpoints" / "best_keep_for_paper.pt").write_bytes((run / "checkpoints" / "best.pt").read_bytes())
    (run / "tb" / "notes.txt").write_text("mine")
    (run / "tb" / "other").mkdir()
    (run / "tb" / "other" / "events.out.tfevents.1.host.1.0").write_bytes(b"another program's events")
    (run / "my_notes.txt").write_text("keep me")

    run_training(cfg, run, overwrite=True)  # no TensorBoard this time: the old event files must be gone
    assert (run / "checkpoints" / "best_keep_for_paper.pt").is_file()
    assert (run / "tb" / "notes.txt").read_text() == "mine" and (run / "my_notes.txt").read_text() == "keep me"
    assert (run / "tb" / "other" / "events.out.tfevents.1.host.1.0").read_bytes() == b"another program's events"
    assert not [f for f in old_events if (run / f).exists()]
    second = read_manifest(run)
    assert not [f for f in second if f.startswith("tb/")] and "checkpoints/best_keep_for_paper.pt" not in second
    assert (run / MANIFEST).is_file()


def test_overwrite_never_follows_a_manifest_outside_the_run(make_config, tmp_path):
    from trainables.rundir import MANIFEST

    cfg = make_config(mode="source_only", optim__iter_stop=1)
    run = tmp_path / "run"
    run_training(cfg, run)
    (tmp_path / "outside.txt").write_text("precious")
    (run / MANIFEST).write_text(json.dumps({"files": ["config.toml", "../outside.txt", str(tmp_path / "outside.txt")]}))
    run_training(cfg, run, overwrite=True)
    assert (tmp_path / "outside.txt").read_text() == "precious"


def test_resume_into_a_folder_that_is_not_a_run_is_refused_untouched(make_config, tmp_path):
    cfg = make_config(mode="source_only", optim__iter_stop=2)
    run_training(make_config(mode="source_only", optim__iter_stop=1), tmp_path / "run")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"user": 1}\n')
    (folder / "result.json").write_text('{"mine": true}')
    with pytest.raises(FileExistsError, match="not a dastudy run directory.*refusing to resume"):
        run_training(cfg, folder, resume=tmp_path / "run" / "checkpoints" / "last.pt")
    assert (folder / "metrics.jsonl").read_text() == '{"user": 1}\n'
    assert (folder / "result.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.jsonl", "result.json"]
    # an empty folder (or a new one) is a fine place to continue a run from a checkpoint
    result = run_training(cfg, tmp_path / "fresh", resume=tmp_path / "run" / "checkpoints" / "last.pt")
    assert result["status"] == "completed" and result["iterations"] == 2


def test_resume_needs_a_full_checkpoint(make_config, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        run_training(make_config(), tmp_path / "missing", resume=True)
    run_training(make_config(mode="source_only", optim__iter_stop=1), tmp_path / "run")
    with pytest.raises(CheckpointError, match="model weights only"):
        Trainer(make_config(mode="source_only", optim__iter_stop=2)).load_checkpoint(
            tmp_path / "run/checkpoints/best.pt")

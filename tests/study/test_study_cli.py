"""`dastudy study ...` refuses bad studies before Ray starts any trial, and never touches an existing study."""
from __future__ import annotations

import pytest

from study.cli import main
from study.commands.demo import demo_overrides, free_name
from study_helpers import TEST_RAY_ENV, study_table, write_study_file

ray = pytest.importorskip("ray")


@pytest.fixture
def study_file(tmp_path, tiny_benchmark, monkeypatch):
    for key, value in TEST_RAY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return write_study_file(tmp_path / "s.toml", study_table(tiny_benchmark, name="cli"))


@pytest.mark.parametrize("overrides, message", [
    (["resources.gpu=1.5"], "whole number of GPUs"),
    (["search.params.lamda_low=0.001"], "unknown parameter of space 'lambda_lr'"),
    (["train.data.source.root=\"/nonexistent/synth/source\""], "train.data.source.root = '/nonexistent"),
])
def test_bad_study_is_refused_before_ray_starts(study_file, tmp_path, capsys, overrides, message):
    assert not ray.is_initialized()
    code = main(["study", "run", str(study_file), "--storage", str(tmp_path / "studies"), *overrides])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()
    assert not (tmp_path / "studies" / "cli").exists()


def test_existing_study_directory_is_never_overwritten(study_file, tmp_path, capsys):
    home = tmp_path / "studies" / "cli"
    home.mkdir(parents=True)
    (home / "keep.txt").write_text("mine")
    assert main(["study", "run", str(study_file), "--storage", str(tmp_path / "studies")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "dastudy study resume cli" in err
    assert (home / "keep.txt").read_text() == "mine" and sorted(p.name for p in home.iterdir()) == ["keep.txt"]
    assert not ray.is_initialized()


@pytest.mark.slow
def test_gpu_request_on_a_cpu_only_cluster_fails_fast(study_file, tmp_path, capsys):
    # A local Ray without GPUs: the trial would stay PENDING forever; the study stops before any trial starts.
    code = main(["study", "run", str(study_file), "--storage", str(tmp_path / "studies"), "--num-cpus", "1",
                 "resources.gpu=0.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "resources.gpu = 0.5 but the cluster has no GPU" in err
    assert not (tmp_path / "studies" / "cli").exists()
    assert not ray.is_initialized()  # our local Ray was shut down again


def test_status_of_an_unknown_study_names_the_storage(tmp_path, capsys):
    assert main(["study", "status", "nope", "--storage", str(tmp_path)]) == 2
    assert f"no study 'nope' in {tmp_path}" in capsys.readouterr().err


def test_demo_names_and_overrides(tmp_path):
    assert free_name("demo", tmp_path) == "demo"
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo-2").mkdir()
    assert free_name("demo", tmp_path) == "demo-3"
    # --data reaches the trials and the source-only baseline they start from
    assert demo_overrides(data=tmp_path / "d", cuda=False) == [
        f'{section}.{domain}.root="{tmp_path}/d/{sub}"' for section in ("train.data", "baseline.overrides.data")
        for domain, sub in (("source", "source"), ("target", "target"), ("val", "target"))]
    gpu = demo_overrides(data=__import__("pathlib").Path("datasets/synth"), cuda=True)
    assert "resources.gpu=0.25" in gpu and "max_concurrent_trials=4" in gpu

"""Checks before any trial starts: cluster resources, shared storage, datasets; the GPU-memory estimate."""
from __future__ import annotations

import dataclasses

import pytest

from study.config.resources import (NodeInfo, PreflightError, check_cluster_resources, check_datasets,
                             check_storage_shared, is_uri)
from study_helpers import tiny_train_table
from trainables.config import TrainConfig, from_dict
from trainables.tune import estimate_gpu_memory_gib, gpu_share

CPU_NODE = NodeInfo("a" * 56, "10.0.0.1", cpu=8, gpu=0)
GPU_NODE = NodeInfo("b" * 56, "10.0.0.2", cpu=16, gpu=4)


def test_gpu_request_on_a_cpu_only_cluster_fails_fast():
    with pytest.raises(PreflightError, match="no GPU .* PENDING forever"):
        check_cluster_resources(cpu=1, gpu=0.25, nodes=[CPU_NODE])


def test_request_no_node_can_host_is_refused_and_packing_is_counted():
    with pytest.raises(PreflightError, match="no node can host one trial"):
        check_cluster_resources(cpu=32, gpu=0, nodes=[CPU_NODE, GPU_NODE])
    # 4 GPUs at 0.25 -> 16 slots, capped by 16 CPUs at 1 each; the CPU node hosts no GPU trial.
    assert check_cluster_resources(cpu=1, gpu=0.25, nodes=[CPU_NODE, GPU_NODE]) == 16
    assert check_cluster_resources(cpu=2, gpu=0.25, nodes=[GPU_NODE]) == 8
    assert check_cluster_resources(cpu=1, gpu=0, nodes=[CPU_NODE, GPU_NODE]) == 24


def test_unshared_storage_on_a_multi_node_cluster_is_refused():
    calls = []

    def probe(path, nodes):
        calls.append(path)
        return {CPU_NODE.node_id: True, GPU_NODE.node_id: False}  # the worker cannot see the head's path

    with pytest.raises(PreflightError, match=r"not shared: 1 of 2 nodes cannot see it \(10.0.0.2"):
        check_storage_shared("/home/me/studies", [CPU_NODE, GPU_NODE], probe=probe)
    assert calls == ["/home/me/studies"]
    # Shared (NFS) path: accepted; one node or an object store: nothing to probe.
    check_storage_shared("/mnt/nfs/studies", [CPU_NODE, GPU_NODE], probe=lambda p, n: {x.node_id: True for x in n})
    check_storage_shared("/home/me/studies", [CPU_NODE], probe=lambda p, n: pytest.fail("probed one node"))
    check_storage_shared("s3://bucket/studies", [CPU_NODE, GPU_NODE], probe=lambda p, n: pytest.fail("probed s3"))
    assert is_uri("gs://b/x") and not is_uri("file:///tmp/x") and not is_uri("studies")


def test_missing_dataset_root_is_named(tmp_path, tiny_benchmark):
    table = tiny_train_table(tiny_benchmark)
    check_datasets(from_dict(TrainConfig, table))
    table["data"]["val"]["root"] = str(tmp_path / "nope")
    with pytest.raises(PreflightError, match=r"train.data.val.root = .*nope: no such dataset directory"):
        check_datasets(from_dict(TrainConfig, table))


def _cfg(**changes) -> TrainConfig:
    cfg = TrainConfig()  # AdaptSegNet: source 1280x720 + target 1024x512, batch 1
    for section, values in changes.items():
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})
    return cfg


def test_gpu_memory_estimate_reproduces_the_measured_points_and_scales():
    # The four H100 measurements (environment.md) are reproduced exactly by the two-point lines.
    assert estimate_gpu_memory_gib(_cfg(runtime={"amp": "bf16"})) == pytest.approx(4.0)
    assert estimate_gpu_memory_gib(_cfg(runtime={"amp": "bf16"}, optim={"batch_size": 4})) == pytest.approx(14.4)
    assert estimate_gpu_memory_gib(_cfg()) == pytest.approx(7.0)
    assert estimate_gpu_memory_gib(_cfg(optim={"batch_size": 4})) == pytest.approx(26.9)
    # Batch 2 in bf16: fixed 0.5333 + 2 * 3.4667 = 7.4667 GiB (hand-computed).
    assert estimate_gpu_memory_gib(_cfg(runtime={"amp": "bf16"}, optim={"batch_size": 2})) == pytest.approx(7.4667,
                                                                                                          abs=1e-4)
    # Source-only counts the source image only: 0.3667 + 6.6333 * 921600 / 1445888 = 4.5948 GiB.
    assert estimate_gpu_memory_gib(_cfg(adapt={"mode": "source_only"})) == pytest.approx(4.5948, abs=1e-4)
    # Half the pixels per domain, fp32: 0.3667 + 6.6333 / 2 = 3.6833 GiB.
    half = _cfg(data={"source": dataclasses.replace(TrainConfig().data.source, size=(640, 720)),
                      "target": dataclasses.replace(TrainConfig().data.target, size=(512, 512))})
    assert estimate_gpu_memory_gib(half) == pytest.approx(3.6833, abs=1e-4)


def test_gpu_share_is_a_no_op_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu_share(_cfg(), 0.25) is None


# ---------------------------------------------------------------------------------------------------------
# study.config.preflight: every check that needs no cluster runs before Ray starts, and nothing is left behind


def _study(tmp_path, tiny_benchmark, *overrides: str, **table_overrides):
    from study.config.study_config import load_study_config
    from study_helpers import study_table, write_study_file

    path = write_study_file(tmp_path / "study.toml", study_table(tiny_benchmark, **table_overrides))
    return load_study_config(path, overrides)


def _refuse_ray(monkeypatch):
    import ray

    def refused(*args, **kwargs):
        raise AssertionError("Ray was started although a pre-launch check must have failed")

    monkeypatch.setattr(ray, "init", refused)


def _checkpoint(path):
    """A real dastudy checkpoint file is not needed: validate_config checks that the file exists."""
    path.write_bytes(b"x")
    return str(path)


@pytest.mark.parametrize("case, overrides, match", [
    ("init_checkpoint of one backbone", ("search.space=\"backbone\"",
                                         "search.params.models=[\"deeplabv2_tiny\",\"deeplabv3plus_tiny\"]",
                                         "search.params.init_checkpoints={deeplabv3plus_tiny=\"nope/missing.pt\"}"),
     r"search\.params\.init_checkpoints\.deeplabv3plus_tiny = '.*nope/missing\.pt' is not valid"),
    ("lambda_low = 0", ("search.params.lambda_low=0",), r"lambda_low = 0: must be > 0"),
    ("lambda_high = 0", ("search.params.lambda_high=0",), r"lambda_high = 0: must be > 0"),
    ("lr_low above the backbone's default high", ("search.params.lr_low=0.5",),
     r"learning-rate range of deeplabv2_tiny would be \[0\.5, 0\.05\]"),
    ("negative grid value", ("search.sampler=\"grid\"", "num_samples=1", "search.params.lambda_grid=[-1.0]",
                             "search.params.lr_grid=[0.01]"), r"lambda_grid = \[-1\.0\]: -1\.0 is not a finite"),
    ("text grid value", ("search.sampler=\"grid\"", "num_samples=1", "search.params.lambda_grid=[\"x\"]",
                         "search.params.lr_grid=[0.01]"), r"lambda_grid = \['x'\]: 'x' is not a finite"),
    ("unknown storage scheme", ("search.storage=\"mongodb://h/db\"",), r"search\.storage = 'mongodb://h/db'.*unknown "
                                                                       r"scheme 'mongodb'"),
    ("malformed storage URL", ("search.storage=\"postgresql://u@h:port/db\"",), r"search\.storage = .*malformed URL"),
    ("storage URL without a database", ("search.storage=\"postgresql://u@h\"",), r"needs a host and a database"),
])
def test_bad_study_fails_before_ray_and_leaves_nothing(case, overrides, match, tmp_path, tiny_benchmark,
                                                       monkeypatch):
    from study.run.tuner import run_study
    from trainables.config import ConfigError

    _refuse_ray(monkeypatch)
    storage = tmp_path / "studies"
    with pytest.raises(ConfigError, match=match) as info:
        run_study(_study(tmp_path, tiny_benchmark, *overrides), storage=str(storage))
    assert "\n" not in str(info.value) and "study.toml" in str(info.value)  # one line naming the file
    assert not storage.exists()  # no study directory, no journal, no burned name


def test_empty_dataset_root_fails_before_ray(tmp_path, tiny_benchmark, monkeypatch):
    from study.run.tuner import run_study
    from trainables.config import ConfigError

    _refuse_ray(monkeypatch)
    empty = tmp_path / "empty"
    empty.mkdir()
    study = _study(tmp_path, tiny_benchmark, f"train.data.val.root=\"{empty}\"")
    with pytest.raises(ConfigError, match=r"train\.data\.val\.root = '.*empty' is not valid; allowed: a cityscapes "
                                          r"dataset folder whose split 'val' holds images"):
        run_study(study, storage=str(tmp_path / "studies"))
    assert not (tmp_path / "studies").exists()


def test_baseline_config_is_checked_before_ray(tmp_path, tiny_benchmark, monkeypatch):
    from study.config.preflight import check_study
    from trainables.config import ConfigError

    study = _study(tmp_path, tiny_benchmark, "baseline.overrides={model={weights=\"no/such/weights.pth\"}}")
    with pytest.raises(ConfigError, match=r"\[baseline .*\]: model\.weights = '.*no/such/weights\.pth'"):
        check_study(study)


def test_every_backbone_and_grid_point_is_resolved_and_checked(tmp_path, tiny_benchmark):
    from study.config.preflight import check_study

    good = _checkpoint(tmp_path / "v2.pt")
    study = _study(tmp_path, tiny_benchmark, "search.space=\"lambda_sensitivity\"", "search.sampler=\"grid\"",
                   "num_samples=2", "search.params.models=[\"deeplabv2_tiny\",\"deeplabv3plus_tiny\"]",
                   f"search.params.init_checkpoints={{deeplabv2_tiny=\"{good}\", deeplabv3plus_tiny=\"{good}\"}}",
                   "search.params.lambda_grid=[0.001,0.002]", "search.params.seeds=[1,2]",
                   scheduler__kind="fifo")
    pre = check_study(study)
    assert pre.exhaustive and len(pre.plans) == 2 * 2 * 2
    v3 = [p.config for p in pre.plans if p.config.model.name == "deeplabv3plus_tiny"]
    # the space's constants are applied as in a trial: V3+ is single-level with no aux weight
    assert len(v3) == 4 and all(not c.model.multi_level and c.adapt.lambda_adv_aux == 0 for c in v3)
    assert {(p.config.adapt.lambda_adv_main, p.config.runtime.seed) for p in pre.plans} == {
        (0.001, 1), (0.001, 2), (0.002, 1), (0.002, 2)}
    # under TPE each branch is checked at both ends of its continuous ranges
    tpe = check_study(_study(tmp_path, tiny_benchmark, "search.params.lambda_low=0.001",
                             "search.params.lambda_high=0.01"))
    assert not tpe.exhaustive
    assert sorted(p.config.adapt.lambda_adv_main for p in tpe.plans) == [0.001, 0.01]


@pytest.mark.parametrize("url, stored", [
    ("postgresql://alice:s3cr3t@db.example:5432/studies", "postgresql://alice@db.example:5432/studies"),
    ("postgresql+psycopg2://alice:s3cr3t@db.example/studies", "postgresql+psycopg2://alice@db.example/studies"),
])
def test_storage_password_never_reaches_a_file(url, stored, tmp_path, tiny_benchmark, monkeypatch):
    import json

    from study.config.preflight import PASSWORD_ENV, connect_url, mask_secrets
    from study.config.study_config import study_to_dict
    from study.state.location import StudyLocation, write_study_files

    study = _study(tmp_path, tiny_benchmark, f"search.storage=\"{url}\"")
    assert study.search.storage == url  # the run itself still has it (to connect)
    monkeypatch.setattr("sys.argv", ["dastudy", "study", "run", "x.toml", f"search.storage={url}"])
    home = tmp_path / "studies" / "tiny"
    write_study_files(study, StudyLocation(home=home, ray_storage=str(home.parent), name="tiny"), extra={})
    for path in home.iterdir():
        assert "s3cr3t" not in path.read_text(), path.name
    assert study_to_dict(study)["search"]["storage"] == stored
    assert json.loads((home / "provenance.json").read_text())["command"][-1] == (
        "search.storage=" + url.replace("s3cr3t", "***"))
    assert mask_secrets(f"could not connect to {url}") == f"could not connect to {url.replace('s3cr3t', '***')}"
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert connect_url(url) == stored and __import__("os").environ[PASSWORD_ENV] == "s3cr3t"


def test_mysql_password_is_refused(tmp_path, tiny_benchmark):
    from trainables.config import ConfigError

    with pytest.raises(ConfigError, match=r"search\.storage = 'mysql://u@h/db'.*without a password"):
        _study(tmp_path, tiny_benchmark, "search.storage=\"mysql://u:pw@h/db\"")


def test_dry_run_prints_the_trial_configs_and_creates_nothing(tmp_path, tiny_benchmark, monkeypatch, capsys):
    from study.cli import main
    from study_helpers import study_table, write_study_file

    _refuse_ray(monkeypatch)
    table = study_table(tiny_benchmark, num_samples=4)
    table["search"].update(sampler="grid", params={"lambda_grid": [0.001, 0.004], "lr_grid": [0.01, 0.02]})
    path = write_study_file(tmp_path / "grid.toml", table)
    storage = tmp_path / "studies"
    assert main(["study", "run", str(path), "--dry-run", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "trial configs (grid of 4" in out and "all pre-launch checks passed" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert sorted((float(r[1]), float(r[2])) for r in rows) == [(0.01, 0.001), (0.01, 0.004), (0.02, 0.001),
                                                                (0.02, 0.004)]
    assert not storage.exists()
    # replicates: the plan counts trials, not configurations, and so does the checkpoint estimate
    assert main(["study", "run", str(path), "search.seeds=[4, 5, 6]", "--dry-run", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "4 configuration(s) x 3 seeds = 12 trials" in out
    assert "search.seeds = [4, 5, 6]" in out and "trial configs (grid of 4, 4 launched" in out
    assert "runtime.seed=" not in out  # the config's own seed is not what the trials run with
    assert "ASHA lets ~6 of 12 trials finish" in out, out
    # samplers: the space with its distributions; options may follow the overrides
    path = write_study_file(tmp_path / "tpe.toml", study_table(tiny_benchmark))
    assert main(["study", "run", str(path), "search.params.lambda_high=0.05", "--dry-run",
                 "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "lambda_adv       log-uniform [0.0001, 0.05]  -> adapt.lambda_adv_main" in out
    assert not storage.exists()
    # a failing check: one line on stderr naming the file and key, exit code 2
    assert main(["study", "run", str(path), "search.params.lambda_low=0", "--dry-run",
                 "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tpe.toml" in err and "lambda_low = 0" in err
    assert not storage.exists()


@pytest.mark.parametrize("url", ["postgresql://u@/studies?host=/var/run/postgresql", "sqlite:///studies.db",
                                 "postgresql+psycopg://u@h:5432/db", "some/dir/optuna.journal"])
def test_good_storage_urls_pass(url):
    from study.config.preflight import check_storage_url

    check_storage_url(url, source="s.toml", files=False)


@pytest.mark.slow  # a PostgreSQL server with password authentication and a 1-trial probe study: ~40-60 s loaded
def test_password_of_a_real_postgres_study_is_in_no_file(tiny_benchmark, tmp_path, monkeypatch):
    """End to end: a study whose Optuna storage is a password-protected PostgreSQL (scram-sha-256). Nothing in the
    study directory (study.toml, provenance.json, Ray's pickled experiment and searcher state) holds the password;
    `study status` then works with the password from PGPASSWORD only."""
    import shutil
    import tempfile

    ray = pytest.importorskip("ray")
    from postgres_server import postgres_server
    from study.commands.study import collect_trials
    from study.config.preflight import PASSWORD_ENV
    from study.config.study_config import study_from_dict
    from study.run.tuner import run_study
    from study_helpers import TEST_RAY_ENV, study_table
    from trainables.tune import probe_trial

    secret = "h7-s3cr3t-pw"
    for key, value in TEST_RAY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with postgres_server(password=secret) as (url, port):
        import psycopg

        monkeypatch.setattr("sys.argv", ["dastudy", "study", "run", "s.toml", f"search.storage={url}"])
        with pytest.raises(psycopg.OperationalError, match="password"):  # the server does check passwords
            psycopg.connect(url.replace(secret, "wrong")).close()
        ray_tmp = tempfile.mkdtemp(prefix="rq", dir="/tmp")
        try:
            ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False, object_store_memory=100 * 1024 ** 2, _temp_dir=ray_tmp)
            table = study_table(tiny_benchmark, name="pgpw", num_samples=1, max_concurrent_trials=1,
                                search={"space": "lambda_lr", "sampler": "tpe", "seed": 1, "startup_trials": 2,
                                        "storage": url})
            results, location = run_study(study_from_dict(table, source="test"), storage=str(tmp_path / "studies"),
                                          trainable=probe_trial)
            assert len(results) == 1 and results.num_errors == 0
            leaks = [str(p.relative_to(location.home)) for p in location.home.rglob("*")
                     if p.is_file() and secret.encode() in p.read_bytes()]
            assert leaks == []
            assert f"postgres@127.0.0.1:{port}/postgres" in (location.home / "study.toml").read_text()
            # a later `study status` (a new process in real life): the password from the environment only
            monkeypatch.setenv(PASSWORD_ENV, secret)
            assert len(collect_trials(location.home)["trials"]) == 1
        finally:
            if ray.is_initialized():
                ray.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_fix_for_named_weights_is_the_download_of_the_first_file_still_online(tmp_path, monkeypatch):
    """deeplab_init's first published file is offline since ~2021: the fix downloads the second (ADVENT's copy)
    into torch's hub cache; an unknown name is a path to put a file at."""
    from study.config.preflight import _weights_fix

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch home"))
    assert _weights_fix("deeplab_init") == (
        f"curl -L --create-dirs -o '{tmp_path}/torch home/hub/checkpoints/DeepLab_resnet_pretrained_imagenet.pth' "
        "https://github.com/valeoai/ADVENT/releases/download/v0.1/DeepLab_resnet_pretrained_imagenet.pth")
    assert _weights_fix("imagenet") == (
        f"curl -L --create-dirs -o '{tmp_path}/torch home/hub/checkpoints/resnet101-5d3b4d8f.pth' "
        "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth")
    assert _weights_fix("/w/x.pth") == ("put the file at /w/x.pth, or name an existing one in search.params.weights "
                                        "/ train.model.weights")


def test_the_fix_for_a_missing_checkpoint_is_the_command_that_writes_it(tmp_path, monkeypatch):
    from study.config.preflight import _checkpoint_fix

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    assert _checkpoint_fix(runs / "synthia_source_v2" / "checkpoints" / "best.pt", "model.init_checkpoint") == \
        "dastudy train-source synthia_source_v2"  # the command's default --out: not repeated
    assert _checkpoint_fix(runs / "synthia2cityscapes_v2_single" / "checkpoints" / "best.pt", "model.init_checkpoint") \
        == "dastudy adapt synthia2cityscapes_v2_single"
    elsewhere = tmp_path / "my runs" / "synthia_source_v2"
    assert _checkpoint_fix(elsewhere / "checkpoints" / "best.pt", "model.init_checkpoint") == \
        f"dastudy train-source synthia_source_v2 --out '{elsewhere}'"
    other = ("train that run first, or set search.params.init_checkpoints / train.model.init_checkpoint to an "
             "existing checkpoint")
    assert _checkpoint_fix(runs / "synthia_source_v2" / "best.pt", "model.init_checkpoint") == other  # not checkpoints/
    assert _checkpoint_fix(runs / "my_own_run" / "checkpoints" / "best.pt", "model.init_checkpoint") == other


def test_a_refused_weights_or_checkpoint_is_one_line_with_its_fix(tmp_path, monkeypatch):
    from study.config.preflight import _config_problem
    from trainables.config import ConfigError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.chdir(tmp_path)
    cfg = from_dict(TrainConfig, tiny_train_table(tmp_path))
    weights = _config_problem("model.weights", ConfigError("s.toml", "model.weights", "deeplab_init", "a file"), cfg)
    assert weights.what == f"weights 'deeplab_init' ({cfg.model.name}): not found"
    assert weights.fix.startswith(f"curl -L --create-dirs -o {tmp_path}/th/hub/checkpoints/DeepLab_resnet_")
    (tmp_path / "adir").mkdir()
    for value, state in ((tmp_path / "adir", "a directory"), (tmp_path / "nofile.pt", "no such file")):
        problem = _config_problem("model.init_checkpoint", ConfigError("s.toml", "model.init_checkpoint", str(value), "a file"),
                                  cfg)
        assert problem.what == f"checkpoint {value.name} ({cfg.model.name}): {state}", problem.what
        assert problem.fix.endswith("to an existing checkpoint")


GOLDEN_PLAN = """\
study tiny: 3 configuration(s) x 2 seeds = 6 trials, space 'lambda_lr' (tpe, seed 0), metric val/mIoU16 (max), \
asha max_t=3, 2 at a time (cpu 1, gpu 0 each)
optuna storage: postgresql://alice@db.example:5432/studies
replicates: every configuration runs once per seed in search.seeds = [1, 2] (runtime.seed)
same in every trial: model.name=deeplabv2_tiny, optim.iter_max=6, optim.iter_stop=6, optim.batch_size=2

space (each trial samples):
  lambda_adv       log-uniform [0.0001, 0.01]  -> adapt.lambda_adv_main
  lr               log-uniform [0.002, 0.05]  -> optim.lr

resolved trial configs checked (2: each branch at both ends of its ranges):
  #  optim.lr  adapt.lambda_adv_main
  1  0.002     0.0001
  2  0.05      0.01

a note
all pre-launch checks passed (configs, model names, weight and checkpoint files, datasets, storage URL, resources); \
nothing was created"""


def test_the_dry_run_plan_word_for_word(tmp_path, tiny_benchmark):
    """Replicates, a PostgreSQL storage (its password never shown), a sampled space at both ends of its ranges."""
    from study.config.preflight import diagnose, format_plan
    from study.config.study_config import study_from_dict
    from study_helpers import study_table

    table = study_table(tiny_benchmark, num_samples=3)
    table["search"].update(seeds=[1, 2], storage="postgresql://alice:s3cr3t@db.example:5432/studies")
    study = study_from_dict(table, source="golden.toml", cwd=tmp_path)
    pre, problems = diagnose(study, source="golden.toml", home=tmp_path / "home")
    assert format_plan(pre, problems, ["a note"]) == GOLDEN_PLAN


# ---------------------------------------------------------------------------------------------------------
# diagnose: every problem once, word for word (what, fix and the real run's error)


def _diag_study(tmp_path, tiny_benchmark, **changes):
    """The tiny study loaded from a table (source "s.toml", relative paths against ``tmp_path``); ``changes``:
    dotted keys into the table."""
    from study.config.study_config import study_from_dict
    from study_helpers import study_table

    table = study_table(tiny_benchmark)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = table
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return study_from_dict(table, source="s.toml", cwd=tmp_path)


def test_point_trial_takes_the_point_else_the_first_choice_or_an_end_of_the_range():
    from study.config.preflight import _PointTrial

    low = _PointTrial({"gan": "lsgan", "lr": 0.5})  # end: "low" unless told
    assert low.suggest_categorical("gan", ["vanilla", "lsgan"]) == "lsgan"
    assert low.suggest_categorical("loss", ("entropy", "maxsquare")) == "entropy"
    assert low.suggest_grid("lam", [0.004, 0.001]) == 0.004
    assert low.suggest_float("lr", 0.1, 0.9, log=True) == 0.5  # a value of the point wins over the range
    assert low.suggest_float("lr_d", 0.1, 0.9) == 0.1 and low.suggest_int("n", 2, 7) == 2
    assert low.params == {"gan": "lsgan", "loss": "entropy", "lam": 0.004, "lr": 0.5, "lr_d": 0.1, "n": 2}
    high = _PointTrial({}, "high")
    assert (high.suggest_float("lr_d", 0.1, 0.9, log=True), high.suggest_int("n", 2, 7)) == (0.9, 7)


def test_synthetic_benchmark_folders_and_paths_as_typed(tmp_path, monkeypatch):
    from study.config.preflight import _shown, _synthetic

    assert _synthetic("datasets/synth/source") and _synthetic("/d/synthetic/target")
    assert _synthetic("/d/synthetic/deeper/source")  # below a folder named synthetic
    assert not _synthetic("/data/cityscapes") and not _synthetic("/data/SYNTH/source")
    assert not _synthetic("/data/synthia/train")
    monkeypatch.chdir(tmp_path)
    assert _shown(tmp_path / "datasets" / "cs") == "datasets/cs"
    assert _shown("/elsewhere/cs") == "/elsewhere/cs"


def test_origin_names_the_key_the_user_wrote():
    from study.config.preflight import _origin

    params = {"model.name": "deeplabv2_tiny", "optim.lr@deeplabv2_tiny": 0.01}
    constants = {"model.weights": "w.pth", "model.init_checkpoint": "c.pt"}
    assert _origin("optim.lr", params, constants) == "optim.lr@deeplabv2_tiny"
    assert _origin("model.weights", params, constants) == "search.params.weights.deeplabv2_tiny"
    assert _origin("model.init_checkpoint", params, constants) == "search.params.init_checkpoints.deeplabv2_tiny"
    assert _origin("model.weights", {}, {"model.weights": "w.pth"}) == "search.params.weights.?"
    assert _origin("model.weights", params, {}) == "train.model.weights"  # not set by the space: the base config
    assert _origin("optim.batch_size", params, constants) == "train.optim.batch_size"
    overrides = {"deeplabv2_tiny": {"optim.batch_size": 0}}
    assert _origin("optim.batch_size", params, {**constants, "optim.batch_size": 0}, overrides) == (
        "search.params.model_overrides.deeplabv2_tiny.optim.batch_size")
    assert _origin("optim.batch_size", params, constants, overrides) == "train.optim.batch_size"  # not applied


def test_a_refused_key_is_a_problem_with_its_allowed_values_as_the_fix(tmp_path, monkeypatch):
    from study.config.preflight import _config_problem
    from trainables.config import ConfigError

    monkeypatch.chdir(tmp_path)
    cfg = from_dict(TrainConfig, tiny_train_table(tmp_path))
    allowed = "one of " + ", ".join(f"value{i:02d}" for i in range(12))  # 7 + 12 * 9 - 2 = 113 characters
    err = ConfigError("s.toml", "model.normalization", "bogus", allowed)
    problem = _config_problem("model.normalization", err, cfg)
    assert problem.what == "model.normalization = 'bogus' is not valid"
    assert problem.fix == f"model.normalization=<{allowed[:80]}>" and len(allowed) == 113
    assert problem.fix == ("model.normalization=<one of value00, value01, value02, value03, value04, value05, value06, "
                           "value07, v>")  # the first 80: 7 + 8 * 9 + 1
    assert problem.error is err
    # a missing checkpoint: the fix names the key, or the command that writes a shipped config's checkpoint
    other = tmp_path / "elsewhere" / "best.pt"
    problem = _config_problem("model.init_checkpoint",
                              ConfigError("s.toml", "model.init_checkpoint", str(other), "a file"), cfg)
    assert problem.fix == ("train that run first, or set search.params.init_checkpoints / "
                           "train.model.init_checkpoint to an existing checkpoint")
    shipped = tmp_path / "runs" / "synthia_source_v2" / "checkpoints" / "best.pt"
    problem = _config_problem("model.init_checkpoint",
                              ConfigError("s.toml", "model.init_checkpoint", str(shipped), "a file"), cfg)
    assert problem.what == "checkpoint runs/synthia_source_v2/checkpoints/best.pt (deeplabv2_tiny): no such file"
    assert problem.fix == "dastudy train-source synthia_source_v2"


def test_the_fix_for_named_weights_all_offline_is_the_first_file(tmp_path, monkeypatch):
    from models.pretrained import NAMED_WEIGHTS
    from study.config.preflight import _weights_fix

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(NAMED_WEIGHTS, "old", (("a.pth", "http://a.example/a.pth (offline since 2020)"),
                                               ("b.pth", "http://b.example/b.pth (offline since 2021)")))
    assert _weights_fix("old") == f"curl -L --create-dirs -o {tmp_path}/hub/checkpoints/a.pth http://a.example/a.pth"


def test_diagnose_lists_each_missing_dataset_once_with_its_fix(tmp_path, tiny_benchmark, monkeypatch):
    """Source and target of one missing synthetic benchmark are one problem, so are two splits of one missing
    dataset folder; a [baseline]'s own folder is checked under its own key."""
    from study.config.preflight import diagnose

    monkeypatch.chdir(tmp_path)
    study = _diag_study(tmp_path, tiny_benchmark, train__data__source__root="data/synth/source",
                        train__data__target__root="data/synth/target", train__data__val__root="cs",
                        baseline={"overrides": {"data": {"source": {"root": "other/synthetic/source"},
                                                         "target": {"root": "cs2"}, "val": {"root": "cs2"}}}})
    pre, problems = diagnose(study)
    assert len(pre.plans) == 2  # the two ends of lambda_lr's ranges: each folder is still one problem
    assert [p.line() for p in problems] == [
        "synthetic benchmark: no folder data/synth; fix: dastudy data synth data/synth",
        "dataset cityscapes: no folder cs; fix: get cityscapes (docs/data.md), then: dastudy data check cs "
        "--dataset cityscapes",
        "synthetic benchmark: no folder other/synthetic; fix: dastudy data synth other/synthetic",
        "dataset cityscapes: no folder cs2; fix: get cityscapes (docs/data.md), then: dastudy data check cs2 "
        "--dataset cityscapes"]
    assert [str(p.error) for p in problems] == [
        f"s.toml: train.data.source.root = '{tmp_path}/data/synth/source' is not valid; allowed: a synthia dataset "
        f"folder whose split 'train' holds images: {tmp_path}/data/synth/source: synthia root folder does not exist "
        "(`dastudy data synth` or `dastudy demo` creates the synthetic benchmark)",
        f"s.toml: train.data.val.root = '{tmp_path}/cs' is not valid; allowed: a cityscapes dataset folder whose "
        f"split 'val' holds images: {tmp_path}/cs: cityscapes root folder does not exist (`dastudy data check ROOT "
        "--dataset NAME` says what is missing)",
        f"s.toml [baseline [train] as source_only]: baseline.data.source.root = '{tmp_path}/other/synthetic/source' "
        f"is not valid; allowed: a synthia dataset folder whose split 'train' holds images: "
        f"{tmp_path}/other/synthetic/source: synthia root folder does not exist (`dastudy data synth` or `dastudy "
        "demo` creates the synthetic benchmark)",
        f"s.toml [baseline [train] as source_only]: baseline.data.target.root = '{tmp_path}/cs2' is not valid; "
        f"allowed: a cityscapes dataset folder whose split 'train' holds images: {tmp_path}/cs2: cityscapes root "
        "folder does not exist (`dastudy data check ROOT --dataset NAME` says what is missing)"]


def test_diagnose_finds_an_empty_split_of_an_existing_folder(tmp_path, tiny_benchmark):
    """The target folder holds train but not test: val (split test) is a problem of its own, although the same
    folder's train split, and the source beside it, were fine."""
    from study.config.preflight import diagnose

    study = _diag_study(tmp_path, tiny_benchmark, train__data__val__split="test")
    _, problems = diagnose(study)
    target = tiny_benchmark / "target"
    assert [p.line() for p in problems] == [  # paths outside the working directory: as they are
        f"dataset cityscapes: split 'test' of {target} holds no images; fix: dastudy data synth {tiny_benchmark}"]
    assert str(problems[0].error) == (
        f"s.toml: train.data.val.root = '{target}' is not valid; allowed: a cityscapes dataset folder whose split "
        f"'test' holds images: {target}/leftImg8bit/test: missing folder of split 'test'; expected "
        "leftImg8bit/test/<city>/*_leftImg8bit.png (splits: train, val, test, group0_train, group0_val, group1_train, "
        "group1_val (and the seed's exact lists: group0_train_seed, ..., see data/splits.py)) (`dastudy data synth` "
        "or `dastudy demo` creates the synthetic benchmark)")


def test_dataset_problems_go_on_after_a_domain_that_is_not_set(tmp_path, tiny_benchmark):
    from study.config.preflight import _dataset_problems, _Found

    cfg = from_dict(TrainConfig, tiny_train_table(tiny_benchmark))
    cfg = dataclasses.replace(cfg, adapt=dataclasses.replace(cfg.adapt, mode="source_only"))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, target=None, val=dataclasses.replace(cfg.data.val, root=str(tmp_path / "cs"))))
    found = _Found()
    _dataset_problems([cfg], source="s.toml", prefix="baseline", found=found)
    assert [p.what for p in found.problems] == [f"dataset cityscapes: no folder {tmp_path}/cs"]


def test_diagnose_reports_a_missing_checkpoint_behind_a_missing_weight_file_once_per_value(tmp_path,
                                                                                           tiny_benchmark,
                                                                                           monkeypatch):
    from study.config.preflight import diagnose

    monkeypatch.chdir(tmp_path)
    for name in ("c2.pt", "c3.pt"):
        _checkpoint(tmp_path / name)
    study = _diag_study(tmp_path, tiny_benchmark, search__space="backbone", search__params={
        "models": ["deeplabv2_tiny", "deeplabv3plus_tiny"],
        "weights": {"deeplabv2_tiny": "no/a.pth", "deeplabv3plus_tiny": "no/b.pth"},
        "init_checkpoints": {"deeplabv2_tiny": "no/c.pt", "deeplabv3plus_tiny": "c3.pt"}})
    pre, problems = diagnose(study)
    assert [p.params["model.name"] for p in pre.plans] == ["deeplabv2_tiny", "deeplabv3plus_tiny"]
    weights_allowed = ("an existing weight file or one of imagenet, deeplab_init in torch's hub cache (weight file "
                       "{} does not exist (named weights: imagenet, deeplab_init))")
    assert [(p.what, p.fix, str(p.error)) for p in problems] == [
        (f"weights '{tmp_path}/no/a.pth' (deeplabv2_tiny): not found",
         f"put the file at {tmp_path}/no/a.pth, or name an existing one in search.params.weights / train.model.weights",
         f"s.toml [trial model.name=deeplabv2_tiny]: search.params.weights.deeplabv2_tiny = '{tmp_path}/no/a.pth' is "
         f"not valid; allowed: " + weights_allowed.format(f"{tmp_path}/no/a.pth")),
        ("checkpoint no/c.pt (deeplabv2_tiny): no such file", problems[1].fix,  # the fix: the next test
         f"s.toml [trial model.name=deeplabv2_tiny]: search.params.init_checkpoints.deeplabv2_tiny = "
         f"'{tmp_path}/no/c.pt' is not valid; allowed: does not exist; an existing dastudy checkpoint file (e.g. "
         "runs/<source run>/checkpoints/best.pt)"),
        (f"weights '{tmp_path}/no/b.pth' (deeplabv3plus_tiny): not found",
         f"put the file at {tmp_path}/no/b.pth, or name an existing one in search.params.weights / train.model.weights",
         f"s.toml [trial model.name=deeplabv3plus_tiny]: search.params.weights.deeplabv3plus_tiny = "
         f"'{tmp_path}/no/b.pth' is not valid; allowed: " + weights_allowed.format(f"{tmp_path}/no/b.pth"))]


def test_diagnose_lists_a_refused_setting_of_a_backbone_and_goes_on(tmp_path, tiny_benchmark):
    from study.config.preflight import diagnose

    study = _diag_study(tmp_path, tiny_benchmark, search__space="backbone", search__params={
        "models": ["deeplabv3plus_tiny", "deeplabv2_tiny"],
        "model_overrides": {"deeplabv3plus_tiny": {"model.multi_level": True}}})
    pre, problems = diagnose(study)
    assert len(pre.plans) == 2 and len(problems) == 1
    allowed = "false for deeplabv3plus_tiny (it has a single output level)"
    key = problems[0].error.key  # the key the user wrote: the backbone's entry of the space's override table
    assert key == "search.params.model_overrides.deeplabv3plus_tiny.model.multi_level"
    assert (problems[0].what, problems[0].fix) == (f"{key} = True is not valid", f"{key}=<{allowed}>")
    assert str(problems[0].error) == (f"s.toml [trial model.name=deeplabv3plus_tiny]: {key} = True is not valid; "
                                      f"allowed: {allowed}")


def test_diagnose_names_the_trial_whose_config_the_trial_would_refuse(tmp_path, tiny_benchmark):
    from study.config.preflight import diagnose
    from trainables.config import ConfigError

    study = _diag_study(tmp_path, tiny_benchmark, search__space="backbone", search__params={
        "models": ["deeplabv2_tiny"], "model_overrides": {"deeplabv2_tiny": {"model.normalization": "bogus"}}})
    with pytest.raises(ConfigError) as info:
        diagnose(study)
    assert info.value.source == "s.toml [trial model.name=deeplabv2_tiny]"
    assert (info.value.value, info.value.allowed) == ("bogus", "'auto' | 'caffe' | 'imagenet'")


def test_diagnose_turns_a_space_that_cannot_be_resolved_into_a_config_error(tmp_path, tiny_benchmark):
    """A StudyConfig made in code (no source attribute): the study's name stands for the file."""
    from study.config.preflight import diagnose
    from trainables.config import ConfigError

    loaded = _diag_study(tmp_path, tiny_benchmark)
    study = dataclasses.replace(loaded, search=dataclasses.replace(loaded.search, params={"lr_low": 0.5}))
    assert not hasattr(study, "source")
    with pytest.raises(ConfigError) as info:
        diagnose(study)
    assert str(info.value) == (
        "study 'tiny': search.params = 'lambda_lr' is not valid; allowed: search.params: the learning-rate range of "
        "deeplabv2_tiny would be [0.5, 0.05] (lr_low = 0.5, lr_high = default; deeplabv2_tiny's default is "
        "(0.002, 0.05)); need lr_low < lr_high")


def test_diagnose_and_check_study_home_storage_and_the_trials_switch(tmp_path, tiny_benchmark, monkeypatch):
    from study.config.preflight import Preflight, check_study, diagnose

    monkeypatch.chdir(tmp_path)
    home = tmp_path / "studies" / "tiny"
    home.mkdir(parents=True)
    study = _diag_study(tmp_path, tiny_benchmark, search__storage="sqlite:///nodir/s.db",
                        train__data__val__root="cs")
    pre, problems = diagnose(study, home=home, trials=False)  # the storage URL only: no plans, no datasets
    assert (pre.study, pre.plans, pre.exhaustive) == (study, (), False) and pre.exhaustive is False
    assert [(p.what, p.fix) for p in problems] == [
        (f"study directory {home} exists (a real run never overwrites a study)",
         "dastudy study resume tiny, or --name ANOTHER"),
        ("search.storage = 'sqlite:///nodir/s.db' cannot be opened",
         "search.storage=PATH.journal, sqlite:///PATH.db or postgresql://USER@HOST/DB")]
    assert isinstance(problems[0].error, FileExistsError)
    assert str(problems[0].error) == (f"study directory {home} already exists; continue it with `dastudy study "
                                      "resume tiny` or choose another --name")
    assert str(problems[1].error) == (f"s.toml: search.storage = 'sqlite:///nodir/s.db' is not valid; allowed: a "
                                      f"database file in an existing directory ({tmp_path}/nodir does not exist)")
    # check_study raises the first problem, passes its source, home and trials on
    with pytest.raises(FileExistsError, match="continue it with `dastudy study resume tiny`"):
        check_study(study, home=home, trials=False)
    from trainables.config import ConfigError

    with pytest.raises(ConfigError) as info:
        check_study(study, source="other.toml", trials=False)
    assert str(info.value).startswith("other.toml: search.storage = ")
    fine = _diag_study(tmp_path, tiny_benchmark, train__data__val__root="cs")
    assert check_study(fine, trials=False) == Preflight(fine, (), False)  # the missing dataset is not looked at
    with pytest.raises(ConfigError, match=r"^other\.toml: train\.data\.val\.root = "):
        check_study(fine, source="other.toml")


def test_diagnose_lists_a_problem_the_baseline_shares_with_the_trials_once(tmp_path, tiny_benchmark, monkeypatch):
    from study.config.preflight import diagnose

    monkeypatch.chdir(tmp_path)
    study = _diag_study(tmp_path, tiny_benchmark, train__model__weights="no/w.pth", baseline={},
                        search__params={"lambda_low": 0.00012345, "lambda_high": 0.01})
    _, problems = diagnose(study)
    assert [p.what for p in problems] == [f"weights '{tmp_path}/no/w.pth' (deeplabv2_tiny): not found"]
    assert str(problems[0].error).startswith(  # the trial's values as the plan shows them (3 digits)
        "s.toml [trial adapt.lambda_adv_main=0.000123, optim.lr@deeplabv2_tiny=0.002]: train.model.weights = ")
    # the baseline's own weights: its own problem, naming the baseline
    study = _diag_study(tmp_path, tiny_benchmark, baseline={"overrides": {"model": {"weights": "no/b.pth"}}})
    _, problems = diagnose(study)
    assert [p.what for p in problems] == [f"weights '{tmp_path}/no/b.pth' (deeplabv2_tiny): not found"]
    assert str(problems[0].error).startswith(
        f"s.toml [baseline [train] as source_only]: model.weights = '{tmp_path}/no/b.pth' is not valid")


def test_the_fix_for_a_trials_missing_checkpoint_names_the_run_config_key(tmp_path, tiny_benchmark, monkeypatch):
    """Seen: "... / train.search.params.init_checkpoints.deeplabv2_tiny to an existing checkpoint" (the key of the
    error as the user wrote it, prefixed with train. once more)."""
    from study.config.preflight import diagnose

    monkeypatch.chdir(tmp_path)
    study = _diag_study(tmp_path, tiny_benchmark, search__space="backbone", search__params={
        "models": ["deeplabv2_tiny"], "init_checkpoints": {"deeplabv2_tiny": "no/c.pt"}})
    _, problems = diagnose(study)
    assert [p.line() for p in problems] == [
        "checkpoint no/c.pt (deeplabv2_tiny): no such file; fix: train that run first, or set "
        "search.params.init_checkpoints / train.model.init_checkpoint to an existing checkpoint"]

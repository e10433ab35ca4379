"""The user's path through `study run --dry-run` (issue 19): every preset dry-runs on a bare clone and lists every
problem with its fix; the dry run checks what the real run checks; overrides the space would ignore are refused;
every command the presets and docs tell the user to run parses as written."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from study.cli import get_parser, main
from study.config.files import shipped_names

REPO = Path(__file__).resolve().parents[2]
PRESETS = shipped_names("presets")


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """A bare clone's situation: an empty working directory, no weights in torch's hub cache, no GPU, no Ray."""
    import ray
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)

    def refused(*args, **kwargs):
        raise AssertionError("a dry run must not start Ray")

    monkeypatch.setattr(ray, "init", refused)
    return tmp_path


def _problems(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if re.match(r"\s+\d+\. ", line)]


def _fix_commands(problems: list[str]) -> list[list[str]]:
    out = []
    for line in problems:
        fix = line.split("; fix: ", 1)[1]
        for part in fix.split(", then: ") if ", then: " in fix else [fix]:
            if part.startswith("dastudy "):
                out.append(shlex.split(part.split(", or ")[0])[1:])
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_dry_runs_on_a_bare_clone(preset, bare, capsys):
    code = main(["study", "run", preset, "--dry-run", "--storage", str(bare / "studies")])
    captured = capsys.readouterr()
    assert captured.err == ""  # no one-line refusal: the plan and then the problems
    out = captured.out
    assert out.startswith(f"study {preset}: ")
    # how many run at once, as the real run does it: a PBT population all together, other studies by the limit
    assert (", every member at once (" in out.splitlines()[0]) == (preset == "lambda_schedule_pbt"), out
    assert "trial configs (grid of" in out or "space (each trial samples):" in out
    problems = _problems(out)
    assert code == 2 and problems, out  # nothing of a real run exists here
    assert f"{len(problems)} problem(s); a real run would not start" in out
    # short: the problem in a few words (the long explanation is the real run's), then the fix (a command whose
    # paths and URL take what they take)
    assert all("; fix: " in line and len(line.split("; fix: ")[0]) < 110 for line in problems), problems
    assert len(set(problems)) == len(problems)  # each problem once, not once per grid point
    kinds = " ".join(problems)
    assert "dataset " in kinds or "synthetic benchmark: no folder" in kinds  # a bare clone has no datasets
    if preset != "demo":  # the real presets: weights, source-only checkpoints and a GPU
        # (ImageNet weights only where a backbone starts from them: lambda_schedule_pbt is DeepLabV2 only)
        imagenet = "imagenet" in (REPO / "study" / "presets" / f"{preset}.toml").read_text()
        assert ("weights 'imagenet'" in kinds or not imagenet) and "checkpoint runs/" in kinds and "has no GPU" in kinds
        assert "dastudy train-source " in kinds
    for argv in _fix_commands(problems):  # each fix that is a dastudy command parses as written
        _parses(argv)
    assert not (bare / "studies").exists() and not (bare / "runs").exists()


def test_too_little_disk_for_the_checkpoints_is_one_short_problem_whatever_the_path(bare, capsys, monkeypatch):
    """Seen on a nearly full disk: the problem named the (long) storage path and outgrew its one short line; the
    path belongs in the fix."""
    import study.config.resources as resources
    from study.config.resources import PreflightError

    def full(estimate, home):
        raise PreflightError(f"no room under {home}")

    monkeypatch.setattr(resources, "check_checkpoint_space", full)
    storage = bare / ("a-very-long-storage-path-" * 4) / "studies"
    assert main(["study", "run", "lambda_sensitivity", "--dry-run", "--storage", str(storage)]) == 2
    disk = [p for p in _problems(capsys.readouterr().out) if "checkpoints need about" in p]
    assert len(disk) == 1, disk
    what, fix = disk[0].split("; fix: ")
    assert len(what) < 110 and what.endswith("GiB, more than is free under the storage"), what
    assert fix.startswith(f"--storage on a larger filesystem than {storage}") and "checkpoints_to_keep" in fix


@pytest.mark.slow  # > 3 s: outside make test-quick
def test_the_demo_presets_fix_makes_its_dry_run_pass(bare, capsys):
    """The fix a dry run prints is the command that fixes it: run as printed, the next dry run passes."""
    argv = ["study", "run", "demo", "--dry-run", "--storage", str(bare / "studies")]
    assert main(argv) == 2
    problems = _problems(capsys.readouterr().out)
    assert problems == ["1. synthetic benchmark: no folder datasets/synth; fix: dastudy data synth datasets/synth"]
    for fix in _fix_commands(problems):
        assert main(fix) == 0
    capsys.readouterr()
    assert main(argv) == 0
    assert "all pre-launch checks passed" in capsys.readouterr().out


def test_dry_run_passes_when_a_real_run_would_start(tmp_path, tiny_benchmark, monkeypatch, capsys):
    import torch

    from study_helpers import study_table, write_study_file

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    path = write_study_file(tmp_path / "s.toml", study_table(tiny_benchmark))
    argv = ["study", "run", str(path), "--dry-run", "--storage", str(tmp_path / "studies")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "all pre-launch checks passed" in out and _problems(out) == []
    assert "this machine: 1 node" in out and "checkpoints: about" in out
    # the same resources the real run checks: a whole GPU on a machine without one fails the dry run
    assert main([*argv, "resources.gpu=1"]) == 2
    out = capsys.readouterr().out
    assert _problems(out) == ["1. resources.gpu = 1 but this machine has no GPU; fix: resources.gpu=0 (CPU trials), "
                              "or --address a Ray cluster with GPUs"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main([*argv, "resources.gpu=1"]) == 0
    capsys.readouterr()
    # an existing study directory: the dry run still shows everything and says why a real run would refuse
    home = tmp_path / "studies" / "tiny"
    home.mkdir(parents=True)
    (home / "keep.txt").write_text("mine")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == "" and "space (each trial samples)" in captured.out
    assert _problems(captured.out) == [f"1. study directory {home} exists (a real run never overwrites a study); "
                                       "fix: dastudy study resume tiny, or --name ANOTHER"]
    assert sorted(p.name for p in home.iterdir()) == ["keep.txt"]


def test_dry_run_checks_the_cluster_of_address(tmp_path, tiny_benchmark, monkeypatch, capsys):
    """With --address the dry run asks that cluster (connects, disconnects) instead of this machine."""
    import contextlib

    import torch

    import study.config.resources
    import study.run.tuner
    from study.config.resources import NodeInfo
    from study_helpers import study_table, write_study_file

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    connected = []

    @contextlib.contextmanager
    def session(*, address=None, num_cpus=None, num_gpus=None):
        connected.append(address)
        yield None

    gpus = {"n": 2.0}
    monkeypatch.setattr(study.run.tuner, "ray_session", session)
    monkeypatch.setattr(study.config.resources, "cluster_nodes",
                        lambda: [NodeInfo("a" * 8, "10.0.0.2", cpu=16.0, gpu=gpus["n"])])
    path = write_study_file(tmp_path / "s.toml", study_table(tiny_benchmark))
    argv = ["study", "run", str(path), "--dry-run", "--storage", str(tmp_path / "studies"), "resources.gpu=0.5"]
    assert main([*argv, "--address", "10.0.0.2:6379"]) == 0
    out = capsys.readouterr().out
    assert connected == ["10.0.0.2:6379"] and "cluster 10.0.0.2:6379: 1 node, 16 CPU, 2 GPU" in out
    assert "the cluster at 10.0.0.2:6379: 4 trial(s) fit at once" in out
    gpus["n"] = 0.0
    assert main([*argv, "--address", "10.0.0.2:6379"]) == 2
    assert "resources.gpu = 0.5 but the cluster at 10.0.0.2:6379 has no GPU" in capsys.readouterr().out
    assert main(argv) == 2  # without --address: this machine, which has no GPU
    assert "but this machine has no GPU" in capsys.readouterr().out
    # two nodes: the storage must be visible on both (probed as the real run probes it, once it exists)
    gpus["n"] = 2.0
    monkeypatch.setattr(study.config.resources, "cluster_nodes", lambda: [NodeInfo("a" * 8, "10.0.0.2", 16.0, 2.0),
                                                                   NodeInfo("b" * 8, "10.0.0.3", 16.0, 2.0)])
    monkeypatch.setattr(study.config.resources, "probe_storage_visibility",
                        lambda path, nodes: {"a" * 8: True, "b" * 8: False})
    (tmp_path / "studies").mkdir()
    assert main([*argv, "--address", "10.0.0.2:6379"]) == 2
    assert (f"storage {tmp_path / 'studies'} is not visible on every node of the cluster at 10.0.0.2:6379; fix: "
            "--storage on a filesystem every node mounts") in capsys.readouterr().out
    # no cluster there: a problem, not a pass

    @contextlib.contextmanager
    def unreachable(**kwargs):
        raise ConnectionError("could not connect")
        yield

    monkeypatch.setattr(study.run.tuner, "ray_session", unreachable)
    assert main([*argv, "--address", "10.0.0.9:6379"]) == 2
    assert "no Ray cluster answers at 10.0.0.9:6379 (ConnectionError); fix: start it" in capsys.readouterr().out


def test_real_run_raises_the_dry_runs_first_problem(tmp_path, monkeypatch):
    """check_study (the real run's pre-Ray check) and the dry run's list are one code path."""
    from study.config.preflight import check_study, diagnose
    from study.config.study_config import load_study_config
    from trainables.config import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    study = load_study_config("lambda_sensitivity")
    _, problems = diagnose(study)
    assert len(problems) == 6  # two weights, two checkpoints, two datasets
    with pytest.raises(ConfigError) as info:
        check_study(study)
    assert str(info.value) == str(problems[0].error)
    assert "search.params.weights.deeplabv2_resnet101" in str(info.value)


def test_a_real_run_with_several_problems_points_to_the_dry_run(bare, capsys):
    """The real run counts the problems the dry run lists, the local GPUs included (it checked them only after Ray
    had started: 6 problems against the dry run's 7 on a machine without a GPU)."""
    assert main(["study", "run", "lambda_sensitivity", "--storage", str(bare / "studies"), "--dry-run"]) == 2
    listed = re.search(r"(\d+) problem\(s\); a real run would not start", capsys.readouterr().out)
    assert int(listed.group(1)) == 7  # two weights, two checkpoints, two datasets, and no GPU here
    assert main(["study", "run", "lambda_sensitivity", "--storage", str(bare / "studies")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"{listed.group(1)} problems stop this study; `dastudy study run ... --dry-run` lists each "
                      "with the command that fixes it. The first:")
    assert len(err) == 2 and "search.params.weights.deeplabv2_resnet101 = 'deeplab_init'" in err[1]
    assert not (bare / "studies").exists()


def test_a_real_run_asking_for_a_gpu_this_machine_lacks_stops_before_ray(bare, tiny_benchmark, capsys):
    from study_helpers import study_table, write_study_file

    path = write_study_file(bare / "s.toml", study_table(tiny_benchmark))
    assert main(["study", "run", str(path), "resources.gpu=1", "--storage", str(bare / "studies")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GPU" in err[0], err  # one line, before Ray (the fixture refuses ray.init)
    assert not (bare / "studies").exists()


# ---------------------------------------------------------------------------------------------------------
# overrides the space would overwrite


@pytest.mark.parametrize("preset, override, names", [
    ("demo", "train.optim.lr=1e-3", ("as lr: log-uniform [0.002, 0.05]", "search.params.lr_low",
                                     "search.params.lr_high")),
    ("demo", "train.adapt.lambda_adv_main=0.01", ("as lambda_adv: log-uniform", "search.params.lambda_low")),
    ("lambda_sensitivity", "train.runtime.seed=4", ("as seed: one of 1, 2, 3", "search.params.seeds")),
    ("lr_backbone", "train.model.name=deeplabv2_tiny", ("search.params.models",)),
])
def test_an_override_the_space_would_ignore_is_refused(preset, override, names, tmp_path, capsys):
    code = main(["study", "run", preset, override, "--dry-run", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{override} would be ignored" in err
    for name in names:
        assert name in err


def test_an_override_the_space_leaves_alone_is_kept(tiny_benchmark, tmp_path):
    from study.config.preflight import check_overrides_apply
    from study.config.study_config import load_study_config
    from study_helpers import study_table, write_study_file

    path = write_study_file(tmp_path / "s.toml", study_table(tiny_benchmark))
    for override in ("train.optim.momentum=0.8", "num_samples=2", "search.params.lr_low=0.003"):
        study = load_study_config(path, [override])
        check_overrides_apply(study, [override], source=str(path))
    # a key only some branches set (lr_backbone: multi_level is forced off for DeepLabV3+ only) is kept
    study = load_study_config("lr_backbone", ["train.model.multi_level=true"])
    check_overrides_apply(study, ["train.model.multi_level=true"], source="lr_backbone")


def test_every_key_a_shipped_space_samples_names_its_search_params():
    from study.config.preflight import SPACE_KNOBS
    from study.config.spaces import SPACES, describe_space

    for name, space in SPACES.items():
        described = describe_space(space, dict(space.params), sampler="tpe")
        for dims in described["dimensions"].values():
            for d in dims:
                knobs = SPACE_KNOBS.get(d["applies_to"], ())
                assert any(k in space.params for k in knobs), (name, d["applies_to"])


# ---------------------------------------------------------------------------------------------------------
# every command the presets and docs tell the user to run


PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]+$|…|\.\.\.|^<|^\[|/NAME/|HEAD_IP")


def _doc_commands() -> list[tuple[str, str]]:
    """``dastudy ...`` commands as written: fenced code lines and inline code in README/docs, comment lines and
    inline code in the shipped presets and configs, inline code in the messages and help of the sources."""
    found: list[tuple[str, str]] = []
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "study" / "presets").glob("*.toml")), *sorted((REPO / "study" / "configs").glob("*.toml")),
             *(path for package in ("study", "trainables", "data", "models")  # messages that name a command
               for path in sorted((REPO / package).rglob("*.py")))]
    for path in files:
        text = path.read_text()
        where = str(path.relative_to(REPO))
        # an f-string's {placeholders} or a string split over lines is a message template, not a command line
        spans = [span for span in re.findall(r"`(dastudy [^`]+)`", text) if "{" not in span and "\n" not in span]
        in_block = False
        for line in text.splitlines():
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            stripped = line.strip().lstrip("#$ ").strip()
            if (in_block or path.suffix == ".toml") and stripped.startswith("dastudy "):
                spans.append(stripped)
        for span in spans:
            for command in span.split("&&"):
                command = command.split(" #")[0].split(" |")[0].strip().rstrip("\\").strip()
                if command.startswith("dastudy "):
                    found.append((where, command))
    return found


def _is_mention(words: list[str]) -> bool:
    """`dastudy study report` or `dastudy evaluate --protocol` in prose names a command or option, it is not a
    command line: only command names and bare options, nothing to run."""
    import argparse

    parser, rest = get_parser(), list(words)
    while rest:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or rest[0] not in subs[0].choices:
            break
        parser = subs[0].choices[rest.pop(0)]
    return all(w.startswith("--") and w != "--help" for w in rest)


def _parses(argv: list[str]) -> None:
    """The command line is accepted by dastudy's parser, and a shipped config or preset it names exists."""
    from study.config.files import resolve_named_file

    parser = get_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item]
    assert not stray, f"dastudy {' '.join(argv)}: not understood: {stray}"
    config = getattr(args, "config", None)
    if isinstance(config, str) and not config.endswith(".toml"):
        resolve_named_file(config, "configs")  # FileNotFoundError names what exists
    preset = getattr(args, "preset", None)
    if getattr(args, "study_command", None) == "run" and preset and not preset.endswith(".toml"):
        from study.config.study_config import load_study_config
        from study.commands.study import _run_options, split_overrides

        split = split_overrides(args, _run_options)
        load_study_config(preset, split.overrides)


def _runnable_here(words: list[str]) -> bool:
    """Doc commands that need no dataset, weights, GPU or study, and take a second: run, not only parsed."""
    if not words or any(PLACEHOLDER.search(w) or "|" in w or w.endswith(":") for w in words):
        return False
    if words[-1] in ("--help", "--version") and not any(w.startswith("--") for w in words[:-1]):
        return True
    if words[:2] == ["config", "show"]:  # a shipped config by name (a user's own file is an example)
        return len(words) > 2 and not words[2].endswith(".toml")
    return words[0] == "models" or words[:2] in (["config", "list"], ["study", "presets"]) or (
        words[:2] == ["study", "run"] and "--dry-run" in words)


def test_commands_that_need_nothing_run_as_written(tmp_path, monkeypatch, capsys):
    """Run every distinct doc or preset command that needs no data (help, model and config listings, `config show`,
    `study presets`, dry runs): exit 0 (a dry run: 0, or 2 with its problems listed after the plan), no traceback."""
    import ray

    from study.cli import main

    def refused(*args, **kwargs):
        raise AssertionError("a command of this kind must not start Ray")

    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.chdir(tmp_path)  # a bare folder: no datasets, weights or studies
    monkeypatch.setenv("DASTUDY_STORAGE", str(tmp_path / "studies"))
    commands = sorted({shlex.join(words) for _, command in _doc_commands()
                       if _runnable_here(words := shlex.split(command.replace("$s", "1"))[1:])})
    assert len(commands) >= 8, commands
    failures = []
    for command in commands:
        words = shlex.split(command)
        try:
            code = main(words)
        except SystemExit as err:  # argparse's --help and --version
            code = err.code
        captured = capsys.readouterr()
        output = captured.out + captured.err
        dry = "--dry-run" in words
        if code not in ((0, 2) if dry else (0,)) or "Traceback" in output or (
                dry and code == 2 and "problem(s); a real run would not start" not in output):
            failures.append(f"dastudy {command}: exit {code}: {output[-600:]}")
    assert failures == [], "\n".join(failures)
    print(f"{len(commands)} commands ran:", *commands, sep="\n  ")
    assert not (tmp_path / "studies").exists()  # none of them created a study


def test_commands_in_presets_and_docs_work_as_written(capsys):
    commands = _doc_commands()
    assert len(commands) > 40
    checked, failures = 0, []
    for where, command in commands:
        words = shlex.split(command.replace("$s", "1"))[1:]
        if (not words or any(PLACEHOLDER.search(w) or w in ("/", "or") or "|" in w or w.endswith(":")
                             for w in words) or "/" in words[0] or _is_mention(words)):
            continue  # a pattern (run PRESET_OR_FILE, resume/status NAME, a quoted error), not a command line
        checked += 1
        try:
            _parses(words)
        except SystemExit as err:
            message = capsys.readouterr().err.strip()
            # --help exits 0; `dastudy study report --format latex` in prose names an option of a command whose
            # positional it leaves out: the command and its options were still checked (argparse stops at an
            # unknown command or option first)
            if err.code and "the following arguments are required" not in message:
                failures.append(f"{where}: {command}: exit {err.code}: {message}")
        except Exception as err:  # noqa: BLE001 -- every failure is listed, not just the first
            failures.append(f"{where}: {command}: {type(err).__name__}: {err}")
    assert failures == []
    assert checked > 30

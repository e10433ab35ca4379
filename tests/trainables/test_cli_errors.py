"""User and environment errors through the CLI: one line on stderr naming the file, key or value, exit code 2;
a traceback only under ``dastudy --debug`` (issue 11 listed each of these as a traceback or a misleading line)."""
from __future__ import annotations

import errno
import socket

import pytest

from study.cli import main

SMALL = ["data.source.size=[64, 32]", "data.target.size=[64, 32]", "data.val.size=[64, 32]", "optim.batch_size=2",
         "optim.iter_max=4", "optim.iter_stop=1", "eval.interval=1", "eval.holdout_size=4", "eval.max_images=2",
         "runtime.log_interval=1", "runtime.device=cpu"]


@pytest.fixture
def workdir(tiny_benchmark, tmp_path, monkeypatch):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "synth").symlink_to(tiny_benchmark)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dastudy"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_non_utf8_toml_names_the_file(workdir, capsys):
    (workdir / "latin.toml").write_bytes('name = "café"\n'.encode("latin-1"))
    assert main(["train-source", "latin.toml"]) == 2
    one_line_error(capsys, "latin.toml", "UTF-8")


def test_huge_seed_is_a_config_error(workdir, capsys):
    assert main(["train-source", "synth_source", *SMALL, "runtime.seed=1e23", "--out", "r"]) == 2
    one_line_error(capsys, "runtime.seed", "2**63-1")
    assert not (workdir / "r").exists()


def test_batch_larger_than_the_dataset_names_the_key(workdir, capsys, tiny_benchmark):
    assert main(["train-source", "synth_source", *SMALL, "optim.batch_size=500", "--out", "r"]) == 2
    one_line_error(capsys, "optim.batch_size = 500", "data.source", "items")
    assert not (workdir / "r").exists()


def test_input_size_that_cannot_fit_in_memory_is_refused_before_anything_is_built(workdir, capsys, monkeypatch):
    import trainables.builders as builders

    built = []
    monkeypatch.setattr(builders, "build_segmentation_model", lambda *a, **k: built.append(1))
    assert main(["train-source", "synth_source", *SMALL, "data.source.size=[100000, 100000]", "--out", "r"]) == 2
    one_line_error(capsys, "data.source.size = [100000, 100000]", "GB are available")
    assert not built and not (workdir / "r").exists()
    # and through the engine (as a trial runs it), with the available memory faked small
    from trainables.config import ConfigError
    from trainables.engine import run_training
    from study.config.files import load_train_config

    cfg = load_train_config("synth_source", SMALL)
    monkeypatch.setattr(builders, "available_bytes", lambda device: 1000)
    with pytest.raises(ConfigError, match=r"data.source.size = \[64, 32\]"):
        run_training(cfg, workdir / "r2")
    assert not built and not (workdir / "r2").exists()


@pytest.mark.parametrize("kind", ["text", "directory"])
def test_checkpoint_that_is_a_text_file_or_a_directory_says_so(workdir, capsys, kind):
    path = workdir / ("notes.txt" if kind == "text" else "somedir")
    if kind == "text":
        path.write_text("hello world\n")
        expected = "it is a text file (first line 'hello world')"
    else:
        path.mkdir()
        expected = "is a directory"
    assert main(["evaluate", "synth_source", *SMALL, "--checkpoint", str(path)]) == 2
    one_line_error(capsys, str(path), expected)
    assert main(["train-source", "synth_source", *SMALL, "--out", "r", "--resume-from", str(path)]) == 2
    one_line_error(capsys, str(path), expected)
    assert main(["adapt", "synth_adapt", *SMALL, "--out", "r", f'model.init_checkpoint="{path}"']) == 2
    one_line_error(capsys, str(path), expected)


@pytest.mark.parametrize("code, needle", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system"),
                                          (errno.ENOSPC, "no space left")])
def test_environment_errors_are_one_line_and_debug_shows_the_traceback(workdir, capsys, monkeypatch, code, needle):
    import trainables.rundir as rundir

    def refuse(run_dir, **kwargs):
        raise OSError(code, "from the test", str(workdir / "r" / "config.toml"))

    monkeypatch.setattr("trainables.engine.prepare_run_dir", refuse)
    assert main(["train-source", "synth_source", *SMALL, "--out", "r"]) == 2
    one_line_error(capsys, str(workdir / "r" / "config.toml"), needle)
    assert main(["--debug", "train-source", "synth_source", *SMALL, "--out", "r"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("dastudy: error:")
    assert rundir.prepare_run_dir is not refuse  # only the engine's reference was replaced


def test_permission_error_reading_a_config_names_it(workdir, capsys, monkeypatch):
    import builtins

    real_open = builtins.open

    def guarded(file, *args, **kwargs):  # root reads any file: refuse this one as a non-root user would see it
        if str(file).endswith("locked.toml"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    (workdir / "locked.toml").write_text('extends = "synth_source"\n')
    monkeypatch.setattr(builtins, "open", guarded)
    assert main(["train-source", "locked.toml"]) == 2
    one_line_error(capsys, "locked.toml", "permission denied")


def test_a_bug_still_shows_its_traceback(monkeypatch):
    import study.commands.data as data_commands

    monkeypatch.setattr(data_commands, "_check", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["data", "check", ".", "--dataset", "synthia"])


@pytest.mark.parametrize("argv, needle", [
    (["data", "synth", "x", "--target-size", "0x0"], "argument --target-size: '0x0': width and height must be in 16..4096"),
    (["data", "synth", "x", "--num-source", "-5"], "argument --num-source: -5 is not allowed; use a whole number >= 1"),
    (["train-source", "synth_source", "--out", "r", "--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_usage_errors_are_one_line(workdir, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    one_line_error(capsys, needle)
    assert not (workdir / "x").exists()


def test_overrides_after_out_are_accepted_like_study_run(workdir, capsys):
    assert main(["train-source", "synth_source", "--out", "runs/r", *SMALL, "name=late"]) == 0
    assert 'name = "late"' in (workdir / "runs/r/config.toml").read_text()


def test_host_that_is_not_this_machines_address_is_not_called_port_in_use():
    from study.view.tensorboard import TensorBoardError, port_is_free

    with pytest.raises(TensorBoardError, match=r"--host 192\.0\.2\.1: not an address of this machine"):
        port_is_free("192.0.2.1", 6006)  # TEST-NET-1 (RFC 5737): assigned to no machine
    with pytest.raises(TensorBoardError, match="not an address of this machine"):
        port_is_free("no-such-host.invalid", 6006)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert port_is_free("127.0.0.1", busy.getsockname()[1]) is False  # a real port in use is still that

"""The command line as a whole: every option explains itself, --version, --json listings, "did you mean"."""
from __future__ import annotations

import argparse
import json
import re

import pytest

from study.cli import get_parser, main


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("dastudy",)):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + (name,), "(the command itself)", helps.get(name)
                yield from _walk(sub, path + (name,))
        elif not isinstance(action, argparse._HelpAction):
            yield path, "/".join(action.option_strings) or action.dest, action.help


def test_every_command_option_and_argument_has_help():
    seen = list(_walk(get_parser()))
    assert len(seen) > 40  # the walk reaches the nested subcommands (study run, config show, data synth, ...)
    missing = [f"{' '.join(path)} {name}" for path, name, text in seen
               if not text or text == argparse.SUPPRESS or not text.strip()]
    assert missing == []


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dastudy {version('dastudy')}"


@pytest.mark.parametrize("argv, check", [
    (["models", "--json"], lambda rows: {"deeplabv2_resnet101", "fc_discriminator"} <= {r["name"] for r in rows}
     and all(isinstance(r["params_16"], int) and r["params_16"] > 0 for r in rows)),
    (["models", "--kind", "discriminator", "--json"], lambda rows: {r["kind"] for r in rows} == {"discriminator"}),
    (["config", "list", "--json"], lambda rows: {"synth_source", "synth_adapt"} <= {r["name"] for r in rows}
     and {r["mode"] for r in rows if r["name"] == "synth_source"} == {"source_only"}),
    (["study", "presets", "--json"], lambda out: {"demo", "lambda_sensitivity"} <= {p["name"] for p in out["presets"]}
     and {"lambda_lr"} <= {s["name"] for s in out["spaces"]}
     and next(s for s in out["spaces"] if s["name"] == "lambda_adv")["params"]["lambda_low"] == 1e-4),
])
def test_json_listings_parse_and_hold_the_table(argv, check, capsys):
    assert main(argv) == 0
    assert check(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize("argv, hint", [
    (["config", "show", "synth_adapt", "optim.lrr=0.1"], "did you mean 'optim.lr'?"),
    (["config", "show", "synth_adapt", "adapt.lamda_adv_main=0.1"], "did you mean 'adapt.lambda_adv_main'?"),
    (["study", "run", "demo", "nmu_samples=2", "--dry-run"], "did you mean 'num_samples'?"),
    (["study", "run", "demo", "search.params.lamda_low=0.001", "--dry-run"], "did you mean 'lambda_low'?"),
    (["study", "run", "demo", "train.optim.btach_size=2", "--dry-run"], "did you mean 'train.optim.batch_size'?"),
])
def test_mistyped_keys_get_a_did_you_mean(argv, hint, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hint in err


@pytest.mark.parametrize("argv, hint", [
    (["study", "run", "demo", "--dryrun"], "'--dryrun' is neither an option nor an override KEY=VALUE "
                                           "(did you mean '--dry-run'?)"),
    (["study", "run", "demo", "--dry-run", "--nmae", "x"], "did you mean '--name'?"),
    (["study", "status", "x", "--jsn"], "unrecognized arguments: --jsn (did you mean '--json'?)"),
])
def test_mistyped_options_get_a_did_you_mean(argv, hint, capsys):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hint in err, err


def _exit_code(argv: list[str]) -> int:
    """main's return value, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as stopped:
        return int(stopped.code)


@pytest.mark.parametrize("argv, required", [
    (["study", "run"], "PRESET_OR_FILE"),  # the overrides are optional: not "PRESET_OR_FILE, KEY=VALUE"
    (["train-source"], "config"),  # not "config, overrides"
    (["evaluate"], "config, --checkpoint"),
])
def test_missing_arguments_name_only_what_is_required(argv, required, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2
    assert err.split("the following arguments are required: ")[1].split(" (see")[0] == required, err


def test_a_toml_syntax_error_reads_as_one(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[search\nspace = "lambda_lr"\n')
    for argv in (["study", "run", str(bad), "--dry-run"], ["config", "show", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"dastudy: error: {bad}:2:8: not valid TOML: Expected ']' at the end of a table declaration"


def test_storage_variables_are_named_the_same_everywhere(capsys):
    """--storage is $DASTUDY_STORAGE in every command; $DASTUDY_HOME (an object-store study's local files) is
    explained wherever it is named."""
    helps = {}
    for action in ("run", "resume", "status", "report", "tensorboard"):
        with pytest.raises(SystemExit):
            main(["study", action, "--help"])
        helps[action] = " ".join(capsys.readouterr().out.split())
    for action, text in helps.items():
        assert "--storage PATH where studies live (default: $DASTUDY_STORAGE or ./studies;" in text, action
        for mention in re.finditer(r"\$DASTUDY_HOME", text):
            assert "default ./studies" in text[mention.start():mention.start() + 120], (action, text)
    assert "$DASTUDY_HOME/NAME, which must not exist yet ($DASTUDY_HOME, default ./studies, is where object-store " \
           "studies keep their local files" in helps["resume"]

"""The ``dastudy`` console script.

Each subcommand lives in a small module of :mod:`study.commands` exposing ``register(subparsers)``; heavy
imports (torch, Ray) happen inside the command functions so that ``dastudy --help`` stays fast.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import sys
import traceback

from study.errors import UserError

# Order = order in --help.
COMMAND_MODULES = ("demo", "study", "train", "data", "config", "models")


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line naming the option and value, plus where to read more (not the whole usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {self._explain(message)} (see `{self.prog} --help`)\n")

    def _explain(self, message: str) -> str:
        required = "the following arguments are required: "
        if message.startswith(required):
            # argparse lists optional positionals too (`study run` said "PRESET_OR_FILE, KEY=VALUE" although
            # overrides are optional): only what must be given
            optional = {a.metavar or a.dest for a in self._actions
                        if not a.option_strings and a.nargs in ("*", "?", argparse.REMAINDER)}
            names = [n for n in message[len(required):].split(", ") if n not in optional]
            if names:
                return required + ", ".join(names)
        unknown = "unrecognized arguments: "
        if message.startswith(unknown):
            hints = [f"{word} (did you mean {match!r}?)" if match else word
                     for word in message[len(unknown):].split() for match in [did_you_mean(word, self)]]
            return unknown + " ".join(hints)
        return message


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every --option of ``parser`` and of the subcommands below it."""
    out: list[str] = []
    for action in parser._actions:  # argparse keeps its actions here; there is no public accessor
        out += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += option_strings(sub)
    return sorted(set(out))


def did_you_mean(word: str, parser: argparse.ArgumentParser) -> str | None:
    """The known --option closest to a mistyped one (``--dryrun`` -> ``--dry-run``), or None."""
    import difflib

    if not word.startswith("--"):
        return None
    close = difflib.get_close_matches(word.split("=", 1)[0], option_strings(parser), n=1, cutoff=0.75)
    return close[0] if close else None


def get_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dastudy",
        description="Hyperparameter studies for adversarial domain adaptation in semantic segmentation "
                    "(AdaptSegNet on DeepLabV2/V3+), on Ray Tune + Optuna with ASHA and fractional GPUs.",
        epilog="Start with `dastudy demo` (synthetic benchmark, CPU, minutes). "
               "`dastudy COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"dastudy {_version()}",
                        help="print dastudy's version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the full Python traceback of an error (user errors are one line without it)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"study.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dastudy")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a positional list at the first option: overrides given after --out arrive here
    # (`dastudy train-source CONFIG --out RUN optim.lr=1e-3`, the order `study run` accepts too).
    overrides = getattr(args, "overrides", None)
    stray = [item for item in extra if item.startswith("-") or "=" not in item]
    if extra and isinstance(overrides, list) and not stray:
        args.overrides = overrides + extra
    elif extra:
        parser.parse_args(argv)  # argparse's own one-line message for what it did not recognise
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dastudy study status BIG | head`: the reader left; that is not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would raise again
        return 0
    except Exception as err:  # the except expression is evaluated only when something was raised
        message = user_message(err)
        if message is None:
            raise  # a bug: the traceback is what the report needs
        if debug:
            traceback.print_exc()
        print(f"dastudy: error: {message}", file=sys.stderr)
        return 2


# OSErrors that are the machine's or the user's state, not a bug: one line with the path and what to do.
_OS_HINTS = {
    errno.EACCES: "permission denied (check the file's owner and mode, or choose another path)",
    errno.EPERM: "operation not permitted (check the file's owner and mode, or choose another path)",
    errno.EROFS: "read-only file system (choose a writable --out / --storage)",
    errno.ENOSPC: "no space left on the device (free space, then resume)",
    errno.EDQUOT: "disk quota exceeded (free space, then resume)",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory, not a file",
    errno.ENOTDIR: "is not a directory",
    errno.EADDRNOTAVAIL: "this address does not belong to this machine (use 127.0.0.1 or one of its addresses)",
}


def user_message(err: BaseException) -> str | None:
    """The one-line message for an error that is the user's input or the machine's state; None for a bug."""
    if isinstance(err, UserError) or isinstance(err, user_errors()):
        return str(err)
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
    if isinstance(err, OSError) and err.errno in _OS_HINTS:
        where = err.filename if err.filename is not None else ""
        if err.filename2 is not None:
            where = f"{where} -> {err.filename2}"
        return f"{where}: {_OS_HINTS[err.errno]}" if where else f"{_OS_HINTS[err.errno]} ({err})"
    return None


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's input at fault (printed as one line, exit code 2)."""
    from trainables.config import ConfigError

    kinds: list[type[BaseException]] = [ConfigError, FileNotFoundError, FileExistsError]
    for module, name in (("data", "DatasetError"), ("models", "WeightsError"), ("trainables", "CheckpointError")):
        try:
            kinds.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(kinds)


if __name__ == "__main__":
    sys.exit(main())

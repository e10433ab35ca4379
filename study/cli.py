"""The ``dastudy`` console script.

Each subcommand lives in a small module of :mod:`study.commands` exposing ``register(subparsers)``; heavy
imports (torch, Ray) happen inside the command functions so that ``dastudy --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# Order = order in --help.
COMMAND_MODULES = ("demo", "study", "train", "data", "config", "models")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dastudy",
        description="Hyperparameter studies for adversarial domain adaptation in semantic segmentation "
                    "(AdaptSegNet on DeepLabV2/V3+), on Ray Tune + Optuna with ASHA and fractional GPUs.",
        epilog="Start with `dastudy demo` (synthetic benchmark, CPU, minutes). "
               "`dastudy COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"dastudy {_version()}",
                        help="print dastudy's version and exit")
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
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as err:
        print(f"dastudy: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the except expression is evaluated only when something was raised
        if isinstance(err, user_errors()):
            print(f"dastudy: error: {err}", file=sys.stderr)
            return 2
        raise


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


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

"""Every project exception survives pickle (Ray sends a trial's exception to the driver that way) and
copy/deepcopy with its type, message and fields. The classes are found by walking the packages, so a new
exception with a multi-argument ``__init__`` and no ``__reduce__`` fails here (issue 11: a ConfigError in a trial
reached the report as ``TypeError: ConfigError.__init__() missing 3 required positional arguments``)."""
from __future__ import annotations

import copy
import importlib
import inspect
import pickle
import pkgutil
from typing import Any

import pytest

PACKAGES = ("study", "trainables", "models", "data")


def project_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == info.name:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[name] for name in sorted(found)]


EXCEPTIONS = project_exceptions()


def sample_value(parameter: inspect.Parameter) -> Any:
    """A distinct value of the annotated type, so that a field swapped or dropped on the way is seen."""
    annotation = str(parameter.annotation)
    if "int" in annotation and "str" not in annotation:
        return 17
    if "float" in annotation:
        return 2.5
    if "Path" in annotation:
        return f"/some/{parameter.name}"
    return f"<{parameter.name}>"


def instance(cls: type[BaseException]) -> BaseException:
    try:
        signature = inspect.signature(cls)
    except ValueError:  # no Python __init__ of its own: BaseException's (*args)
        signature = inspect.Signature()
    parameters = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if not parameters:  # Exception's own (*args): one message
        return cls("a message naming the file, key and value")
    return cls(*[sample_value(p) for p in parameters])


def test_the_walk_finds_the_known_exceptions():
    names = {cls.__name__ for cls in EXCEPTIONS}
    assert {"ConfigError", "TrainingDiverged", "DatasetError", "CheckpointError", "UserError"} <= names
    assert len(EXCEPTIONS) >= 10


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
@pytest.mark.parametrize("how", ["pickle", "copy", "deepcopy"])
def test_exception_round_trips_with_its_message(cls, how):
    error = instance(cls)
    if how == "pickle":
        again = pickle.loads(pickle.dumps(error))
    else:
        again = getattr(copy, how)(error)
    assert type(again) is cls
    assert str(again) == str(error) and str(error)
    assert again.args == error.args
    assert vars(again) == vars(error)


def test_config_error_and_divergence_keep_their_fields_through_pickle():
    from trainables.config import ConfigError
    from trainables.engine import TrainingDiverged

    error = pickle.loads(pickle.dumps(ConfigError("run.toml", "optim.lr", -1.0, "a float > 0")))
    assert (error.source, error.key, error.value, error.allowed) == ("run.toml", "optim.lr", -1.0, "a float > 0")
    assert str(error) == "run.toml: optim.lr = -1.0 is not valid; allowed: a float > 0"
    diverged = copy.deepcopy(TrainingDiverged(12, "loss/seg", float("inf"), "the logits are Inf"))
    assert (diverged.iteration, diverged.name, diverged.detail) == (12, "loss/seg", "the logits are Inf")
    assert str(diverged) == "diverged at iteration 12 (loss/seg = inf): the logits are Inf"

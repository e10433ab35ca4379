"""The module paths of the flat ``study/`` layout (before config/, state/, run/, report/, view/), still importable.

Ray pickles a study's searcher, schedulers, callbacks and trial records with their classes' module paths into the
study directory (``tuner.pkl``, ``experiment_state-*.json``, ``search_gen_state-*.json``). A study started before
the regrouping names ``study.search.StudySearch``, ``study.replicates.ReplicateASHA`` and so on; to resume it, each
old path resolves to its module's new home, which is the same module object (one class, not a copy). New studies
pickle the new paths. tests/study/test_layers.py unpickles a study written by the flat layout
(tests/study/fixtures/pre_layers_study.tar.gz).

The finder imports nothing until an old path is asked for, so ``import study`` stays free.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

__all__ = ["OLD_PATHS", "install"]

OLD_PATHS = {
    "study.study_config": "study.config.study_config", "study.spaces": "study.config.spaces",
    "study.storage_urls": "study.config.storage_urls", "study.preflight": "study.config.preflight",
    "study.resources": "study.config.resources", "study.labels": "study.config.labels",
    "study.location": "study.state.location", "study.atomic_fs": "study.state.atomic_fs",
    "study.journal": "study.state.journal", "study.lock": "study.state.lock", "study.lease": "study.state.lease",
    "study.driver_files": "study.state.driver_files",
    "study.tuner": "study.run.tuner", "study.search": "study.run.search", "study.replicates": "study.run.replicates",
    "study.snapshots": "study.run.snapshots", "study.storage": "study.run.storage",
    "study.autoscale": "study.run.autoscale", "study.pbt": "study.run.pbt", "study.pbt_ray": "study.run.pbt_ray",
    "study.progress": "study.run.progress", "study.interrupts": "study.run.interrupts",
    "study.agreement": "study.report.agreement", "study.agreement_stats": "study.report.agreement_stats",
    "study.tensorboard": "study.view.tensorboard",
}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self._specs: dict[str, object] = {}

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in OLD_PATHS:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {OLD_PATHS[spec.name]}", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(OLD_PATHS[spec.name])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # importlib has just set the alias's spec on the real module: give it back its own (reload, -m use it)
        module.__spec__ = self._specs[module.__name__]


def install() -> None:
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())  # last: a real module of that name (none today) would win

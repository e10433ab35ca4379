"""A study's Optuna storage, wherever its ``search.storage`` says it lives: the repairing journal in the study
directory by default (study/state/journal.py), a ``.journal`` path, SQLite or PostgreSQL. Optuna is imported
when a storage is opened, not before (``dastudy --help`` and the config checks do not need it)."""
from __future__ import annotations

from pathlib import Path

from study.config.storage_urls import connect_url
from study.config.study_config import StudyConfig
from study.state.journal import RepairingJournalBackend

__all__ = ["optuna_storage"]


def optuna_storage(study: StudyConfig, home: Path):
    """The study's Optuna storage: a journal file in the study directory (NFS-safe, no server) by default, or the
    URL in ``search.storage`` (``sqlite:///...``, ``postgresql://...``, or a path to a ``.journal`` file)."""
    import optuna
    from optuna.storages import JournalStorage

    url = connect_url(study.search.storage)  # a password goes to the environment, never into pickled state
    if url is None or url.endswith(".journal"):
        path = home / "optuna.journal" if url is None else Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(RepairingJournalBackend(path))  # whole records or none (disk full, kill)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)

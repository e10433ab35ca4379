"""The study's Optuna journal stays readable through a full disk: a failed append leaves no trace, a torn journal
(from Optuna's own writer) is repaired on open, and nothing that was recorded is lost (study/state/journal.py)."""
from __future__ import annotations

import errno
import json
import os

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from study.state import journal as journal_module
from study.state.journal import RepairingJournalBackend, repair_journal

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(path, name="j"):
    return optuna.create_study(study_name=name, storage=JournalStorage(RepairingJournalBackend(path)),
                               load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=0))


def _fill(study, n):
    for _ in range(n):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))


def _whole(path) -> bool:
    data = path.read_bytes()
    return data.endswith(b"\n") and all(isinstance(json.loads(line), dict) for line in data.splitlines())


def test_an_append_that_hits_a_full_disk_leaves_the_journal_whole(tmp_path, monkeypatch):
    path = tmp_path / "optuna.journal"
    study = _study(path)
    _fill(study, 3)
    before = path.read_bytes()
    real_write = os.write
    budget = {"bytes": 5000}

    def disk(fd, data):  # a disk with 5000 bytes left: a partial write, then ENOSPC (as on a full tmpfs)
        if budget["bytes"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data[:budget["bytes"]]))
        budget["bytes"] -= n
        return n

    monkeypatch.setattr(journal_module.os, "write", disk)
    trial = study.ask()
    with pytest.raises(OSError, match="No space"):
        trial.set_user_attr("big", "x" * 20000)  # one record larger than the space left
    assert _whole(path) and path.read_bytes().startswith(before)
    monkeypatch.setattr(journal_module.os, "write", real_write)  # space is back

    # a new driver and `study status` read it; nothing recorded is lost, writing goes on
    again = _study(path)
    assert [t.state.name for t in again.trials] == ["COMPLETE"] * 3 + ["RUNNING"]
    again.tell(again.trials[-1].number, 0.5)
    _fill(again, 1)
    assert [t.state.name for t in _study(path).trials] == ["COMPLETE"] * 5


def test_a_journal_torn_by_optunas_own_writer_is_repaired_on_open(tmp_path):
    """Optuna's JournalFileBackend left the torn record and glued the next append to it; every read then failed
    with JSONDecodeError (issue 11: `study resume` and `study status` crashed for good)."""
    path = tmp_path / "optuna.journal"
    _fill(_study(path), 2)
    whole = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b'{"op_code":4,"worker_id":"torn-by-a-full-d')  # a write cut at the page boundary
    other = tmp_path / "other.journal"
    optuna.create_study(study_name="j", storage=JournalStorage(JournalFileBackend(str(other)))).set_user_attr("k", 1)
    record = json.loads(other.read_bytes().splitlines()[-1])  # a record that sets a study attribute
    JournalFileBackend(str(path)).append_logs([record, record])  # Optuna's own writer appends after it
    with pytest.raises(ValueError):
        optuna.load_study(study_name="j", storage=JournalStorage(JournalFileBackend(str(path))))

    repaired = _study(path)
    assert [t.state.name for t in repaired.trials] == ["COMPLETE"] * 2  # the torn record dropped, the rest kept
    assert repaired.user_attrs == {"k": 1}  # including the record glued to it
    assert _whole(path) and path.read_bytes().startswith(whole)
    assert repair_journal(path) == 0  # whole now; reading it again changes nothing


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path):
    path = tmp_path / "optuna.journal"
    study = _study(path)
    _fill(study, 1)
    with open(path, "ab") as fh:
        fh.write(b'{"op_code":5,"worker')
    _fill(study, 1)  # the same open storage appends: the torn tail goes first
    assert _whole(path)
    assert [t.state.name for t in _study(path).trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.timeout(60)
def test_a_moved_study_is_not_blocked_by_a_killed_writers_lock(tmp_path):
    """A driver killed inside Optuna's default symlink lock left optuna.journal.lock -> <old path>/optuna.journal;
    after a move that link cannot be stat'ed, Optuna's stale-lock clean-up never fires and the resumed driver
    waited for ever. The journal's lock is an flock now, gone with its holder."""
    old = tmp_path / "old"
    old.mkdir()
    _fill(_study(old / "optuna.journal"), 1)
    os.symlink(old / "optuna.journal", old / "optuna.journal.lock")  # the killed writer's lock
    new = tmp_path / "new"
    old.rename(new)
    study = _study(new / "optuna.journal")  # Optuna's symlink lock would spin here
    _fill(study, 1)
    assert [t.state.name for t in _study(new / "optuna.journal").trials] == ["COMPLETE", "COMPLETE"]


def test_records_that_create_or_end_something_are_fsynced_the_others_ride_on_them(tmp_path, monkeypatch):
    from optuna.storages.journal._storage import JournalOperation

    durable = {JournalOperation.CREATE_STUDY, JournalOperation.DELETE_STUDY, JournalOperation.CREATE_TRIAL,
               JournalOperation.SET_TRIAL_STATE_VALUES, JournalOperation.DISCARD_TRIALS}
    assert journal_module._DURABLE_OPS == {int(op) for op in durable}  # Optuna's codes, by name
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    path = str(tmp_path / "optuna.journal")
    study = _study(path)
    creating = len(synced)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.report(0.5, 1)
    trial.set_user_attr("trial_dir", "trial_x")
    assert len(synced) == creating + 1  # the trial's creation; its parameter, value and attribute were not
    study.tell(trial, 0.5)
    assert len(synced) == creating + 2
    reread = optuna.load_study(study_name="j", storage=JournalStorage(RepairingJournalBackend(path))).trials[0]
    assert reread.params == {"x": trial.params["x"]} and reread.intermediate_values == {1: 0.5}
    assert reread.user_attrs == {"trial_dir": "trial_x"} and reread.state.name == "COMPLETE"

"""Recovering Ray's trial files that a killed driver had only in its staging directory (study/state/driver_files.py).
The end-to-end case (a real SIGKILL, Ray's real layout) is tests/study/test_tune_resume.py."""
from __future__ import annotations

import json
import platform
from pathlib import Path

from study.state.driver_files import driver_temp_dirs, recover_driver_files, staging_dirs


def _staging(temp_dir: Path, experiment: str = "crash") -> Path:
    staging = temp_dir / "session_2026-11-28_12-00-00_000000_1" / "artifacts" / "2026-11-28_12-00-01" / experiment
    staging = staging / "driver_artifacts"
    staging.mkdir(parents=True)
    return staging


def _trial(staging: Path, name: str, *, result: bytes = b'{"iteration": 2}\n{"iteration": 4}\n') -> Path:
    folder = staging / name
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({"trial": name}))
    (folder / "params.pkl").write_bytes(b"\x80\x04pickle")
    (folder / "result.json").write_bytes(result)
    (folder / "progress.csv").write_bytes(b"iteration\n2\n4\n")
    return folder


def test_a_trial_folder_without_rays_files_gets_them_from_the_staging_directory(tmp_path):
    temp_dir, home = tmp_path / "r1", tmp_path / "studies" / "crash"
    staging = _staging(temp_dir)
    _trial(staging, "trial_ended", result=b'{"iteration": 2}\n{"iteration": 4, "done": true}\n{"iterat')
    (home / "trial_ended" / "run").mkdir(parents=True)  # what the engine wrote; Ray's copy never came

    found = recover_driver_files(home, [temp_dir])

    assert [(f.staging, f.trials, f.files) for f in found] == [(staging.resolve(), ("trial_ended",), 4)]
    folder = home / "trial_ended"
    assert json.loads((folder / "params.json").read_text()) == {"trial": "trial_ended"}
    assert (folder / "params.pkl").read_bytes() == b"\x80\x04pickle"
    # the line the driver was writing when it died is not copied
    assert (folder / "result.json").read_bytes() == b'{"iteration": 2}\n{"iteration": 4, "done": true}\n'
    assert (folder / "progress.csv").read_bytes() == b"iteration\n2\n4\n"
    assert sorted(p.name for p in folder.iterdir()) == ["params.json", "params.pkl", "progress.csv", "result.json",
                                                        "run"]  # no temporary file left
    assert recover_driver_files(home, [temp_dir]) == []  # done once


def test_nothing_is_overwritten_created_or_deleted(tmp_path):
    temp_dir, home = tmp_path / "r1", tmp_path / "study"
    staging = _staging(temp_dir)
    for name in ("trial_synced", "trial_partial", "trial_elsewhere"):
        _trial(staging, name)
    (home / "trial_synced").mkdir(parents=True)
    (home / "trial_synced" / "params.json").write_text("{}")  # Ray's snapshot copied it: the folder is Ray's
    (home / "trial_partial").mkdir()
    (home / "trial_partial" / "progress.csv").write_bytes(b"mine\n")
    # trial_elsewhere has no folder in the study (moved to superseded/, or never started): none is made for it

    found = recover_driver_files(home, [temp_dir, tmp_path / "gone"])

    assert [f.trials for f in found] == [("trial_partial",)] and found[0].files == 3
    assert sorted(p.name for p in (home / "trial_synced").iterdir()) == ["params.json"]
    assert (home / "trial_synced" / "params.json").read_text() == "{}"
    assert (home / "trial_partial" / "progress.csv").read_bytes() == b"mine\n"
    assert (home / "trial_partial" / "params.json").is_file()
    assert not (home / "trial_elsewhere").exists()
    assert sorted(p.name for p in staging.iterdir()) == ["trial_elsewhere", "trial_partial", "trial_synced"]


def test_only_earlier_drivers_on_this_machine_are_looked_at(tmp_path):
    host = platform.node()
    provenance = {"hostname": host, "ray_temp_dir": "/tmp/dastudy-0/r-first",
                  "resumes": [{"hostname": "another-node", "ray_temp_dir": "/tmp/dastudy-0/r-other"},
                              {"hostname": host, "ray_temp_dir": None},  # a driver on an existing Ray cluster
                              {"hostname": host, "ray_temp_dir": "/tmp/dastudy-0/r-second"},
                              {"time": "written by older code"}]}
    assert driver_temp_dirs(provenance) == ["/tmp/dastudy-0/r-first", "/tmp/dastudy-0/r-second"]
    assert driver_temp_dirs({"resumes": []}) == []


def test_staging_directories_of_any_experiment_name_are_found(tmp_path):
    temp_dir = tmp_path / "r1"
    assert staging_dirs(temp_dir) == []
    renamed = _staging(temp_dir, experiment="old-name")
    (temp_dir / "session_latest").symlink_to(renamed.parents[3].name)  # as Ray links its newest session
    assert staging_dirs(temp_dir) == [renamed.resolve()]

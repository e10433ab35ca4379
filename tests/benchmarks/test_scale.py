"""``benchmarks/scale.py``: the goal arithmetic (fast) and a ~10-trial run of the real benchmark (slow: it starts Ray).

The smoke run keeps the benchmark from rotting and fails when an upgrade of Ray moves the one private method it
wraps to count experiment-state snapshots (``TuneController.save_to_dir``).
"""
from __future__ import annotations

import json

import pytest

from benchmarks import scale


def _row(trials, *, cost, state_bytes, experiment_bytes=None, status_s=0.5, report_s=1.0, ok=True):
    read = {name: {"median_s": value, "ok": ok} for name, value in (("status", status_s), ("report", report_s))}
    return {"trials_requested": trials, "trials": trials, "driver_cpu_s_per_report": cost,
            "state_bytes_total": state_bytes, "newest_experiment_state_bytes": experiment_bytes, "read": read}


def test_goals_follow_the_issue_thresholds():
    good = scale.goals([_row(100, cost=0.02, state_bytes=1e6),
                        _row(1000, cost=0.03, state_bytes=4e6, experiment_bytes=3e6)])
    assert good == {"cost_per_report_le_0.1s": True, "cost_ratio_largest_vs_smallest": pytest.approx(1.5),
                    "largest_study_trials": 1000, "experiment_state_le_5MB_at_largest": True,
                    "state_le_5MB_at_largest": True, "report_le_3s_at_largest": True, "status_le_1s_at_largest": True}
    bad = scale.goals([_row(100, cost=0.02, state_bytes=1e6),
                       _row(1000, cost=0.2, state_bytes=28e6, experiment_bytes=20e6, status_s=2.0, report_s=28.8)])
    assert not any(bad[k] for k in ("cost_per_report_le_0.1s", "experiment_state_le_5MB_at_largest",
                                    "state_le_5MB_at_largest", "report_le_3s_at_largest", "status_le_1s_at_largest"))
    # Ray's state under 5 MB, the Optuna journal beside it over: one goal met, the other not
    split = scale.goals([_row(1000, cost=0.02, state_bytes=6.7e6, experiment_bytes=4.8e6)])
    assert split["experiment_state_le_5MB_at_largest"] is True and split["state_le_5MB_at_largest"] is False
    failed_report = scale.goals([_row(1000, cost=0.01, state_bytes=1e6, report_s=0.1, ok=False)])
    assert failed_report["report_le_3s_at_largest"] is False  # a fast crash is not a fast report


def test_tenth_cost_is_cpu_seconds_per_report_at_each_end():
    stamps = [(0.01 * i * i, float(i)) for i in range(40)]  # CPU per report grows along the run
    first, last = scale._tenth_cost(stamps, "first"), scale._tenth_cost(stamps, "last")
    assert first == pytest.approx((0.01 * 9) / 3) and last == pytest.approx(0.01 * (39 ** 2 - 36 ** 2) / 3)
    assert scale._tenth_cost(stamps[:3], "first") is None


@pytest.mark.slow
@pytest.mark.extended  # 25 s smoke run of a benchmark script: outside make test's 15 minutes
def test_scale_benchmark_runs_a_small_study(tmp_path):
    """~30-60 s on 2 loaded cores (a driver process with its own local Ray, 8 trials, status/report once)."""
    payload = scale.main(["--trials", "8", "--reports", "2", "--concurrency", "2", "--num-cpus", "2",
                          "--repeats", "1", "--out", str(tmp_path / "out"), "--keep", str(tmp_path / "studies"),
                          "--time-limit", "300"])
    (row,) = payload["rows"]
    assert row["trials"] == 8 and row["stopped_by"] is None and row["driver_exit"] == 0
    assert 8 <= row["reports"] <= 16 and row["report_callbacks"] == row["reports"]
    assert row["snapshots"] >= 1 and row["snapshot_s_total"] > 0  # the snapshot hook saw Ray's snapshots
    assert row["driver_cpu_s_per_report"] > 0 and row["driver_peak_rss_mib"] > 50
    assert row["experiment_state_files"] >= 1 and row["experiment_state_bytes"] > 0
    assert row["trial_dirs"] == 8 and row["optuna_journal_bytes"] > 0
    for command in ("status", "status_json", "report", "cli_floor"):
        assert row["read"][command]["ok"], (command, row["read"][command])
    written = json.loads((tmp_path / "out" / "scale.json").read_text())
    assert written["rows"][0]["trials"] == 8 and (tmp_path / "out" / "scale.md").read_text().count("|") > 20
    # the probe wrote the engine's files, which `study report` read
    home = tmp_path / "studies" / "scale-8"
    assert len(list(home.glob("trial_*/run/last_eval.json"))) == 8
    assert (home / "report.md").is_file()
    # --read-dir: the reading costs alone, on that directory
    again = scale.main(["--read-dir", str(home), "--repeats", "1", "--out", str(tmp_path / "out"), "--tag", "r"])
    (read,) = again["reads"]
    assert read["trial_dirs"] == 8 and all(v["ok"] for v in read["read"].values())


def test_read_dir_refuses_a_directory_that_is_not_a_study(tmp_path):
    with pytest.raises(SystemExit, match="not a study directory"):
        scale.main(["--read-dir", str(tmp_path), "--out", str(tmp_path / "out")])


@pytest.mark.slow
@pytest.mark.extended  # a smoke run of a benchmark script against moto's server: outside make test's 15 minutes
def test_scale_benchmark_measures_a_study_kept_in_an_s3_bucket(tmp_path):
    """--s3: the study in moto's bucket; the driver's uploads of the study files are counted and the bucket holds
    Ray's snapshot and every trial."""
    pytest.importorskip("moto", reason="moto[server] is missing: `make test` installs it (pip extra 's3-test')")
    payload = scale.main(["--trials", "4", "--reports", "2", "--concurrency", "2", "--num-cpus", "2", "--s3",
                          "--repeats", "1", "--out", str(tmp_path / "out"), "--keep", str(tmp_path / "studies"),
                          "--time-limit", "300"])
    (row,) = payload["rows"]
    assert row["trials"] == 4 and row["driver_exit"] == 0 and "s3_env" not in payload["settings"]
    # at least study.toml, space.json, provenance.json and the journal, the journal again at each later snapshot
    assert row["store_uploads"] >= 4 and row["store_uploaded_bytes"] > row["optuna_journal_bytes"] > 0
    assert row["bucket_experiment_state_bytes"] > 0 and row["bucket_bytes"] > row["store_uploaded_bytes"]
    assert row["experiment_state_files"] == 0  # Ray's snapshot is in the bucket, not in the local copy
    assert "| store_uploads |" in (tmp_path / "out" / "scale.md").read_text()

"""``deploy/slurm/dastudy.sbatch`` run unchanged on a real SLURM cluster: Debian's ``slurm-wlm`` and ``munge``,
started by the test on this machine with private config, state, spool, key, socket and ports
(tests/deploy/slurm_cluster.py), configured only through environment variables and ``sbatch`` options.

- (``make test-extended``) a study submitted with ``sbatch`` runs to the end on the job's own Ray (its own port
  block, temp dir and token);
- the time-limit warning (``--signal=B:USR1@...``, here sent with ``scancel --batch --signal=USR1``, which is what
  slurmctld does at the warning time) stops the driver gracefully: each running trial saves its state at the
  iteration it is in, the job requeues itself, and the requeued job resumes the study to the end with no trial
  repeated and no iteration trained twice (``make test``);
- a job that reaches a real time limit gets the warning from slurmctld itself and goes through the same chain,
  requeued as often as needed (``make test-extended``: about 3 minutes).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from slurm_cluster import SlurmCluster, missing
from test_job_submit import free_port_range, tiny_study

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "deploy" / "slurm" / "dastudy.sbatch"
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


@pytest.fixture
def slurm(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="sl", dir=os.environ.get("TMPDIR", "/tmp")))  # short: socket paths
    cluster = SlurmCluster(root, cpus=os.cpu_count() or 2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _study_file(tmp_path: Path, benchmark: Path, *, iterations: int, interval: int) -> Path:
    table = tiny_study(benchmark)
    table["train"]["optim"].update(iter_max=iterations, iter_stop=iterations)
    table["train"]["eval"]["interval"] = interval
    table["train"]["runtime"]["log_interval"] = 1  # one metrics line per iteration: every iteration is counted
    path = tmp_path / "slurmtiny.toml"
    path.write_text(tomli_w.dumps(table))
    return path


def _submit(slurm: SlurmCluster, tmp_path: Path, study_file: Path, *options: str,
            faults: dict[str, str] | None = None) -> tuple[str, Path]:
    """``sbatch [options] deploy/slurm/dastudy.sbatch STUDY_FILE`` with the test's venv, storage and HOME
    (``faults``: test-only DASTUDY_FAULT variables, which reach the trials through sbatch's exported environment)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"DASTUDY_VENV": str(Path(sys.executable).parents[1]), "STORAGE": str(tmp_path / "studies"),
           "HOME": str(home), "RAY_PORT_BASE": str(free_port_range(100)), "TORCH_HOME": str(tmp_path / "torch"),
           "TMPDIR": str(slurm.root),  # short: Ray's unix socket paths are limited to ~107 characters
           # the job's Ray on loopback: this host's name once resolved to its sandbox interface inside the job, where
           # a Ray head cannot start ("node timed out during startup")
           "HEAD_IP": "127.0.0.1", **(faults or {})}
    out = slurm.run(["sbatch", "--parsable", "--nodes=1", f"--cpus-per-task={slurm.cpus}", "--mem=1G",
                     f"--output={tmp_path}/job-%j.out", *options, SBATCH, study_file], env=env, cwd=tmp_path)
    job = out.stdout.strip().split(";")[0]
    return job, tmp_path / f"job-{job}.out"


def _trained_iterations(home: Path) -> dict[str, list[int]]:
    """Each trial's trained iterations, in the order its metrics.jsonl recorded them (all attempts)."""
    out = {}
    for trial in sorted(home.glob("trial_*")):
        lines = [json.loads(line) for line in (trial / "run" / "metrics.jsonl").read_text().splitlines()]
        out[trial.name] = [r["iteration"] for r in lines if r.get("kind") == "train"]
    return out


def _status(home: Path) -> dict:
    import subprocess

    status = subprocess.run([sys.executable, "-m", "study.cli", "study", "status", str(home), "--json"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert status.returncode == 0, status.stdout + status.stderr
    return json.loads(status.stdout)


@pytest.mark.extended  # make test's time-limit test below also runs a study through sbatch to its end
def test_sbatch_runs_a_study_to_the_end_on_the_jobs_own_ray(slurm, tiny_benchmark, tmp_path):
    study_file = _study_file(tmp_path, tiny_benchmark, iterations=2, interval=1)
    job, log = _submit(slurm, tmp_path, study_file, "--time=10", "--signal=B:USR1@30")
    info = slurm.wait_job(job, states=ENDED, timeout=300)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-4000:]
    assert "ray: 1/1 nodes at 127.0.0.1:" in text and f"cluster: 1 node, {slurm.cpus} CPU, 1 GPU" in text, text[-3000:]
    status = _status(tmp_path / "studies" / "slurmtiny")
    assert [t["state"] for t in status["trials"]] == ["COMPLETE", "COMPLETE"], status
    # the job's Ray lived in its own temp dir, and its token file is gone with it
    assert (slurm.root / f"ray-{job}").is_dir() and not list((tmp_path / "home" / ".ray").glob("*.token"))


def test_time_limit_warning_saves_the_trials_requeues_and_resumes(slurm, tiny_benchmark, tmp_path):
    study_file = _study_file(tmp_path, tiny_benchmark, iterations=120, interval=60)
    # Each trial holds 6 s after iteration 70 (once per process): the warning lands between evaluations 1 and 2
    # however loaded the machine. Without the hold the 50 iterations left after it take ~2 s: a trial that Ray started
    # late under load, or a slow signal path, let a trial finish before the stop (seen under pytest-xdist).
    faults = {"DASTUDY_FAULT": "pause_at:70", "DASTUDY_FAULT_PAUSE_S": "6"}
    job, log = _submit(slurm, tmp_path, study_file, "--time=10", "--signal=B:USR1@30", faults=faults)
    deadline = time.monotonic() + 300
    while (log.read_text() if log.exists() else "").count("eval 1/2") < 2:  # both trials past evaluation 1
        assert time.monotonic() < deadline, log.read_text()[-3000:] if log.exists() else "no job output"
        assert slurm.job(job).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), log.read_text()[-3000:]
        time.sleep(0.5)
    slurm.run(["scancel", "--batch", "--signal=USR1", job])  # what slurmctld sends at --signal's warning time
    deadline = time.monotonic() + 400
    while True:
        info = slurm.job(job)
        if info.get("JobState") in ENDED and info.get("Restarts", "0") != "0":
            break
        assert time.monotonic() < deadline, f"{info}\n{log.read_text()[-4000:]}"
        time.sleep(1)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{text[-4000:]}"
    assert "time limit near (USR1)" in text and "saved their state at iterations" in text, text[-4000:]
    assert "driver exited with 143" in text and "resuming from" in text and "driver exited with 0" in text
    # the job's Ray lived in its own temp dir, and its token file went with it
    assert (slurm.root / f"ray-{job}").is_dir() and not list((tmp_path / "home" / ".ray").glob("*.token"))
    home = tmp_path / "studies" / "slurmtiny"
    status = _status(home)
    assert [t["state"] for t in status["trials"]] == ["COMPLETE", "COMPLETE"], status
    trained = _trained_iterations(home)
    assert len(trained) == 2  # no trial repeated, none added
    for name, iterations in trained.items():
        assert iterations == list(range(1, 121)), (name, [i for i in iterations if iterations.count(i) > 1][:10])
        resumes = json.loads((home / name / "run" / "provenance.json").read_text())["resumes"]
        assert len(resumes) == 1 and resumes[0]["checkpoint"].endswith("checkpoints/stop.pt"), resumes
        assert 60 < resumes[0]["iteration"] < 120  # continued where it stopped, not from the evaluation at 60
        assert not (home / name / "run" / "checkpoints" / "stop.pt").exists()  # superseded, removed


@pytest.mark.extended
def test_a_real_time_limit_warns_stops_requeues_until_the_study_ends(slurm, tiny_benchmark, tmp_path):
    """slurmctld itself sends the warning (--signal=B:USR1@90 with --time=2: between 0 and about 60 s after the
    start, slurmctld checks time limits every 30 s or so); each job trains until then, saves, requeues."""
    study_file = _study_file(tmp_path, tiny_benchmark, iterations=600, interval=200)
    job, log = _submit(slurm, tmp_path, study_file, "--time=2", "--signal=B:USR1@90")
    deadline = time.monotonic() + 900
    while True:
        info = slurm.job(job)
        if info.get("JobState") in ENDED and info.get("JobState") != "PENDING":
            if info["JobState"] == "COMPLETED" or time.monotonic() > deadline:
                break
        assert time.monotonic() < deadline, f"{info}\n{log.read_text()[-4000:]}"
        time.sleep(2)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, f"{info}\n{text[-4000:]}"
    assert "TIMEOUT" not in info["JobState"] and "DUE TO TIME LIMIT" not in text, text[-4000:]
    home = tmp_path / "studies" / "slurmtiny"
    assert [t["state"] for t in _status(home)["trials"]] == ["COMPLETE", "COMPLETE"]
    for name, iterations in _trained_iterations(home).items():
        assert iterations == list(range(1, 601)), name

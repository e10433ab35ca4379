"""``deploy/job-submit.sh`` against a real single-node Ray cluster started here with ``ray start --head``.

The recipe's ``ray job submit --runtime-env-json`` runs ``dastudy study run FILE --address auto`` as a Ray job: the
study driver runs inside the cluster, connects to it with ``--address auto`` (the code path of every real cluster:
KubeRay, ``ray up``, SLURM) and runs a tiny two-trial study to the end. The cluster has its own short temp dir,
its own ports, Ray 2.60's token authentication on (``RAY_AUTH_MODE=token``, a token made for the test, as on a
real cluster: a submission without it is refused), and it is stopped by the PIDs of the processes it started
(never ``ray stop``, which would stop every Ray on the machine).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import tomli_w

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Every process of the throw-away cluster: token auth (the token is added per cluster), quiet, no usage stats.
CLUSTER_ENV = {
    "RAY_AUTH_MODE": "token",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
}


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (all held open together, so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port_range(width: int = 64, *, avoid: tuple[int, ...] = ()) -> int:
    """The first port of ``width`` consecutive ports free on 127.0.0.1 (for Ray's worker processes) that holds none
    of ``avoid`` (ports already given to other Ray components, which are free now too: Ray refuses an overlap)."""
    for _ in range(50):
        base = free_ports(1)[0]
        if base + width >= 65535 or any(base <= port < base + width for port in avoid):
            continue
        try:
            held = []
            for port in range(base, base + width):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {width} consecutive free ports")


def _session_processes(sid: int, marker: str) -> list[int]:
    """PIDs of this user's processes in the session the test started, or whose command line names the cluster's
    private temp dir (Ray's daemons and workers; the reaper leaves the session's process group)."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != os.getuid() or proc.pid == os.getpid():
                continue
            if os.getsid(proc.pid) == sid or marker in " ".join(proc.info["cmdline"] or []):
                out.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def _stop(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def ray_head():
    """``ray start --head --block`` with private ports and temp dir and a token of its own; yields (dashboard URL,
    env with the token); stops by PID."""
    import secrets

    tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: unix socket paths are limited to ~107 characters
    gcs, dashboard, agent_http, agent_grpc, metrics, runtime_env, node_manager, object_manager, client = free_ports(9)
    workers = free_port_range(avoid=(gcs, dashboard, agent_http, agent_grpc, metrics, runtime_env, node_manager,
                                     object_manager, client))
    env = {**os.environ, **CLUSTER_ENV, "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_TMPDIR": tmp,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    argv = [str(BIN / "ray"), "start", "--head", "--block", f"--temp-dir={tmp}", "--node-ip-address=127.0.0.1",
            f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}", f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}", f"--ray-client-server-port={client}",
            f"--min-worker-port={workers}",
            f"--max-worker-port={workers + 63}", "--num-cpus=2", "--num-gpus=0",
            "--object-store-memory=100000000", "--disable-usage-stats"]
    log = open(Path(tmp) / "ray-start.log", "w")
    head = subprocess.Popen(argv, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                request = urllib.request.Request(f"{url}/api/version",
                                                 headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if head.poll() is not None or time.time() > deadline:
                log.flush()
                raise RuntimeError(f"ray start --head did not serve {url} (exit {head.poll()}): "
                                   + (Path(tmp) / "ray-start.log").read_text()[-2000:])
            time.sleep(1)
        yield url, env
    finally:
        _stop([head.pid], signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            pids = _session_processes(head.pid, tmp)
            if not pids:
                break
            _stop(pids, sig)
            deadline = time.time() + wait_s
            while time.time() < deadline and _session_processes(head.pid, tmp):
                time.sleep(0.5)
        if head.poll() is None:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_study(benchmark: Path) -> dict:
    """Two trials of AdaptSegNet on deeplabv2_tiny at 64x32, two iterations with an evaluation each (FIFO)."""
    source, target = str(benchmark / "source"), str(benchmark / "target")
    return {
        "name": "job-submit", "metric": "mIoU16", "mode": "max", "num_samples": 2, "max_concurrent_trials": 2,
        "reuse_actors": True, "max_failures": 0,
        "search": {"space": "lambda_lr", "sampler": "random", "seed": 0},
        "scheduler": {"kind": "fifo"},
        "resources": {"cpu": 1, "gpu": 0},
        "train": {
            "name": "tiny",
            "data": {"num_classes": 16, "workers": 0, "hflip": False, "blur": False,
                     "source": {"dataset": "synthia", "root": source, "split": "train", "size": [64, 32]},
                     "target": {"dataset": "cityscapes", "root": target, "split": "train", "size": [64, 32]},
                     "val": {"dataset": "cityscapes", "root": target, "split": "val", "size": [64, 32]}},
            "model": {"name": "deeplabv2_tiny"},
            "optim": {"lr": 0.01, "iter_max": 2, "iter_stop": 2, "batch_size": 1},
            "adapt": {"mode": "adversarial", "d_ndf": 8},
            "eval": {"interval": 1},
            "runtime": {"device": "cpu", "log_interval": 1, "progress": False, "seed": 1},
        },
    }


@pytest.mark.slow
def test_job_submit_runs_a_study_through_address_auto(ray_head, tiny_benchmark, tmp_path):
    """~60-90 s on 2 loaded cores: cluster start, a submission without the token refused, job submission with
    it, two tiny trials, status."""
    url, env = ray_head
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(tomli_w.dumps(tiny_study(tiny_benchmark)))
    storage = tmp_path / "studies"
    submission = f"dastudy-test-{os.getpid()}"
    run_env = {**env, "RAY_ADDRESS": url, "DASTUDY_STORAGE": str(storage), "SUBMISSION_ID": submission,
               "PYTHON": sys.executable}
    # the job server checks the token: without it (or with another one) nothing is submitted
    for wrong in ({"RAY_AUTH_TOKEN": "0" * 64}, {"RAY_AUTH_MODE": "disabled"}):
        refused = subprocess.run(["bash", str(REPO / "deploy" / "job-submit.sh"), str(study_file)],
                                 env={**run_env, **wrong, "SUBMISSION_ID": f"{submission}-refused"}, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "uthentication" in refused.stdout + refused.stderr, (
            wrong, (refused.stdout + refused.stderr)[-2000:])
    proc = subprocess.run(["bash", str(REPO / "deploy" / "job-submit.sh"), str(study_file)], env=run_env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=400)
    output = proc.stdout + proc.stderr
    from ray.job_submission import JobStatus, JobSubmissionClient

    # this process's own Ray settings stay as they are: the token goes in the request's header
    client = JobSubmissionClient(url, headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
    assert not any(job.submission_id == f"{submission}-refused" for job in client.list_jobs())
    info = client.get_job_info(submission)
    assert proc.returncode == 0 and info.status == JobStatus.SUCCEEDED, output[-4000:]
    # the driver ran as a Ray job and connected to this cluster (--address auto), not to a local Ray of its own
    assert info.entrypoint.startswith("dastudy study run") and "--address auto" in info.entrypoint
    logs = client.get_job_logs(submission)
    assert "1 node" in logs or "cluster:" in logs, logs[-3000:]
    home = storage / "job-submit"
    runs = sorted(home.glob("trial_*/run/result.json"))
    assert len(runs) == 2, output[-3000:]
    results = [json.loads(p.read_text()) for p in runs]
    assert [r["status"] for r in results] == ["completed", "completed"]
    provenance = [json.loads(p.with_name("provenance.json").read_text()) for p in runs]
    assert {p["ray_node_id"] for p in provenance} == {info.driver_node_id}  # trials ran on this cluster's node
    status = subprocess.run([str(BIN / "dastudy"), "study", "status", "--json", str(home)], capture_output=True,
                            text=True, timeout=120, env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"].get("COMPLETE") == 2

"""Driver cost of large studies: 100 and 1,000 trials of a probe trainable (no torch, no training).

What a study's driver pays per trial report does not depend on the model: Ray's controller processes the result,
the searcher (Optuna TPE through :class:`study.run.search.StudySearch`) records it, ASHA decides, and Ray snapshots the
experiment state. This benchmark runs real studies (``study.run.tuner.run_study``: TPE + ASHA, checkpoints kept by the
study metric, the project's callbacks) whose trials only write what a real trial writes — a small checkpoint per
report, ``run/metrics.jsonl`` with training and evaluation lines, ``run/last_eval.json``, ``run/result.json`` — and
send Tune what a real trial sends (``trainables.tune.tune_payload``), and measures, per study size:

- driver CPU seconds per trial report (process CPU time of the driver during ``Tuner.fit`` / reports), overall and
  for the first and last tenth of the reports (flat cost: both alike);
- the driver's peak RSS (VmHWM of the driver process);
- experiment-state size (``experiment_state-*.json``, searcher and scheduler state, ``tuner.pkl``, the Optuna
  journal, ASHA rungs);
- experiment-state snapshots: how many, and the time spent writing them (``TuneController.save_to_dir``);
- wall time of ``dastudy study status`` and ``dastudy study report`` on the resulting study directory (median of
  ``--repeats`` runs, each a fresh process as a user runs it), next to the CLI's start-up floor (``study --help``).

Goals (issue 12): driver cost per report flat from 100 to 1,000 trials and ≤ 0.1 s; experiment state ≤ 5 MB at
1,000 trials; ``report`` ≤ 3 s and ``status`` ≤ 1 s on a 1,000-trial study.

Each study size runs in its own driver process (``--child``), so its peak RSS is its own; ``--time-limit`` stops a
driver with SIGINT (Tune then stops its trials and saves its state; the figures cover what finished).

Example::

    python -m benchmarks.scale --trials 100                      # ~2-4 min on 2 loaded cores
    python -m benchmarks.scale --trials 100 --trials 1000 --time-limit 2400
    python -m benchmarks.scale --trials 100 --s3                 # the study in an S3 bucket (moto, 127.0.0.1)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

REPO = Path(__file__).resolve().parent.parent
PROBE_ENV = "DASTUDY_SCALE_PROBE"  # the probe's sizes, from the driver to the workers of its local Ray
STATE_PATTERNS = {  # experiment-state files of a study directory (top level only; trials are listed apart)
    "experiment_state": "experiment_state-*.json",
    "searcher_state": "searcher-state-*.pkl",
    "search_gen_state": "search_gen_state-*.json",
    "tuner_pkl": "tuner.pkl",
    "asha_rungs": "asha_rungs.json",
    "optuna_journal": "optuna.journal",
}
# The per-class IoUs a real 16-class evaluation writes to metrics.jsonl (what the report and TensorBoard read).
CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation", "sky", "person",
           "rider", "car", "bus", "motorcycle", "bicycle")


# ---------------------------------------------------------------------------------------------------------
# the probe trainable (runs in Ray workers: imports only the standard library, Ray and trainables.tune)


def scale_trial(config: dict[str, Any], *, context: Any) -> None:
    """One probe trial: ``reports`` evaluations, each with ``log_lines`` training lines and one evaluation line in
    ``run/metrics.jsonl``, ``run/last_eval.json`` and ``run/result.json`` rewritten, and one ``tune.report`` of the
    scalar summary with a small checkpoint (the engine's file layout, without torch). Sizes come from
    ``$DASTUDY_SCALE_PROBE`` (JSON), which the workers of the local Ray inherit from the driver."""
    import random
    import zlib

    from ray import tune

    from trainables.tune import LAST_EVAL_FILE, RUN_SUBDIR, _trial_dir, tune_payload

    extra = json.loads(os.environ.get(PROBE_ENV) or "{}")
    reports, log_lines = int(extra.get("reports", 4)), int(extra.get("log_lines", 20))
    sleep_s, per_class = float(extra.get("sleep_s", 0.0)), bool(extra.get("per_class_in_tune", False))
    trial_dir = _trial_dir(context)
    run_dir = trial_dir / RUN_SUBDIR
    run_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start = int((Path(directory) / "state.json").read_text())
    rng = random.Random(zlib.crc32(json.dumps(config, sort_keys=True, default=str).encode()))
    quality = rng.random()
    interval = 100
    best = (None, -1.0)
    for report in range(start + 1, reports + 1):
        if sleep_s:
            time.sleep(sleep_s)
        iteration = report * interval
        lines = []
        for step in range(log_lines):
            it = (report - 1) * interval + (step + 1) * interval // max(log_lines, 1)
            lines.append({"kind": "train", "iteration": it, "time": time.time(), "train/loss_seg": rng.random(),
                          "train/loss_adv": rng.random(), "train/loss_d": rng.random(), "lr/backbone": 1e-3,
                          "lr/discriminator": 1e-4, "time/step_s": 0.01})
        ious = {f"val/IoU/{name}": min(1.0, quality * rng.random() + 0.1 * report) for name in CLASSES}
        miou = sum(ious.values()) / len(ious)
        metrics = {context.metric: miou, "val/mIoU16": miou, "val/mIoU13": miou, "val/pixel_acc": miou, **ious}
        lines.append({"kind": "eval", "iteration": iteration, "time": time.time(), **metrics})
        with open(run_dir / "metrics.jsonl", "a") as fh:
            fh.write("".join(json.dumps(line) + "\n" for line in lines))
        if miou > best[1]:
            best = (iteration, miou)
        # what a real trial sends to Tune (trainables.tune.tune_payload), or with every per-class IoU too
        summary = tune_payload(metrics, iteration=iteration, finished=report == reports,
                               timings={"time/setup_s": 0.0, "time/engine_s": 0.0})
        if per_class:
            summary.update(metrics)
        with tempfile.TemporaryDirectory(prefix="dastudy-scale-") as tmp:
            (Path(tmp) / "state.json").write_text(str(report))
            (Path(tmp) / "weights.bin").write_bytes(b"\0" * 4096)
            result = {"name": trial_dir.name, "status": "completed" if report == reports else "stopped",
                      "message": None, "iterations": iteration, "total_iterations": reports * interval,
                      "wall_s": 0.0, "elapsed_s": 0.0, "best_metric": context.metric, "best_value": best[1],
                      "best_iteration": best[0], "metrics": metrics, "run_dir": str(run_dir)}
            last_eval = {"iteration": iteration, "time": time.time(), "finished": report == reports, **metrics}
            for name, data in (("result.json", result), (LAST_EVAL_FILE, last_eval)):
                (run_dir / f"{name}.tmp").write_text(json.dumps(data))
                os.replace(run_dir / f"{name}.tmp", run_dir / name)
            # as a real trial: every checkpoint_every-th evaluation and the last carry a checkpoint
            every = max(1, int(getattr(context, "checkpoint_every", 1)))
            if report % every and report < reports:
                tune.report(summary)
            else:
                tune.report(summary, checkpoint=tune.Checkpoint.from_directory(tmp))


# ---------------------------------------------------------------------------------------------------------
# the study (driver side)


def study_table(*, name: str, trials: int, reports: int, concurrency: int, data_root: Path,
                sampler: str, checkpoint_every: int = 1) -> dict[str, Any]:
    """A study over the ``lambda_lr`` space with TPE (or random) + ASHA; ``reports`` evaluations per full trial."""
    roots = {d: str(data_root / d) for d in ("source", "target")}
    return {
        "name": name, "metric": "mIoU16", "mode": "max", "num_samples": trials,
        "max_concurrent_trials": concurrency, "reuse_actors": True, "checkpoints_to_keep": 2,
        **({"checkpoint_every": checkpoint_every} if checkpoint_every != 1 else {}),
        "search": {"space": "lambda_lr", "sampler": sampler, "seed": 0, "startup_trials": 10},
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpu": 1, "gpu": 0},
        "train": {
            "name": "scale-probe",
            "data": {"num_classes": 16, "workers": 0,
                     "source": {"dataset": "synthia", "root": roots["source"], "split": "train", "size": [64, 32]},
                     "target": {"dataset": "cityscapes", "root": roots["target"], "split": "train", "size": [64, 32]},
                     "val": {"dataset": "cityscapes", "root": roots["target"], "split": "val", "size": [64, 32]}},
            "model": {"name": "deeplabv2_tiny"},
            "optim": {"iter_max": 100 * reports, "iter_stop": 100 * reports, "batch_size": 1},
            "adapt": {"mode": "adversarial"},
            "eval": {"interval": 100},
            "runtime": {"device": "cpu", "progress": False},
        },
    }


def instrument(snapshots: list[float], reports: list[tuple[float, float]]) -> Callable[[], None]:
    """Count and time Ray's experiment-state snapshots and stamp the driver's CPU clock at each trial report.

    Ray 2.60 has no public hook for snapshot statistics, so ``TuneController.save_to_dir`` (the one method that
    encodes and writes ``experiment_state-*.json`` and the searcher state; see ray-project/ray issue 58179 for the
    state files it writes) is wrapped here and only here; tests/benchmarks/test_scale.py fails when an upgrade
    moves it. Reports are stamped through the project's own progress callback. Returns a function that undoes both.
    """
    from ray.tune.execution.tune_controller import TuneController

    from study.run.search import StudyProgress

    original_save, original_result = TuneController.save_to_dir, StudyProgress.on_trial_result

    def save_to_dir(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original_save(self, *args, **kwargs)
        finally:
            snapshots.append(time.perf_counter() - start)

    def on_trial_result(self, *args, **kwargs):
        reports.append((time.process_time(), time.monotonic()))
        return original_result(self, *args, **kwargs)

    TuneController.save_to_dir = save_to_dir
    StudyProgress.on_trial_result = on_trial_result

    def undo() -> None:
        TuneController.save_to_dir = original_save
        StudyProgress.on_trial_result = original_result

    return undo


def _vm_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _tenth_cost(stamps: Sequence[tuple[float, float]], which: str) -> float | None:
    """Driver CPU seconds per report over the first or last tenth of the reports (≥ 2 stamps each)."""
    n = len(stamps)
    k = max(2, n // 10)
    if n < 4:
        return None
    part = stamps[:k] if which == "first" else stamps[-k:]
    return (part[-1][0] - part[0][0]) / (len(part) - 1)


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """One study in this process (the driver being measured); returns its figures."""
    from ray import tune

    from study.config.study_config import study_from_dict
    from study.run.tuner import run_study

    storage, data_root = Path(args.storage), Path(args.storage) / "data"
    for d in ("source", "target"):
        (data_root / d).mkdir(parents=True, exist_ok=True)
    table = study_table(name=args.name, trials=args.child, reports=args.reports, concurrency=args.concurrency,
                        data_root=data_root, sampler=args.sampler, checkpoint_every=args.checkpoint_every)
    study = study_from_dict(table, source="benchmarks.scale")
    snapshots: list[float] = []
    stamps: list[tuple[float, float]] = []
    fit: dict[str, float] = {}
    original_fit = tune.Tuner.fit

    def timed_fit(self):
        fit.update(rss_start_kib=_vm_kib("VmRSS") or 0)
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return original_fit(self)
        finally:
            fit.update(cpu_s=time.process_time() - cpu, wall_s=time.perf_counter() - wall)

    undo = instrument(snapshots, stamps)
    tune.Tuner.fit = timed_fit
    os.environ[PROBE_ENV] = json.dumps({"reports": args.reports, "log_lines": args.log_lines,
                                        "sleep_s": args.sleep_s, "per_class_in_tune": args.per_class_in_tune})
    interrupted = False
    try:
        results, location = run_study(study, storage=args.store_uri or str(storage), num_cpus=args.num_cpus,
                                      trainable=scale_trial, log=lambda line: None)
    except KeyboardInterrupt:
        interrupted, results, location = True, None, None
    finally:
        tune.Tuner.fit = original_fit
        undo()
    trials, states, reports = 0, {}, 0
    if results is not None:
        for result in results:
            trials += 1
            metrics = result.metrics or {}
            reports += int(metrics.get("training_iteration") or 0)
            state = "ERROR" if result.error else ("FINISHED" if metrics.get("finished") else "STOPPED")
            states[state] = states.get(state, 0) + 1
    peak_kib = _vm_kib("VmHWM") or 0
    cpu_s = fit.get("cpu_s", 0.0)
    return {
        "trials_requested": args.child, "trials": trials, "reports": reports, "report_callbacks": len(stamps),
        "states": states, "interrupted": interrupted or args.child > trials,
        "driver_fit_cpu_s": cpu_s, "driver_fit_wall_s": fit.get("wall_s", 0.0),
        "driver_cpu_s_per_report": cpu_s / reports if reports else None,
        "driver_cpu_s_per_trial": cpu_s / trials if trials else None,
        "driver_cpu_s_per_report_first_tenth": _tenth_cost(stamps, "first"),
        "driver_cpu_s_per_report_last_tenth": _tenth_cost(stamps, "last"),
        "driver_peak_rss_mib": peak_kib / 1024, "driver_rss_at_fit_start_mib": fit.get("rss_start_kib", 0) / 1024,
        "snapshots": len(snapshots), "snapshot_s_total": sum(snapshots),
        "snapshot_s_median": statistics.median(snapshots) if snapshots else None,
        "snapshot_s_max": max(snapshots) if snapshots else None,
        "home": str(location.home) if location is not None else str(storage / args.name),
        "torch_imported_by_driver": "torch" in sys.modules,
        **_store_sync_figures(args.store_uri),
    }


def _store_sync_figures(store_uri: str | None) -> dict[str, Any]:
    """With ``--s3``: what the driver uploaded of the study's own files (journal, rungs, study.toml...) before Ray's
    snapshots (study.run.storage.StoreSync), and what the bucket holds at the end."""
    if not store_uri:
        return {}
    import boto3

    from study.run.storage import StoreSync

    bucket, _, prefix = store_uri.removeprefix("s3://").partition("/")
    objects = []
    for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects += page.get("Contents", [])
    state = [o for o in objects if "/experiment_state-" in o["Key"]]
    return {"store_uploads": StoreSync.uploads, "store_uploaded_bytes": StoreSync.uploaded_bytes,
            "store_upload_s": StoreSync.upload_s, "bucket_objects": len(objects),
            "bucket_bytes": sum(o["Size"] for o in objects),
            "bucket_experiment_state_bytes": max((o["Size"] for o in state), default=0)}


# ---------------------------------------------------------------------------------------------------------
# reading the study directory


def state_sizes(home: Path) -> dict[str, Any]:
    """Bytes of each kind of experiment-state file at the top of the study directory (all sessions)."""
    out: dict[str, Any] = {}
    for key, pattern in STATE_PATTERNS.items():
        files = [p for p in home.glob(pattern) if p.is_file()]
        out[f"{key}_bytes"] = sum(p.stat().st_size for p in files)
        out[f"{key}_files"] = len(files)
    newest = sorted(home.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    out["newest_experiment_state_bytes"] = newest[-1].stat().st_size if newest else 0
    out["state_bytes_total"] = sum(out[f"{k}_bytes"] for k in STATE_PATTERNS)
    total = 0
    for root, _, files in os.walk(home):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    out["study_dir_bytes"] = total
    out["trial_dirs"] = len([p for p in home.glob("trial_*") if p.is_dir()])
    return out


def _cli() -> list[str]:
    # `python -m study.cli` from REPO (what the `dastudy` script runs): the code of the checkout measured here,
    # also when that is a git worktree of another commit
    return [sys.executable, "-m", "study.cli"]


def time_command(argv: Sequence[str], *, repeats: int, timeout: float = 600) -> dict[str, Any]:
    """Median wall seconds of ``argv`` run ``repeats`` times (fresh processes), and whether every run succeeded."""
    times, codes, tail = [], [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=REPO)
        times.append(time.perf_counter() - start)
        codes.append(proc.returncode)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            tail = tail[0][:300]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times),
            "ok": all(c == 0 for c in codes), "returncodes": codes, "error": tail or None}


def read_costs(home: Path, *, repeats: int) -> dict[str, Any]:
    cli = _cli()
    return {"status": time_command([*cli, "study", "status", str(home)], repeats=repeats),
            "status_json": time_command([*cli, "study", "status", "--json", str(home)], repeats=repeats),
            "report": time_command([*cli, "study", "report", str(home)], repeats=repeats),
            "cli_floor": time_command([*cli, "study", "--help"], repeats=repeats)}


# ---------------------------------------------------------------------------------------------------------
# the parent: one driver process per size, then the reading costs


def run_size(args: argparse.Namespace, trials: int, storage: Path) -> dict[str, Any]:
    name = f"scale-{trials}"
    out_json = storage / f"{name}.child.json"
    argv = [sys.executable, "-m", "benchmarks.scale", "--child", str(trials), "--child-out", str(out_json),
            "--storage", str(storage), "--name", name, "--reports", str(args.reports),
            "--log-lines", str(args.log_lines), "--sleep-s", str(args.sleep_s), "--concurrency",
            str(args.concurrency), "--num-cpus", str(args.num_cpus), "--sampler", args.sampler,
            "--checkpoint-every", str(args.checkpoint_every)]
    if args.per_class_in_tune:
        argv.append("--per-class-in-tune")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    if args.s3_env:  # the study in moto's bucket; the driver's local copy of its own files under the scratch dir
        argv += ["--store-uri", f"s3://{S3_BUCKET}/studies"]
        env.update(args.s3_env, DASTUDY_HOME=str(storage / "homes"))
    started = time.perf_counter()
    # A session of its own: if the driver ignores SIGINT past the grace period, its group (it and the local Ray it
    # started) is ended by its id, nothing else.
    log_path = storage / f"{name}.driver.log"  # the driver's progress lines (one per trial event)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True, stdout=log,
                                stderr=subprocess.STDOUT)
    stopped_by = None
    try:
        proc.wait(timeout=args.time_limit)
    except subprocess.TimeoutExpired:
        stopped_by = "SIGINT (time limit)"
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            stopped_by = "SIGKILL (no exit 180 s after SIGINT)"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    wall = time.perf_counter() - started
    if not out_json.is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"benchmarks.scale: the {trials}-trial driver exited {proc.returncode} without figures "
                         f"({stopped_by or 'its last lines follow'}):\n{tail}")
    row = json.loads(out_json.read_text())
    row.update(driver_exit=proc.returncode, driver_process_wall_s=wall, stopped_by=stopped_by,
               time_limit_s=args.time_limit)
    home = Path(row["home"])
    row.update(state_sizes(home))
    row["read"] = read_costs(home, repeats=args.repeats)
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, action="append", help="study sizes (repeatable; default 100)")
    p.add_argument("--reports", type=int, default=4, help="evaluations (tune.report) of a full trial (default 4)")
    p.add_argument("--log-lines", type=int, default=20, help="training lines per evaluation in metrics.jsonl")
    p.add_argument("--sleep-s", type=float, default=0.0, help="seconds each probe waits before a report")
    p.add_argument("--concurrency", type=int, default=8, help="max_concurrent_trials (default 8)")
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray (1 per trial)")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe")
    p.add_argument("--checkpoint-every", type=int, default=1,
                   help="the study's checkpoint_every (every k-th evaluation carries a checkpoint; default 1)")
    p.add_argument("--per-class-in-tune", action="store_true",
                   help="also send the 16 per-class IoUs to Tune in every report (the pre-issue-12 payload)")
    p.add_argument("--time-limit", type=float, default=3600, help="seconds per study before SIGINT (default 3600)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each status/report command (median)")
    p.add_argument("--read-dir", action="append", default=[],
                   help="only time status/report on this existing study directory (repeatable; no study is run)")
    p.add_argument("--keep", default=None, help="keep the study directories here (default: a removed temp dir)")
    p.add_argument("--out", default=None, help="results directory (default: $OUT or benchmarks/results)")
    p.add_argument("--tag", default="scale")
    # internal: one driver process per study size
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--s3", action="store_true",
                   help="keep each study in an S3 bucket (moto's server on 127.0.0.1, started here) instead of a "
                        "local folder: the cost of object storage (uploads of the study files, Ray's snapshots)")
    p.add_argument("--storage", default=None, help=argparse.SUPPRESS)
    p.add_argument("--store-uri", default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default="scale", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.trials = args.trials or [100]
    for key in ("reports", "concurrency", "num_cpus", "repeats", "checkpoint_every"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be ≥ 1")
    if any(t < 1 for t in args.trials):
        p.error("--trials must be ≥ 1")
    return args


COLUMNS = ["trials", "reports", "snapshots", "driver_cpu_s_per_report", "driver_cpu_s_per_report_first_tenth",
           "driver_cpu_s_per_report_last_tenth", "driver_peak_rss_mib", "experiment_state_mb", "state_mb",
           "snapshot_s_total",
           "snapshot_s_max", "status_s", "report_s", "cli_floor_s", "fit_wall_s"]


# With --s3: what the driver uploaded of the study's files, and Ray's last snapshot as the bucket holds it.
S3_BUCKET = "dastudy-scale"
S3_COLUMNS = ["store_uploads", "store_uploaded_mb", "store_upload_s", "bucket_experiment_state_mb", "bucket_mb"]


def _table_row(row: Mapping[str, Any]) -> dict[str, Any]:
    read = row["read"]
    if "store_uploaded_bytes" in row:
        row = {**row, "store_uploaded_mb": row["store_uploaded_bytes"] / 1e6, "bucket_mb": row["bucket_bytes"] / 1e6,
               "bucket_experiment_state_mb": row["bucket_experiment_state_bytes"] / 1e6}
    return {**row, "state_mb": row["state_bytes_total"] / 1e6,
            "experiment_state_mb": (row.get("newest_experiment_state_bytes") or 0) / 1e6,
            "status_s": read["status"]["median_s"],
            "report_s": read["report"]["median_s"], "cli_floor_s": read["cli_floor"]["median_s"],
            "fit_wall_s": row["driver_fit_wall_s"]}


def goals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each goal of issue 12 against the measured rows (None where a row needed for it is missing)."""
    by_size = {r["trials_requested"]: r for r in rows}
    big = by_size.get(max(by_size)) if by_size else None
    small = by_size.get(min(by_size)) if by_size else None
    out: dict[str, Any] = {}
    costs = [r["driver_cpu_s_per_report"] for r in rows if r["driver_cpu_s_per_report"] is not None]
    out["cost_per_report_le_0.1s"] = bool(costs) and max(costs) <= 0.1
    if big is not None and small is not None and big is not small and small["driver_cpu_s_per_report"] \
            and big["driver_cpu_s_per_report"]:
        out["cost_ratio_largest_vs_smallest"] = big["driver_cpu_s_per_report"] / small["driver_cpu_s_per_report"]
    if big is not None:
        out["largest_study_trials"] = big["trials"]
        # the "experiment state" is what Ray encodes at each snapshot; the other is every state file,
        # the Optuna journal (1.8 MB at 1,000 trials) included
        if big.get("newest_experiment_state_bytes") is not None:
            out["experiment_state_le_5MB_at_largest"] = big["newest_experiment_state_bytes"] <= 5e6
        out["state_le_5MB_at_largest"] = big["state_bytes_total"] <= 5e6
        out["report_le_3s_at_largest"] = big["read"]["report"]["ok"] and big["read"]["report"]["median_s"] <= 3
        out["status_le_1s_at_largest"] = big["read"]["status"]["ok"] and big["read"]["status"]["median_s"] <= 1
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child is not None:  # the measured driver process
        row = run_child(args)
        Path(args.child_out).write_text(json.dumps(row, indent=1))
        return row

    from benchmarks import _common as C

    machine = C.machine_info(__import__("torch").device("cpu"))
    if args.read_dir:  # only the reading costs, on study directories that exist (e.g. with newer status/report code)
        reads = []
        for home in args.read_dir:
            home = Path(home).resolve()
            if not (home / "study.toml").is_file():
                raise SystemExit(f"--read-dir {home}: not a study directory (no study.toml)")
            reads.append({"home": str(home), **state_sizes(home), "read": read_costs(home, repeats=args.repeats)})
        columns = ["home", "trial_dirs", "state_mb", "status_s", "status_json_s", "report_s", "cli_floor_s", "ok"]
        shown = [{"home": Path(r["home"]).name, "trial_dirs": r["trial_dirs"],
                  "state_mb": r["state_bytes_total"] / 1e6, "ok": all(v["ok"] for v in r["read"].values()),
                  **{f"{k}_s": v["median_s"] for k, v in r["read"].items()}} for r in reads]
        payload = {"machine": machine, "settings": {"read_dir": args.read_dir, "repeats": args.repeats},
                   "reads": reads}
        table = C.markdown_table(shown, columns)
        json_path, md_path = C.write_report(args.out or C.default_out_dir() / "cpu", args.tag, payload, table)
        print(f"{table}\n\nwrote {json_path} and {md_path}")
        return payload
    rows = []
    keep = Path(args.keep).resolve() if args.keep else None
    columns = COLUMNS + S3_COLUMNS if args.s3 else COLUMNS
    with contextlib.ExitStack() as stack:
        storage = stack.enter_context(C.scratch_dir("dastudy-scale-") if keep is None else _existing(keep))
        args.s3_env = None
        if args.s3:
            from benchmarks.moto_s3 import moto_server

            args.s3_env = stack.enter_context(moto_server(storage, S3_BUCKET))
        for trials in args.trials:
            row = run_size(args, trials, storage)
            rows.append(row)
            print(C.markdown_table([_table_row(row)], columns), flush=True)
    del args.s3_env
    payload = {"machine": machine, "settings": {k: v for k, v in vars(args).items() if not k.startswith("child")},
               "rows": rows, "goals": goals(rows)}
    table = C.markdown_table([_table_row(r) for r in rows], columns)
    table += "\n\ngoals: " + ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                                        for k, v in payload["goals"].items())
    json_path, md_path = C.write_report(args.out or C.default_out_dir() / "cpu", args.tag, payload, table)
    print(f"\n{table}\n\nwrote {json_path} and {md_path}")
    return payload


class _existing:
    """A directory the user named (created if missing, never emptied)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def __exit__(self, *exc) -> None:
        return None


if __name__ == "__main__":
    main()

"""The source-only baseline every adversarial trial starts from: trained once per distinct training config (its
directory is named by a digest of that config, so studies with the same baseline share it), resumed when an
earlier attempt was interrupted, and copied (its small files and TensorBoard events) into ``<study>/baseline/``.
Trained as one Ray task on the biggest node, with its progress relayed to the driver's log."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from study.config.resources import check_datasets, cluster_nodes
from study.config.study_config import StudyConfig, baseline_train_config
from study.state.location import write_json
from trainables.config import to_dict

__all__ = ["baseline_dir", "prepare_baseline", "baseline_state", "copy_baseline_files", "BASELINE_COPY"]


def baseline_dir(study: StudyConfig, storage_root: Path) -> Path:
    cfg = baseline_train_config(study)
    identity = {k: v for k, v in to_dict(cfg).items() if k != "name"}  # same training = same baseline
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    stem = Path(study.baseline.config).stem if study.baseline.config else cfg.name  # type: ignore[union-attr]
    return storage_root / "baselines" / f"{stem}-{digest}"


def prepare_baseline(study: StudyConfig, *, storage_root: Path,
                     log: Callable[[str], None] = print) -> tuple[Path, str]:
    """Train the source-only baseline (as a Ray task) unless a completed one with the same config exists in
    ``<storage>/baselines/``; returns its run directory and best checkpoint (model weights chosen on the
    baseline's own selection split), which initialises every trial."""
    import ray

    from trainables.tune import run_baseline

    cfg = baseline_train_config(study)
    run_dir = baseline_dir(study, storage_root)
    best = run_dir / "checkpoints" / "best.pt"
    state, result = baseline_state(run_dir, cfg.optim.iterations)
    if state == "completed":
        log(f"baseline: reusing {run_dir} ({result.get('best_metric')} = {_pct(result.get('best_value'))})")
        return run_dir, str(best)
    check_datasets(cfg, what="baseline")
    if state == "partial":  # killed before its first checkpoint: nothing to resume, and its files block a start
        kept = _set_aside(run_dir)
        log(f"baseline: an interrupted attempt without a checkpoint was kept as {kept}; training again")
    resume = state == "resumable"
    nodes = cluster_nodes()
    biggest = max(nodes, key=lambda n: (n.gpu, n.cpu))
    num_gpus = 1 if study.resources.gpu > 0 and biggest.gpu >= 1 else 0
    # A trial's CPU share, not more: Ray sets OMP_NUM_THREADS from it, and on a small busy machine two torch
    # threads per process contend badly (measured ~30x slower steps on 2 loaded cores).
    num_cpus = max(1.0, min(biggest.cpu, study.resources.cpu))
    log(f"baseline: training {cfg.adapt.mode} {cfg.model.name} for {cfg.optim.iterations} iterations in {run_dir}"
        + (" (resuming)" if resume else ""))
    task = ray.remote(run_baseline).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)
    ref = task.remote(to_dict(cfg), str(run_dir), resume=resume)
    last_line = ""
    while True:
        ready, _ = ray.wait([ref], timeout=10)
        if ready:
            break
        line = _last_progress(run_dir / "metrics.jsonl", cfg.optim.iterations)
        if line and line != last_line:
            log(f"baseline: {line}")
            last_line = line
    result = ray.get(ref)
    if baseline_state(run_dir, cfg.optim.iterations)[0] != "completed":
        raise RuntimeError(f"baseline run {run_dir} ended {result.get('status')} at iteration "
                           f"{result.get('iterations')} of {cfg.optim.iterations}: {result.get('message')}; "
                           "rerunning the study resumes it")
    log(f"baseline: done in {result.get('wall_s', 0):.0f}s, {result.get('best_metric')} = "
        f"{_pct(result.get('best_value'))} at iteration {result.get('best_iteration')}")
    return run_dir, str(best)


def baseline_state(run_dir: Path, iterations: int) -> tuple[str, dict[str, Any]]:
    """``completed`` only if its result says so *and* it trained all ``iterations`` with a best checkpoint (a
    Ctrl-C during an older baseline recorded 149 of 400 iterations as completed, and every later study reused it);
    else ``resumable`` (``checkpoints/last.pt`` exists), ``partial`` (files but no checkpoint: killed early) or
    ``absent``. Returns the state and the result record (``{}`` if none)."""
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        result = {}
    if (result.get("status") == "completed" and int(result.get("iterations") or 0) >= iterations
            and (run_dir / "checkpoints" / "best.pt").is_file()):
        return "completed", result
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "resumable", result
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return "partial", result
    return "absent", result


def _set_aside(run_dir: Path) -> Path:
    """Rename an unusable attempt to ``<name>.attempt-N`` (nothing is deleted)."""
    n = 1
    while run_dir.with_name(f"{run_dir.name}.attempt-{n}").exists():
        n += 1
    kept = run_dir.with_name(f"{run_dir.name}.attempt-{n}")
    run_dir.rename(kept)
    return kept


def _pct(value: Any) -> str:
    return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else str(value)


BASELINE_COPY = ("config.toml", "provenance.json", "metrics.jsonl", "result.json")


def copy_baseline_files(run_dir: Path, dest: Path, checkpoint: str) -> None:
    """``<study>/baseline/``: the baseline's small files and TensorBoard events (not its checkpoints), so the
    study directory alone holds what reports and TensorBoard compare against."""
    dest.mkdir(parents=True, exist_ok=False)
    for name in BASELINE_COPY:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    if (run_dir / "tb").is_dir():
        shutil.copytree(run_dir / "tb", dest / "tb")
    write_json(dest / "baseline.json", {"run_dir": str(run_dir), "checkpoint": checkpoint})


def _last_progress(path: Path, total: int) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        shown = " ".join(f"{k.split('/', 1)[1] if k.startswith('train/') else k}={v:.3g}" for k, v in record.items()
                         if (k.startswith("train/") or k in ("val/mIoU16", "val/mIoU19", "select/mIoU16"))
                         and isinstance(v, float))
        return f"iteration {record.get('iteration')}/{total} {shown}".strip()
    return ""

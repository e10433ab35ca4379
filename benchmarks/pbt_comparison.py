"""Population-based training of λ_adv against a constant λ_adv and the DANN ramp, at equal compute, with a
label-free selection (issue 22).

Four arms on the synthetic benchmark, each spending ``POPULATION`` runs of ``ITERATIONS`` adversarial iterations
(single-level AdaptSegNet on ``deeplabv2_tiny`` from one source-only checkpoint) per population seed:

``constant``
    λ_adv ∈ ``LAMBDAS`` (a log grid over the same range PBT searches), one run each.
``ramp``
    the DANN ramp λ(p) = λ_max · (2 / (1 + e^(−10 p)) − 1), p = iteration / ``ITERATIONS`` (Ganin et al. 2016,
    https://arxiv.org/abs/1505.07818), to each λ_max ∈ ``LAMBDAS``; λ changes at each evaluation (the engine's
    schedule replay, trainables/lineage.py ``ScheduleReporter``), the value of each segment taken at its midpoint.
``pbt``
    a real dastudy study with ``scheduler.kind = "pbt"``: ``POPULATION`` members, initial λ_adv drawn by the
    seeded sampler over [min(LAMBDAS), max(LAMBDAS)], the bottom quarter cloning a top member at every evaluation
    after the first, λ_adv resampled or multiplied by 1.2 / 0.8 (Ray Tune's PopulationBasedTraining).
``pb2``
    the same study with ``scheduler.kind = "pb2"`` (Ray Tune's PB2, Parker-Holder et al. 2020,
    https://arxiv.org/abs/2002.02518): the explored λ_adv chosen by a Gaussian-process bandit instead of at random;
    no burn-in (PB2 has none).

Every arm picks its model WITHOUT target labels, by the label-free validator ``uda/im`` at the last evaluation (the
PBT study's own metric); the target val mIoU16 of that pick is the arm's result. The best val mIoU16 within each
arm (an oracle no user has) is reported beside it. Runs of one seed share the run seed (same start, same data
order), so the arms are paired by seed; differences get 95 % t-intervals over seeds (scipy).

Written: ``RESULTS/pbt_comparison.csv`` (one row per run: arm, seed, λ or λ_max or the PBT member, final uda/im,
final val/mIoU16, iterations trained, picked) and ``OUT/pbt_s<seed>/`` (the PBT studies; ``dastudy study report``
draws their schedules).

Usage (about 12 min per seed on a 2-core machine)::

    python -m benchmarks.pbt_comparison --out runs/pbt_comparison --seeds 1 2 3
    python -m benchmarks.pbt_comparison --out runs/pbt_comparison --summary-only
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "cpu"
LAMBDAS = (0.001, 0.003, 0.01, 0.03)
POPULATION = len(LAMBDAS)
ITERATIONS, INTERVAL = 120, 20
PICK = "uda/im"
ARMS = ("constant", "ramp", "pbt", "pb2")
TARGET = "val/mIoU16"


def train_table(data: Path, init: Path, *, seed: int, lam: float, name: str) -> dict[str, Any]:
    """The validator study's run config (benchmarks/validator_study.py), single-level, with ``uda/im`` only."""
    from benchmarks.validator_study import base_config
    from trainables.config import merge

    return merge(base_config(data, name=name), {
        "model": {"multi_level": False, "init_checkpoint": str(init)},
        "optim": {"iter_max": ITERATIONS, "iter_stop": ITERATIONS},
        "adapt": {"mode": "adversarial", "lambda_adv_main": lam, "d_ndf": 16},
        "eval": {"interval": INTERVAL, "validators": ["im"]},
        "runtime": {"seed": seed},
    })


def baseline(out: Path, data: Path) -> Path:
    from trainables.config import TrainConfig, from_dict, merge
    from trainables.engine import run_training

    run = out / "baseline"
    checkpoint = run / "checkpoints" / "best.pt"
    if checkpoint.is_file():
        return checkpoint
    table = train_table(data, Path("unused"), seed=0, lam=0.0, name="pbt_comparison_baseline")
    table["model"].pop("init_checkpoint")
    cfg = merge(table, {"adapt": {"mode": "source_only"}, "optim": {"iter_max": 300, "iter_stop": 300,
                                                                      "batch_size": 4},
                        "eval": {"interval": 100, "selection": "source_val", "validators": []}})
    result = run_training(from_dict(TrainConfig, cfg, source="pbt_comparison baseline"), run)
    print(f"baseline: {result['status']} best {result['best_metric']} = {result['best_value']:.4f}", flush=True)
    return checkpoint


def dann_ramp(lam_max: float) -> list[tuple[int, dict[str, float]]]:
    """The DANN ramp as one value per evaluation interval (at the interval's midpoint)."""
    segments = []
    for start in range(0, ITERATIONS, INTERVAL):
        p = (start + INTERVAL / 2) / ITERATIONS
        segments.append((start, {"adapt.lambda_adv_main": lam_max * (2 / (1 + math.exp(-10 * p)) - 1)}))
    return segments


def _final(run: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in rows if r.get("kind") == "eval"]
    return {PICK: evals[-1].get(PICK, math.nan), TARGET: evals[-1].get(TARGET, math.nan),
            "iteration": evals[-1].get("iteration")}


def engine_run(job: tuple[str, int, float, str, str, str]) -> dict[str, Any]:
    """One constant or ramp run in its own process (threads = 1)."""
    arm, seed, lam, data, init, out = job
    from trainables.config import TrainConfig, from_dict
    from trainables.engine import run_training
    from trainables.lineage import ScheduleReporter

    run = Path(out) / f"{arm}_s{seed}" / f"lambda_{lam:g}"
    if not (run / "result.json").is_file():
        cfg = from_dict(TrainConfig, train_table(Path(data), Path(init), seed=seed, lam=lam,
                                                 name=f"{arm}_s{seed}_{lam:g}"), source=f"{arm} seed {seed}")
        reporters = [ScheduleReporter(dann_ramp(lam))] if arm == "ramp" else []
        run_training(cfg, run, reporters=reporters, overwrite=run.exists())
    return {"arm": arm, "seed": seed, "run": f"lambda_max={lam:g}" if arm == "ramp" else f"lambda={lam:g}",
            "iterations": ITERATIONS, **_final(run)}


def pbt_study(out: Path, data: Path, init: Path, seed: int, kind: str = "pbt") -> list[dict[str, Any]]:
    """A real study with ``scheduler.kind = kind`` (``pbt`` or ``pb2``; PB2 has no burn-in and its Gaussian process
    chooses the explored values, so it gets neither ``burn_in`` nor ``resample_probability``)."""
    from study.config.study_config import study_from_dict
    from study.run.tuner import run_study
    from trainables.lineage import read_lineage

    name = f"{kind}_s{seed}"
    settings = ({"perturbation_interval": 1, "burn_in": 1, "quantile_fraction": 0.25, "resample_probability": 0.25}
                if kind == "pbt" else {"perturbation_interval": 1, "quantile_fraction": 0.25})
    home = out / "studies" / name
    if not home.is_dir():
        table = {
            "name": name, "metric": PICK, "mode": "max", "num_samples": POPULATION, "max_concurrent_trials": 2,
            "checkpoints_to_keep": 3, "reuse_actors": True,
            "search": {"space": "lambda_adv", "sampler": "tpe", "seed": seed, "startup_trials": POPULATION,
                       "params": {"lambda_low": min(LAMBDAS), "lambda_high": max(LAMBDAS)}},
            "scheduler": {"kind": kind, "pbt": settings},
            "resources": {"cpu": 1, "gpu": 0},
            "train": train_table(data, init, seed=seed, lam=0.001, name=name),
        }
        study = study_from_dict(table, source=f"pbt_comparison seed {seed}", cwd=out)
        run_study(study, storage=str(out / "studies"), num_cpus=2)
    rows = []
    for trial in sorted(home.glob("trial_*")):
        run = trial / "run"
        lineage = read_lineage(run)
        trained = sum(1 for r in lineage if r.get("event") == "eval") * INTERVAL  # this member's own work
        rows.append({"arm": kind, "seed": seed, "run": trial.name, "iterations": trained, **_final(run)})
    return rows


def summarise(rows: list[dict[str, Any]]) -> str:
    """Per arm: the label-free pick's val mIoU16 (mean ± sd over seeds), the oracle's, and the pick paired by seed
    against the constant arm's pick, with a 95 % t-interval."""
    from scipy import stats

    arms = tuple(a for a in ARMS if any(r["arm"] == a for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    picked: dict[tuple[str, int], float] = {}
    oracle: dict[tuple[str, int], float] = {}
    compute: dict[str, int] = {}
    for arm in arms:
        for seed in seeds:
            runs = [r for r in rows if r["arm"] == arm and r["seed"] == seed]
            if not runs:
                continue
            best = max(runs, key=lambda r: (r[PICK], -r[TARGET]))  # ties: the worse target (no label peeking)
            picked[arm, seed] = 100 * best[TARGET]
            oracle[arm, seed] = 100 * max(r[TARGET] for r in runs)
            compute[arm] = compute.get(arm, 0) + sum(int(r["iterations"]) for r in runs)

    def ms(values: list[float]) -> str:
        if not values:
            return "–"
        if len(values) == 1:
            return f"{values[0]:.2f} (n = 1)"
        return f"{sum(values) / len(values):.2f} ± {stats.tstd(values):.2f} (n = {len(values)})"

    lines = ["| arm | picked by uda/im: val mIoU16 (%) | oracle pick (%) | Δ picked vs constant, 95 % CI | "
             "iterations trained |", "|---|---|---|---|---|"]
    for arm in arms:
        mine = [picked[arm, s] for s in seeds if (arm, s) in picked]
        delta = "–"
        pairs = [picked[arm, s] - picked["constant", s] for s in seeds if (arm, s) in picked
                 and ("constant", s) in picked]
        if arm != "constant" and len(pairs) >= 2:
            mean = sum(pairs) / len(pairs)
            half = stats.t.ppf(0.975, len(pairs) - 1) * stats.tstd(pairs) / math.sqrt(len(pairs))
            delta = f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] (n = {len(pairs)})"
        lines.append(f"| {arm} | {ms(mine)} | {ms([oracle[arm, s] for s in seeds if (arm, s) in oracle])} | "
                     f"{delta} | {compute.get(arm, 0)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--summary-only", action="store_true", help="summarise the CSV in --results")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="arms to run; the CSV keeps the other arms' rows already in it")
    args = parser.parse_args(argv)
    csv_path = args.results / "pbt_comparison.csv"
    fields = ["arm", "seed", "run", PICK, TARGET, "iteration", "iterations"]
    if not args.summary_only:
        from data.synthetic import generate

        args.out.mkdir(parents=True, exist_ok=True)
        data = args.out / "data"
        generate(data, seed=0)
        init = baseline(args.out, data)
        rows: list[dict[str, Any]] = []
        started = time.perf_counter()
        for seed in args.seeds:
            jobs = [(arm, seed, lam, str(data), str(init), str(args.out)) for arm in ("constant", "ramp")
                    if arm in args.arms for lam in LAMBDAS]
            if jobs:
                with ProcessPoolExecutor(max_workers=2) as pool:
                    rows += list(pool.map(engine_run, jobs))
            for kind in ("pbt", "pb2"):
                if kind in args.arms:
                    rows += pbt_study(args.out, data, init, seed, kind)
            print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)
        if csv_path.is_file():  # keep what earlier runs measured for the arms and seeds not run now
            with open(csv_path) as fh:
                kept = [r for r in csv.DictReader(fh)
                        if not (r["arm"] in args.arms and int(r["seed"]) in args.seeds)]
            rows = kept + rows
        args.results.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows([{k: r.get(k) for k in fields} for r in rows])
    with open(csv_path) as fh:
        rows = [{**r, "seed": int(r["seed"]), PICK: float(r[PICK]), TARGET: float(r[TARGET])}
                for r in csv.DictReader(fh)]
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

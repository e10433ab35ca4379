"""Does the configuration a study reports as best match the true best? FIFO, plain ASHA and replicate-aware ASHA.

Two steps, because real studies on 2 cores are slow and one run per scheduler would measure luck, not schedulers:

``record``
    ONE FIFO study on the synthetic benchmark (the ``demo`` preset: AdaptSegNet from its source-only baseline) over
    a grid of configurations (λ_adv × lr), each on more seeds than a study would use (``search.seeds``, so each
    configuration's seeds run one after another), every trial trained to the end.
    Every trial's full learning curve (the study metric at each evaluation) goes to a CSV
    (``benchmarks/results/cpu/replicate_asha_curves.csv``). The **true best** configuration is the one with the
    highest mean final metric over all recorded seeds.

``replay``
    Replays the schedulers' decisions on the recorded curves. ASHA only *stops* trials; a stopped trial's curve up to
    that point is the recorded one, so a replay is exact for what a scheduler sees. Each replay draws a subset of
    ``--seeds`` seeds (the study's replicates), a random order of the configurations and of the seeds within each, runs
    them ``--concurrency`` at a time in an event simulation (every evaluation takes one time unit) with the real
    scheduler objects (Ray's ``AsyncHyperBandScheduler``; :class:`study.run.replicates.ReplicateASHA`), and reports the
    configuration the study would report. All three see the same trials in the same order, configuration by
    configuration (as :class:`study.run.replicates.ReplicateSearch` hands them out); the rule:

    - FIFO and replicate-aware ASHA: the highest mean final metric over its replicates that reached ``max_t``;
    - plain ASHA: the same rule (what the report did before issue 18: a configuration with one surviving seed
      counts, its mean is that seed's value);
    - plain ASHA, "report needs n >= 2": only configurations with at least two replicates at ``max_t`` count (the
      report's rule after issue 18); ``no_pick`` counts replays where none had two.

    Per scheduler: P(reported best = true best) with a 95 % Wilson interval over replays (replays share the
    recorded curves, so the interval covers the replay draws, not a new recording), the mean regret over replays
    with a pick (true mean of the true best minus true mean of the reported one, mIoU points) and trial-iterations
    spent (evaluations × iterations per evaluation, summed over trials), relative to FIFO.

Example::

    python -m benchmarks.replicate_asha record --out DIR     # 6 configurations x 5 seeds: 15 min at load ~5
    python -m benchmarks.replicate_asha export STORAGE/replicate-asha-record    # whole configurations so far
    python -m benchmarks.replicate_asha replay --curves benchmarks/results/cpu/replicate_asha_curves.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmarks import _common as C

CURVES = "replicate_asha_curves.csv"
SEED_KEY = "runtime.seed"


# ---------------------------------------------------------------------------------------------------------
# record


def record_overrides(args: argparse.Namespace, data: Path) -> list[str]:
    from study.commands.demo import demo_overrides

    lambdas = [float(v) for v in args.lambdas.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    seeds = [int(v) for v in args.record_seeds.split(",")]
    out = demo_overrides(data=data, cuda=False)
    # search.seeds: each configuration's seeds run one after another, so a recording stopped early (a loaded
    # machine) still holds whole configurations (`export`)
    out += ['search.space="lambda_lr"', 'search.sampler="grid"', f"search.seed={args.sampler_seed}",
            f"search.params.lambda_grid={json.dumps(lambdas)}", f"search.params.lr_grid={json.dumps(lrs)}",
            f"search.seeds={json.dumps(seeds)}", f"num_samples={len(lambdas) * len(lrs)}",
            'scheduler.kind="fifo"', f"max_concurrent_trials={args.concurrency}"]
    return out + list(args.override)


def curve_rows(results: Sequence[Any], metric: str) -> list[dict[str, Any]]:
    """One row per (trial, evaluation) from a Ray ``ResultGrid``: configuration, seed, evaluation, metric."""
    rows = []
    for result in results:
        config = dict(result.config or {})
        seed = config.pop(SEED_KEY)
        frame = result.metrics_dataframe
        if frame is None or metric not in frame:
            continue
        trial = (result.metrics or {}).get("trial_id")
        for _, rec in frame.iterrows():
            value = float(rec[metric])
            rows.append({"config": json.dumps(config, sort_keys=True), "seed": int(seed), "trial": trial,
                         "evaluation": int(rec["training_iteration"]), "iteration": int(rec["iteration"]),
                         "value": value})
    rows.sort(key=lambda r: (r["config"], r["seed"], r["evaluation"]))
    return rows


def record(args: argparse.Namespace) -> Path:
    from benchmarks.loader import ensure_benchmark
    from study.config.study_config import load_study_config
    from study.run.tuner import run_study

    data = Path(args.data).resolve()
    ensure_benchmark(data)
    study = load_study_config("demo", record_overrides(args, data), name=args.name)
    own = args.storage is None
    storage = Path(tempfile.mkdtemp(prefix="dastudy-replicates-")) if own else Path(args.storage)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        results, _ = run_study(study, storage=str(storage), num_cpus=args.num_cpus)
        rows = curve_rows(list(results), study.study_metric)
    finally:
        if own:
            shutil.rmtree(storage, ignore_errors=True)
    path = out_dir / CURVES
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["config", "seed", "trial", "evaluation", "iteration", "value"])
        writer.writeheader()
        writer.writerows(rows)
    meta = {"command": "python -m benchmarks.replicate_asha " + " ".join(args.argv), "metric": study.study_metric,
            "max_t": study.max_t, "wall_s": time.perf_counter() - start, "trials": len(results),
            "errors": sum(r.error is not None for r in results), "machine": C.machine_info(_cpu()),
            "overrides": record_overrides(args, data)}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    print(f"wrote {path} ({len(rows)} rows, {len(results)} trials, {meta['wall_s']:.0f} s)")
    return path


def study_dir_rows(home: Path, metric: str, max_t: int) -> tuple[list[dict[str, Any]], int]:
    """Curve rows read from a study directory (``trial_*/params.json`` and ``result.json``), keeping only the
    configurations whose every recorded seed trained to ``max_t``: a recording stopped early (``export``) still
    gives whole configurations. Returns the rows and how many trials were left out."""
    by_config: dict[str, dict[int, list[dict[str, Any]]]] = {}
    trials = 0
    for trial_dir in sorted(Path(home).glob("trial_*")):
        try:
            config = json.loads((trial_dir / "params.json").read_text())
            results = [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines() if x.strip()]
        except (OSError, ValueError):
            continue
        trials += 1
        seed = config.pop(SEED_KEY)
        key = json.dumps(config, sort_keys=True)
        by_config.setdefault(key, {})[int(seed)] = [
            {"config": key, "seed": int(seed), "trial": trial_dir.name.removeprefix("trial_"),
             "evaluation": int(r["training_iteration"]), "iteration": int(r["iteration"]), "value": float(r[metric])}
            for r in results if metric in r]
    seeds = set().union(*(set(v) for v in by_config.values())) if by_config else set()
    rows = [row for runs in by_config.values()
            if set(runs) == seeds and all(len(r) == max_t for r in runs.values())
            for run in runs.values() for row in run]
    rows.sort(key=lambda r: (r["config"], r["seed"], r["evaluation"]))
    return rows, trials - len({(r["config"], r["seed"]) for r in rows})


def export(args: argparse.Namespace) -> Path:
    from study.state.location import load_study_dir

    study, _ = load_study_dir(Path(args.study))
    rows, left_out = study_dir_rows(Path(args.study), study.study_metric, study.max_t)
    path = Path(args.out) / CURVES
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["config", "seed", "trial", "evaluation", "iteration", "value"])
        writer.writeheader()
        writer.writerows(rows)
    meta = {"command": "python -m benchmarks.replicate_asha " + " ".join(args.argv), "metric": study.study_metric,
            "max_t": study.max_t, "study": str(args.study), "configurations": len({r["config"] for r in rows}),
            "trials_kept": len({(r["config"], r["seed"]) for r in rows}), "trials_left_out": left_out}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {path}: {meta}")
    return path


def _cpu():
    import torch

    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------
# replay


def load_curves(paths: str | Path) -> tuple[dict[tuple[str, int], dict[int, float]], int]:
    """``{(configuration, seed): {evaluation: value}}`` and the iterations per evaluation from recorded CSVs
    (comma-separated paths: recordings of the same study setup merged; a (configuration, seed) recorded twice
    must have the same curve, which also checks that trials are deterministic)."""
    curves: dict[tuple[str, int], dict[int, float]] = {}
    per_eval = set()
    for path in str(paths).split(","):
        found: dict[tuple[str, int], dict[int, float]] = {}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                evaluation = int(row["evaluation"])
                found.setdefault((row["config"], int(row["seed"])), {})[evaluation] = float(row["value"])
                per_eval.add(int(row["iteration"]) / evaluation)
        for key, curve in found.items():
            if key in curves and curves[key] != curve:
                raise ValueError(f"{path}: {key} was recorded before with another curve ({curves[key]} vs {curve})")
            curves[key] = curve
    if len(per_eval) != 1:
        raise ValueError(f"{paths}: evaluations are not evenly spaced ({sorted(per_eval)} iterations each)")
    return curves, int(per_eval.pop())


def true_means(curves: Mapping[tuple[str, int], Mapping[int, float]], max_t: int) -> dict[str, float]:
    """Ground truth: each configuration's mean final value over every recorded seed."""
    finals: dict[str, list[float]] = {}
    for (config, _), curve in curves.items():
        finals.setdefault(config, []).append(curve[max_t])
    return {config: math.fsum(v) / len(v) for config, v in finals.items()}


def simulate(scheduler: Any, trials: Sequence[tuple[str, int]], curves, *, max_t: int, concurrency: int,
             prefix: str) -> dict[tuple[str, int], int]:
    """Run ``trials`` (in this arrival order) ``concurrency`` at a time under ``scheduler`` (None: FIFO), one
    evaluation per time unit each, as Ray's controller drives a scheduler; returns the evaluations each trained."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    queue = list(trials)
    running: list[Any] = []
    trained: dict[tuple[str, int], int] = {}
    while queue or running:
        while queue and len(running) < concurrency:
            config, seed = queue.pop(0)
            trial = SimpleNamespace(trial_id=f"{prefix}{len(trained)}", config={**json.loads(config), SEED_KEY: seed},
                                    last_result={}, key=(config, seed), step=0)
            trained[trial.key] = 0
            if scheduler is not None:
                scheduler.on_trial_add(None, trial)
            running.append(trial)
        for trial in list(running):
            trial.step += 1
            trained[trial.key] = trial.step
            result = {"training_iteration": trial.step, "m": curves[trial.key][trial.step]}
            trial.last_result = result
            if scheduler is None:
                decision = TrialScheduler.STOP if trial.step >= max_t else TrialScheduler.CONTINUE
            else:
                decision = scheduler.on_trial_result(None, trial, result)
            if decision == TrialScheduler.STOP or trial.step >= max_t:
                if scheduler is not None:
                    scheduler.on_trial_complete(None, trial, result)
                running.remove(trial)
    return trained


def reported_best(trained: Mapping[tuple[str, int], int], curves, *, max_t: int, min_n: int = 1) -> str | None:
    """The configuration a study reports: the highest mean final value over its replicates that reached max_t,
    among configurations with at least ``min_n`` of them."""
    finals: dict[str, list[float]] = {}
    for (config, seed), steps in trained.items():
        if steps >= max_t:
            finals.setdefault(config, []).append(curves[(config, seed)][max_t])
    ranked = {c: math.fsum(v) / len(v) for c, v in finals.items() if len(v) >= min_n}
    return max(sorted(ranked), key=lambda c: ranked[c]) if ranked else None


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (Wilson 1927)."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def replay(curves, per_eval: int, *, seeds: int, replays: int, concurrency: int, grace_period: int,
           reduction_factor: float, rng_seed: int) -> list[dict[str, Any]]:
    from ray.tune.schedulers import ASHAScheduler

    from study.run.replicates import ReplicateASHA

    max_t = max(max(c) for c in curves.values())
    truth = true_means(curves, max_t)
    best = max(sorted(truth), key=lambda c: truth[c])
    configs = sorted(truth)
    recorded_seeds = sorted({s for _, s in curves})
    if seeds > len(recorded_seeds):
        raise ValueError(f"--seeds {seeds}: only {len(recorded_seeds)} seeds were recorded")
    rules = {"fifo": 1, "asha": 1, "asha (report needs n >= 2)": 2, "replicate-aware asha": 1}
    tally = {name: {"hits": 0, "none": 0, "regret": [], "evaluations": []} for name in rules}
    rng = random.Random(rng_seed)
    for r in range(replays):
        subset = rng.sample(recorded_seeds, seeds)
        order = rng.sample(configs, len(configs))
        trials = [(c, s) for c in order for s in rng.sample(subset, len(subset))]  # config-major, as searched
        runs = {
            "fifo": simulate(None, trials, curves, max_t=max_t, concurrency=concurrency, prefix=f"f{r}_"),
            "asha": simulate(ASHAScheduler(metric="m", mode="max", max_t=max_t, grace_period=grace_period,
                                           reduction_factor=reduction_factor),
                             trials, curves, max_t=max_t, concurrency=concurrency, prefix=f"a{r}_"),
            "replicate-aware asha": simulate(
                ReplicateASHA(replicates=seeds, study_dir=None, max_t=max_t, grace_period=grace_period,
                              reduction_factor=reduction_factor, metric="m", mode="max"),
                trials, curves, max_t=max_t, concurrency=concurrency, prefix=f"r{r}_"),
        }
        runs["asha (report needs n >= 2)"] = runs["asha"]
        for name, trained in runs.items():
            picked = reported_best(trained, curves, max_t=max_t, min_n=rules[name])
            t = tally[name]
            t["evaluations"].append(sum(trained.values()))
            if picked is None:
                t["none"] += 1
                continue
            t["hits"] += picked == best
            t["regret"].append(100 * (truth[best] - truth[picked]))
    fifo_cost = sum(tally["fifo"]["evaluations"]) / replays
    rows = []
    for name, t in tally.items():
        low, high = wilson(t["hits"], replays)
        cost = sum(t["evaluations"]) / replays
        rows.append({"scheduler": name, "concurrency": concurrency, "seeds": seeds, "replays": replays,
                     "p_true_best": t["hits"] / replays, "ci95": f"[{low:.2f}, {high:.2f}]",
                     "no_pick": t["none"],
                     "mean_regret_points": (math.fsum(t["regret"]) / len(t["regret"])) if t["regret"] else math.nan,
                     "trial_iterations": cost * per_eval, "vs_fifo": cost / fifo_cost})
    return rows


def replay_main(args: argparse.Namespace) -> dict[str, Any]:
    curves, per_eval = load_curves(args.curves)
    max_t = max(max(c) for c in curves.values())
    truth = true_means(curves, max_t)
    rows = []
    for concurrency in (int(c) for c in str(args.concurrency).split(",")):
        rows += replay(curves, per_eval, seeds=args.seeds, replays=args.replays, concurrency=concurrency,
                       grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                       rng_seed=args.rng_seed)
    ranking = sorted(truth, key=lambda c: -truth[c])
    truth_lines = "\n".join(f"| {i + 1} | `{c}` | {100 * truth[c]:.2f} |" for i, c in enumerate(ranking))
    table = C.markdown_table(rows, ["scheduler", "concurrency", "seeds", "replays", "p_true_best", "ci95",
                                    "no_pick", "mean_regret_points", "trial_iterations", "vs_fifo"])
    table += ("\n\nGround truth (mean final metric over all recorded seeds):\n\n| rank | configuration | "
              "mean (%) |\n|---|---|---|\n" + truth_lines)
    payload = {"machine": C.machine_info(_cpu()), "options": {k: v for k, v in vars(args).items() if k != "argv"},
               "rows": rows,
               "truth": truth, "max_t": max_t, "iterations_per_evaluation": per_eval,
               "recorded_seeds": sorted({s for _, s in curves})}
    print(table)
    if args.out:
        json_path, _ = C.write_report(args.out, args.tag, payload, table)
        print(f"wrote {json_path}")
    return payload


# ---------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replicate_asha",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="one FIFO study over configurations x seeds; every curve to CSV")
    rec.add_argument("--data", default="datasets/synth")
    rec.add_argument("--storage", default=None, help="study storage (default: a temporary folder, removed)")
    rec.add_argument("--name", default="replicate-asha-record")
    rec.add_argument("--lambdas", default="0.001,0.01,0.1", help="λ_adv main grid")
    rec.add_argument("--lrs", default="0.005,0.02", help="backbone learning-rate grid")
    rec.add_argument("--record-seeds", default="1,2,3,4,5", help="seeds of every configuration")
    rec.add_argument("--sampler-seed", type=int, default=0)
    rec.add_argument("--concurrency", type=int, default=2)
    rec.add_argument("--num-cpus", type=int, default=None)
    rec.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    rec.add_argument("--out", default=str(C.default_out_dir()))
    exp = sub.add_parser("export", help="curves of whole configurations from a (perhaps unfinished) study")
    exp.add_argument("study", help="the recording's study directory")
    exp.add_argument("--out", default=str(C.default_out_dir()))
    rep = sub.add_parser("replay", help="replay FIFO / ASHA / replicate-aware ASHA on recorded curves")
    recorded = ",".join(str(Path(__file__).parent / "results" / "cpu" / f"replicate_asha_curves_{part}.csv")
                        for part in ("6x5", "lr0.01", "lambda0.03"))  # λ {.001, .01, .03, .1} x lr {.005, .01, .02}
    rep.add_argument("--curves", default=recorded, help="CSV(s), comma-separated (default: the 12 x 5 recording)")
    rep.add_argument("--seeds", type=int, default=3, help="replicates per configuration in a replayed study")
    rep.add_argument("--replays", type=int, default=2000)
    rep.add_argument("--concurrency", default="3", help="trials at a time; a list (2,3) gives one row set each")
    rep.add_argument("--grace-period", type=int, default=1)
    rep.add_argument("--reduction-factor", type=float, default=3.0)
    rep.add_argument("--rng-seed", type=int, default=0)
    rep.add_argument("--out", default=None, help="write the table and JSON here (default: print only)")
    rep.add_argument("--tag", default="replicate_asha")
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> Any:
    args = parse_args(argv)
    if args.command == "record":
        return record(args)
    if args.command == "export":
        return export(args)
    return replay_main(args)


if __name__ == "__main__":
    main()

"""``dastudy study``: run, resume and inspect hyperparameter studies (Ray Tune + Optuna, ASHA, fractional GPUs)."""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Hyperparameter studies of adversarial domain adaptation on Ray Tune + Optuna.

  run          start a study from a preset name or a study file (never overwrites an existing study)
  resume       continue an interrupted study (finished trials are kept, unfinished ones resume from checkpoints)
  status       trials, states (COMPLETE / PRUNED / FAILED / RUNNING / INTERRUPTED) and the best so far; no Ray
  report       write report.md, figures/ and best_config.toml into the study directory
  tensorboard  serve every trial's TensorBoard events (and the baseline's) on 127.0.0.1
  presets      list the shipped presets and search spaces

A study lives in STORAGE/NAME (STORAGE: --storage, else $DASTUDY_STORAGE, else ./studies)."""


EXIT_STATUS = """\
exit status: 0 every trial ended COMPLETE or PRUNED; 1 some trials did not finish (continue with `dastudy study
resume`); 3 every trial ended but some FAILED (`dastudy study status` gives each reason; each trial's error.txt is in
the study directory); 2 bad input or a refusal (another driver holds the study, a changed search space), with
nothing started; 130 interrupted by Ctrl-C (SIGINT) and 143 stopped by SIGTERM (e.g. a SLURM time limit): the
state is saved, continue with `dastudy study resume NAME`. `resume` of a finished study says so and exits 0."""


class _Paragraphs(argparse.HelpFormatter):
    """Descriptions and epilogs wrapped to the terminal, paragraph by paragraph (blank lines kept)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        return "\n\n".join(textwrap.fill(" ".join(part.split()), width, initial_indent=indent,
                                           subsequent_indent=indent, break_on_hyphens=False)
                           for part in text.split("\n\n"))


def _add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=None, metavar="PATH",
                        help="where studies live (default: $DASTUDY_STORAGE or ./studies; on a multi-node cluster a "
                             "shared filesystem path or an object-store URI such as s3://bucket/studies, whose "
                             "studies keep their local files in $DASTUDY_HOME/NAME, default ./studies/NAME)")


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=None,
                        help="study name (default: the preset's); the directory must not exist")
    parser.add_argument("--address", default=None,
                        help="connect to a running Ray cluster ('auto' or host:port) instead of starting a local one")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the local Ray started here (default: all); ignored with --address")
    _add_storage(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the trial configs (grid) or the space (TPE, random) with their resolved values, "
                             "then run every check of a real run (weights, checkpoints, datasets, GPUs and CPUs of "
                             "this machine or of --address, checkpoint disk space, study directory) and list every "
                             "problem with its fix; exit 0 if a real run would start, 2 if not. Starts no Ray, "
                             "creates nothing")


def split_overrides(args: argparse.Namespace, add_options) -> argparse.Namespace:
    """argparse cannot take options after a variable list of positionals: the overrides are collected as the
    remainder of the command line, and options found among them are parsed here."""
    from study.errors import UserError

    options = argparse.ArgumentParser(add_help=False)
    add_options(options)
    known, rest = options.parse_known_args(args.overrides)
    for key, value in vars(known).items():
        if value is not None and value is not False:
            setattr(args, key, value)
    bad = [item for item in rest if "=" not in item or item.startswith("-")]
    if bad:
        from study.cli import did_you_mean

        match = did_you_mean(bad[0], options)
        hint = f"did you mean {match!r}?" if match else "e.g. num_samples=4"
        raise UserError(f"{bad[0]!r} is neither an option nor an override KEY=VALUE ({hint})")
    args.overrides = rest
    return args


def register(subparsers) -> None:
    parser = subparsers.add_parser("study", help="run, resume and inspect hyperparameter studies",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="study_command", metavar="ACTION")

    run = sub.add_parser(
        "run", help="start a study from a preset or a study file",
        description="Start a study. PRESET_OR_FILE is a shipped preset (`dastudy study presets`) or a study TOML "
                    "file. Trailing key=value overrides change the study (num_samples=4, "
                    "resources.gpu=0.25, search.params.seeds=[1,2]) or its base run config "
                    "(train.optim.lr=1e-3). Everything is checked before Ray starts: the resolved run config of "
                    "every grid point (or every branch of the space, e.g. each backbone) with its model names, "
                    "weight and checkpoint files, the baseline, every dataset split, the Optuna storage URL; then, "
                    "once Ray runs, resources against the cluster and shared storage on multi-node clusters. "
                    "--dry-run stops after the first part. A database password in search.storage is never "
                    "written to the study directory: give it in the URL for `run` and in PGPASSWORD (or "
                    "~/.pgpass) for `resume`, `status` and `report`.",
        epilog="Examples: dastudy study run demo --name my-demo; "
               "dastudy study run lambda_sensitivity --address auto --storage /mnt/shared/studies; "
               "dastudy study run my_study.toml num_samples=16 resources.gpu=0.25\n\n" + EXIT_STATUS,
        formatter_class=_Paragraphs)
    run.add_argument("preset", metavar="PRESET_OR_FILE", help="a shipped preset name or a study TOML file")
    run.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                     help="study or train.* overrides (options may come before or after them)")
    _run_options(run)
    run.set_defaults(func=_run)

    resume = sub.add_parser(
        "resume", help="continue an interrupted study",
        description="Continue a study whose driver stopped (Ctrl-C, crash, lost head node): trials that finished "
                    "stay as they are, running and errored ones restart from their last checkpoint, the Optuna "
                    "study is reloaded from its storage and ASHA's rungs (and its stop decisions) from "
                    "asha_rungs.json.\n\n"
                    "The study continues where its directory is now: a study moved, copied or mounted elsewhere "
                    "writes only there (never into its old location). One driver at a time: a second `run` or "
                    "`resume` of the same study is refused, naming the holder (a killed driver's lock goes with "
                    "it). A study file whose search space was edited since the study ran is refused, naming the "
                    "difference, unless --allow-changed-space. On a new head, `resume s3://bucket/prefix/NAME` "
                    "(or NAME --storage s3://bucket/prefix) first downloads the study files from the store into "
                    "$DASTUDY_HOME/NAME, which must not exist yet ($DASTUDY_HOME, default ./studies, is where "
                    "object-store studies keep their local files; filesystem studies live in --storage or "
                    "$DASTUDY_STORAGE).",
        epilog="Security: Ray's experiment state in the study directory (tuner.pkl, searcher-state-*.pkl) is "
               "pickled Python, which runs code when loaded: resume only study directories you trust (your own "
               "runs, not ones downloaded or writable by others). Checkpoints are loaded with "
               "torch.load(weights_only=True) and cannot run code.\n\n" + EXIT_STATUS,
        formatter_class=_Paragraphs)
    resume.add_argument("study", metavar="NAME_OR_PATH", help="a study name in the storage, or its directory")
    resume.add_argument("--address", default=None, help="Ray cluster to use ('auto' or host:port)")
    resume.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray started here")
    resume.add_argument("--allow-changed-space", action="store_true",
                        help="continue although study.toml's search space differs from the one the study ran with: "
                             "the remaining trials are sampled from the new space, the trials that ran keep theirs "
                             "(the difference is recorded in provenance.json)")
    _add_storage(resume)
    resume.set_defaults(func=_resume)

    status = sub.add_parser("status", help="trials, states and best so far (no Ray needed)",
                            description="Print the trials of a study from its directory and Optuna storage: "
                                        "parameters, state, the study metric, why trials failed, the best so far.")
    status.add_argument("study", metavar="NAME_OR_PATH", help="a study name in the storage, or its directory")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    _add_storage(status)
    status.set_defaults(func=_status)

    report = sub.add_parser("report", help="write report.md, figures and best_config.toml",
                            description="Write the study report into the study directory (report.md, figures/, "
                                        "best_config.toml); reads only the study directory.")
    report.add_argument("study", metavar="NAME_OR_PATH", help="a study name in the storage, or its directory")
    report.add_argument("--out", metavar="DIR", default=None,
                        help="write report.md, figures/, tables/ and best_config.toml into DIR instead of the study "
                             "directory (which is then only read: a read-only study archive stays untouched)")
    report.add_argument("--json", action="store_true",
                        help="print the summary (best configuration over seeds, counts, files written) as JSON")
    report.add_argument("--format", choices=("markdown", "latex"), default="markdown",
                        help="latex: also write the λ_adv × backbone table as tables/lambda_backbone.tex (a booktabs "
                             "tabular) and print it instead of the summary")
    _add_storage(report)
    report.set_defaults(func=_report)

    tensorboard = sub.add_parser("tensorboard", help="serve the study's TensorBoard events",
                                 description="Start TensorBoard over the study directory (every trial's tb/ run with "
                                             "clean tags, HParams, prediction panels; the baseline), bound to "
                                             "127.0.0.1 unless --host says otherwise. Ctrl-C stops it.")
    tensorboard.add_argument("study", metavar="NAME_OR_PATH", help="a study name in the storage, or its directory")
    tensorboard.add_argument("--host", default="127.0.0.1",
                             help="address to bind (default 127.0.0.1: this machine only; forward the port over ssh "
                                  "rather than binding a public address)")
    tensorboard.add_argument("--port", type=int, default=6006, help="port to serve on (default 6006)")
    _add_storage(tensorboard)
    tensorboard.set_defaults(func=_tensorboard)

    presets = sub.add_parser("presets", help="list shipped presets and search spaces",
                             description="The shipped presets (`dastudy study run NAME`) and the registered search "
                                         "spaces with their [search.params] parameters and defaults.")
    presets.add_argument("--json", action="store_true",
                         help="print {presets: [{name, description}], spaces: [{name, description, params}]} as JSON")
    presets.set_defaults(func=_presets)

    from study.commands.compare import register_compare

    register_compare(sub, _add_storage, study_home)


# ---------------------------------------------------------------------------------------------------------
# locating a study


def study_home(name_or_path: str, storage: str | None) -> Path:
    """A study directory from a name in the storage or a path; a clear error if there is none."""
    from study.state.location import locate

    candidate = Path(name_or_path)
    if (candidate / "study.toml").is_file():
        return candidate.resolve()
    if "/" not in name_or_path:
        home = locate(name_or_path, storage).home
        if (home / "study.toml").is_file():
            return home
        raise FileNotFoundError(f"no study {name_or_path!r} in {home.parent} (no {home / 'study.toml'}); "
                                "pass --storage or the study directory")
    raise FileNotFoundError(f"{name_or_path}: not a study directory (no study.toml)")


# ---------------------------------------------------------------------------------------------------------
# status table (also printed at the end of `study run` and `dastudy demo`)


def _short(name: str) -> str:
    from study.config.spaces import param_label  # one name per parameter in every view of a study

    return param_label(name)


def _fmt_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _fmt_metric(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.2f}" if metric.split("/")[-1].startswith(("mIoU", "pixel_acc")) else f"{value:.4g}"


def collect_trials(home: Path) -> dict[str, Any]:
    """The study's trials from its Optuna storage: state, parameters, value, last step, failure reason."""
    import optuna

    from study.config.labels import trial_label
    from study.state.location import load_study_dir
    from study.state.optuna_storage import optuna_storage

    study_cfg, _ = load_study_dir(home)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = home / "optuna.journal"
    dimensions = _space_dimensions(home)
    trials: list[dict[str, Any]] = []
    if study_cfg.scheduler.kind in ("pbt", "pb2"):
        trials = _population_members(home)
    elif study_cfg.search.storage is not None or journal.is_file():
        try:
            ot_study = optuna.load_study(study_name=study_cfg.name, storage=optuna_storage(study_cfg, home))
            ot_trials = ot_study.get_trials(deepcopy=False)
        except KeyError:  # no study in the storage yet
            ot_trials = []
        from study.state.journal import superseded_numbers

        rerun = superseded_numbers(ot_trials)
        for t in ot_trials:
            if t.number in rerun:
                continue  # a FAIL that `study resume` ran again to an end: the re-run is the trial's record
            steps = sorted(t.intermediate_values)
            value = t.value if t.value is not None else (t.intermediate_values[steps[-1]] if steps else None)
            replicates = t.user_attrs.get("replicate_trials")
            if isinstance(replicates, dict) and replicates:  # search.seeds: one row per replicate (seed, value)
                trials += _replicate_rows(home, t, replicates, dimensions, study_cfg.max_t)
                continue
            trials.append(_trial_row(home, t, dimensions, study_cfg.max_t, value=value,
                                     curve=[[int(k), float(v)] for k, v in sorted(t.intermediate_values.items())]))
    best = _best_trial(trials, mode=study_cfg.mode)
    best_config = _best_configuration(trials, mode=study_cfg.mode)
    _mark_interrupted(home, trials)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    return {"name": study_cfg.name, "home": str(home), "metric": study_cfg.study_metric, "mode": study_cfg.mode,
            "num_samples": study_cfg.num_trials, "max_t": study_cfg.max_t, "trials": trials, "counts": counts,
            "best": best, "best_config": best_config}


def _trial_row(home: Path, t, dimensions: list[str] | None, max_t: int, *, value: float | None,
               curve: list, seed: int | None = None, trial_dir: str | None = None) -> dict[str, Any]:
    """One row of the status table for Optuna trial ``t`` (a replicate's when ``seed`` is given). label: the
    identity shown (TensorBoard's run name, the report's and optuna-dashboard's label); trial: its directory."""
    from study.config.labels import SEED_KEY, trial_label

    steps = sorted(t.intermediate_values)
    trial_dir = trial_dir if seed is not None else t.user_attrs.get("trial_dir")
    return {
        "number": t.number, "label": trial_label(t.number, t.params, dimensions, seed=seed),
        "trial": trial_dir or f"#{t.number}", "state": t.state.name,
        "params": dict(t.params) if seed is None else {**t.params, SEED_KEY: seed}, "value": value,
        "step": max(steps[-1] if steps else 0, max_t if t.state.name == "COMPLETE" else 0),
        "pruned_at": t.user_attrs.get("pruned_at"), "reason": t.user_attrs.get("fail_reason"),
        "validators": _validator_scores(home, trial_dir), "curve": curve,
    }


def _replicate_rows(home: Path, t, replicates: dict[str, str], dimensions: list[str] | None,
                    max_t: int) -> list[dict[str, Any]]:
    """The rows of one configuration of a ``search.seeds`` study: one per replicate, with its seed among the
    parameters and its own value (the Optuna trial holds the replicates' mean; ``seed_values`` each seed's value,
    once the configuration has ended). Rows carry the configuration's Optuna number and state."""
    values = t.user_attrs.get("seed_values") if isinstance(t.user_attrs.get("seed_values"), dict) else {}
    return [_trial_row(home, t, dimensions, max_t, value=values.get(seed), curve=[], seed=int(seed),
                       trial_dir=trial_dir)
            for seed, trial_dir in sorted(replicates.items(), key=lambda kv: int(kv[0]))]


def _space_dimensions(home: Path) -> list[str] | None:
    """The searched dimensions in the space's order (``space.json``), the order a trial label lists them in."""
    try:
        dims = json.loads((Path(home) / "space.json").read_text()).get("dimensions")
    except (OSError, ValueError, AttributeError):
        return None
    return list(dims) if isinstance(dims, dict) else None


def _best_trial(trials: list[dict[str, Any]], *, mode: str) -> dict[str, Any] | None:
    """The best single trial by the report's rule (its trials table, StudyData.scored): a full run beats an
    early-stopped one (the best is chosen among completed trials when there are any, so a trial pruned at a
    higher intermediate value never wins), then by value; equal values in start order (Optuna number)."""
    scored = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED") and t["value"] is not None
              and math.isfinite(t["value"])]
    complete = [t for t in scored if t["state"] == "COMPLETE"]
    sign = -1.0 if mode == "max" else 1.0
    ranked = sorted(complete or scored, key=lambda t: (sign * t["value"], t["number"]))
    return ranked[0] if ranked else None


_STATE_OF = {"completed": "COMPLETE", "pruned": "PRUNED", "stopped": "PRUNED", "running": "RUNNING",
             "failed": "FAIL", "diverged": "FAIL"}


def _population_members(home: Path) -> list[dict[str, Any]]:
    """A PBT/PB2 study's members, from their trial directories: the population is drawn from the sampler without
    an Optuna trial per member (docs/pbt.md), so the Optuna storage has no record of them. ``params``: the
    member's starting values (its lineage holds the schedule)."""
    from study.report.collect import load_study

    members = []
    data = load_study(home)
    for number, record in enumerate(data.trials):
        members.append({
            "number": number, "label": data.label(record), "trial": record.name,
            "state": _STATE_OF.get(record.status, "FAIL"),
            "params": dict(record.params), "value": record.metric, "step": record.rounds, "pruned_at": None,
            "reason": record.reason, "validators": _validator_scores(home, record.name),
            "curve": [[int(x), float(y)] for x, y in record.curve],
        })
    return members


def driver_running(home: Path) -> bool | None:
    """Whether a `study run`/`resume` drives the study now: its exclusive lock on ``driver.lock`` (study/state/lock.py)
    is held. None when the study has no lock file here (an object-store study seen from another machine)."""
    import fcntl
    import os

    from study.state.lock import LOCK_FILE

    try:
        fd = os.open(Path(home) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe of a few microseconds, released at once
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _mark_interrupted(home: Path, trials: list[dict[str, Any]]) -> None:
    """Optuna keeps a trial RUNNING until its driver tells it the end; with no driver alive (Ctrl-C, SIGTERM, a
    killed driver) such a trial is INTERRUPTED: `study resume` continues it from its last checkpoint."""
    if any(t["state"] == "RUNNING" for t in trials) and driver_running(home) is False:
        for t in trials:
            if t["state"] == "RUNNING":
                t["state"] = "INTERRUPTED"


def _validator_scores(home: Path, trial_dir: str | None) -> dict[str, float]:
    """The label-free validator scores (``uda/<name>``) of a trial's last evaluation, from its small
    ``run/last_eval.json`` (never the whole log)."""
    if not trial_dir:
        return {}
    try:
        record = json.loads((home / trial_dir / "run" / "last_eval.json").read_text())
    except (OSError, ValueError):
        return {}
    metrics = record.get("metrics", record) if isinstance(record, dict) else {}
    return {k: float(v) for k, v in sorted(metrics.items())
            if isinstance(k, str) and k.startswith("uda/") and isinstance(v, (int, float)) and math.isfinite(v)}


_STATUS_OF = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
              "WAITING": "running"}


def _best_configuration(trials: list[dict[str, Any]], *, mode: str) -> dict[str, Any] | None:
    """The best *configuration* (searched parameters without the seed) by the report's own rule
    (:func:`study.report.aggregate.choose_best`: at least two replicates at the budget it is ranked at, completed
    configurations first, else at the budget all scored trials reached); ``None`` when no configuration has two
    replicates at one budget. ``trials``: the status rows (``curve``: the Optuna intermediate values, if known)."""
    from study.report.aggregate import choose_best, is_seed
    from study.report.collect import TrialRecord

    records = []
    for t in trials:
        value = t.get("value")
        curve = tuple(t.get("curve") or ((t.get("step") or 0, value),) if value is not None else ())
        records.append(TrialRecord(
            name=str(t["trial"]), trial_id=str(t["trial"]), params=dict(t["params"]),
            status=_STATUS_OF.get(t["state"], "failed"), rounds=int(t.get("step") or 0), iteration=None,
            metric=value, final={}, curve=tuple((int(x), float(y)) for x, y in curve if y is not None),
            time_s=None, run_dir=None, order=t.get("number")))
    config = choose_best(records, mode).config
    if config is None:
        return None
    return {"params": {k: v for k, v in config.params.items() if not is_seed(k)}, "mean": config.score.mean,
            "sd": config.score.sd, "n": config.score.n, "trials": [t.name for t in config.trials],
            "seeds": list(config.seeds), "budget": config.group}


def _label(trial: dict[str, Any]) -> str:
    """A status row's identity: its trial label (``#6 λ=0.0291 lr=0.0429``), as TensorBoard, the report and
    optuna-dashboard name it; rows built without one (older callers) get it from their number and parameters."""
    from study.config.labels import trial_label

    return trial.get("label") or trial_label(trial.get("number"), trial.get("params", {}),
                                             fallback=str(trial.get("trial", "")))


def _dir(trial: dict[str, Any]) -> str:
    """A status row's directory in the study (``trial_<id>``); ``-`` for a trial with none yet."""
    name = str(trial.get("trial") or "")
    return "-" if not name or name.startswith("#") else name


def format_trials_table(info: dict[str, Any]) -> str:
    """A plain-text table: one row per trial, named by its trial label, with its searched parameters, state, metric
    and, last, its directory; the best marked."""
    metric, max_t = info["metric"], info["max_t"]
    names: list[str] = []
    for t in info["trials"]:
        for key in t["params"]:
            if _short(key) not in names:
                names.append(_short(key))
    validators = sorted({k for t in info["trials"] for k in t.get("validators", {})})
    header = ["trial", *names, f"{metric} (%)" if "mIoU" in metric else metric, *validators, "evals", "state",
              "note", "dir"]
    rows = []
    best = info["best"]
    for t in info["trials"]:
        params = {_short(k): v for k, v in t["params"].items()}
        state = t["state"]
        note = ""
        if state == "PRUNED" and t.get("pruned_at"):
            note = f"stopped by ASHA at {t['pruned_at']}/{max_t}"
        elif state == "FAIL" and t.get("reason"):
            note = str(t["reason"]).splitlines()[0][:70]
        if best is not None and t["number"] == best["number"]:
            note = ("best " + note).strip()
        state_text = {"FAIL": "FAILED"}.get(state, state)
        scores = t.get("validators", {})
        rows.append([_label(t), *(_fmt_param(params.get(n, "-")) for n in names), _fmt_metric(metric, t["value"]),
                     *(_fmt_metric(v, scores.get(v)) for v in validators), f"{t['step']}/{max_t}", state_text,
                     note, _dir(t)])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    counts = ", ".join(f"{n} {'FAILED' if s == 'FAIL' else s}" for s, n in sorted(info["counts"].items()))
    lines.append("")
    lines.append(f"{len(info['trials'])} of {info['num_samples']} trials ({counts or 'none yet'})")
    if best is not None:
        where = f" in {_dir(best)}" if _dir(best) != "-" else ""
        lines.append(f"best {metric} = {_fmt_metric(metric, best['value'])}{' %' if 'mIoU' in metric else ''} "
                     f"({_label(best)}{where}; one trial, not a configuration)")
    best_config = info.get("best_config")
    if best_config is not None:
        unit = " %" if "mIoU" in metric else ""
        params = ", ".join(f"{_short(k)} = {_fmt_param(v)}" for k, v in best_config["params"].items())
        budget = best_config.get("budget", "completed")
        lines.append(f"best configuration by its mean over seeds ({metric}, "
                     f"{'completed trials' if budget == 'completed' else budget + ', all scored trials'}): "
                     f"{_fmt_metric(metric, best_config['mean'])} ± {_fmt_metric(metric, best_config['sd'])}{unit} "
                     f"(n = {best_config['n']}; {params or 'no searched parameter but the seed'})")
    elif best is not None:
        lines.append("best configuration: none (no configuration has 2 or more replicates at one budget; a single "
                     "run is not ranked)")
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    home = study_home(args.study, args.storage)
    info = collect_trials(home)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"study {info['name']} in {home}")
    print(format_trials_table(info))
    if info["counts"].get("INTERRUPTED"):
        print(f"{info['counts']['INTERRUPTED']} trial(s) INTERRUPTED (no driver runs the study); continue with: "
              f"dastudy study resume {shlex.quote(str(home))}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# run / resume


def finish_message(info: dict[str, Any], home: Path, storage: str | None) -> str:
    # paths quoted: the commands are meant to be pasted, and a storage path may hold spaces
    storage_flag = f" --storage {shlex.quote(str(storage))}" if storage else ""
    name = shlex.quote(info["name"])
    return (f"\nstudy directory: {home}\n"
            f"TensorBoard:     dastudy study tensorboard {name}{storage_flag}   "
            f"(or: tensorboard --logdir {shlex.quote(str(home / 'tb'))} --host 127.0.0.1)\n"
            f"report:          dastudy study report {name}{storage_flag}")


EXIT_OK, EXIT_UNFINISHED, EXIT_FAILED = 0, 1, 3


def exit_status(info: dict[str, Any]) -> int:
    """:data:`EXIT_STATUS`: unfinished trials first (the study is not over: resume it), then FAILED ones."""
    ended = sum(info["counts"].get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
    if info["num_samples"] - ended > 0 or any(info["counts"].get(s, 0) for s in ("RUNNING", "INTERRUPTED")):
        return EXIT_UNFINISHED
    return EXIT_FAILED if info["counts"].get("FAIL", 0) else EXIT_OK


def _summarize(location, storage: str | None) -> int:
    info = collect_trials(location.home)
    try:  # <study>/tb: runs named by their values, the baseline's own row (`study tensorboard` rebuilds it)
        from study.view.tensorboard import build_view

        build_view(location.home)
    except Exception as err:  # a convenience only: never fail a finished study over it
        print(f"note: TensorBoard view not built ({type(err).__name__}: {err})", file=sys.stderr)
    print()
    print(format_trials_table(info))
    print(finish_message(info, location.home, storage))
    code = exit_status(info)
    if code == EXIT_UNFINISHED:
        ended = sum(info["counts"].get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
        print(f"\n{max(info['num_samples'] - ended, 0)} trial(s) did not finish; continue with: dastudy study resume "
              f"{shlex.quote(str(location.home))}", file=sys.stderr)
    elif code == EXIT_FAILED:
        print(f"\n{info['counts']['FAIL']} trial(s) FAILED; reasons: dastudy study status "
              f"{shlex.quote(str(location.home))} (each trial's error.txt is in the study directory)",
              file=sys.stderr)
    return code


def as_user_errors(func):
    """Errors that are the user's input (bad preflight, unknown space parameter) become one-line messages; a study
    stopped by SIGINT / SIGTERM prints how to resume it and exits 130 / 143; resuming a finished study exits 0."""
    import functools

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        from study.errors import UserError
        from study.run.interrupts import StudyInterrupted
        from study.state.lock import StudyLocked
        from study.config.resources import PreflightError
        from study.config.spaces import SpaceError
        from study.state.resume_checks import StudyFinished

        try:
            return func(args)
        except (PreflightError, SpaceError, StudyLocked) as err:
            raise UserError(str(err)) from None
        except StudyInterrupted as err:  # the state is saved: one line, no traceback, 130 / 143
            print(err.resume_line(getattr(args, "storage", None)), file=sys.stderr)
            return err.exit_code
        except StudyFinished as err:  # `study resume` of a finished study: nothing to do is not an error
            print(err)
            return 0

    return wrapper


@as_user_errors
def _run(args: argparse.Namespace) -> int:
    from study.config.study_config import load_study_config
    from study.run.tuner import run_study

    args = split_overrides(args, _run_options)
    study_cfg = load_study_config(args.preset, args.overrides, name=args.name)
    from study.config.preflight import check_overrides_apply

    check_overrides_apply(study_cfg, args.overrides, source=str(args.preset))
    if args.dry_run:
        return _dry_run(study_cfg, args)
    _, location = run_study(study_cfg, storage=args.storage, address=args.address, num_cpus=args.num_cpus)
    return _summarize(location, args.storage)


def _dry_run(study_cfg, args: argparse.Namespace) -> int:
    """Every check of a real run, all problems at once (each with its fix) after the trial plan; exit 0 when a
    real run would start, 2 when it would not. Creates nothing and starts no Ray (``--address``: connects)."""
    from study.config.preflight import diagnose, format_plan, resource_problems
    from study.state.location import locate

    location = locate(study_cfg.name, args.storage)
    pre, problems = diagnose(study_cfg, home=location.home)
    nodes, where, notes, cluster = _dry_run_nodes(args, location.ray_storage)
    found, more_notes = resource_problems(study_cfg, location.home, nodes, where=where)
    problems = [*problems, *cluster, *found]
    print(format_plan(pre, problems, [*notes, *more_notes]))
    return 2 if problems else 0


def _dry_run_nodes(args: argparse.Namespace, storage: str):
    """The nodes a real run would get, where they are, notes and problems: those of the ``--address`` cluster
    (connected to, then disconnected; a storage path every node must see is probed there when it exists), or
    this machine as the local Ray started by ``study run`` would see it (``--num-cpus``, the GPUs CUDA shows)."""
    from pathlib import Path

    import study.config.resources as resources
    from study.config.preflight import Problem

    if args.address:
        from study.run.tuner import ray_session

        where = f"the cluster at {args.address}"
        problems = []
        try:
            with ray_session(address=args.address):
                nodes = resources.cluster_nodes()
                local = storage[len("file://"):] if storage.startswith("file://") else storage
                if len(nodes) > 1 and not resources.is_uri(storage) and Path(local).is_dir():
                    try:  # a marker file, written and removed again, that a task on each node looks for
                        resources.check_storage_shared(storage, nodes, probe=resources.probe_storage_visibility)
                    except resources.PreflightError as err:
                        problems.append(Problem(f"storage {storage} is not visible on every node of {where}",
                                                "--storage on a filesystem every node mounts, or s3://BUCKET/PATH",
                                                err))
        except (OSError, RuntimeError, ValueError) as err:  # ConnectionError, TimeoutError: no cluster there
            problem = Problem(f"no Ray cluster answers at {args.address} ({type(err).__name__})",
                              "start it (ray start --head, docs/cluster.md) or correct --address", err)
            return None, where, [], [problem]
        return nodes, where, [f"cluster {args.address}: {resources.describe_nodes(nodes)}"], problems
    node = resources.local_node(args.num_cpus)
    where = "this machine"
    return [node], where, [f"{where}: {resources.describe_nodes([node])} (a local Ray; --address checks a "
                           "cluster)"], []


@as_user_errors
def _resume(args: argparse.Namespace) -> int:
    from study.run.storage import restore_from_store
    from study.run.tuner import resume_study

    # s3://bucket/prefix/<name> (or a name with --storage s3://...) on a head without a copy: download it first
    home = restore_from_store(args.study, args.storage) or study_home(args.study, args.storage)
    _, location = resume_study(home, address=args.address, num_cpus=args.num_cpus,
                               allow_changed_space=args.allow_changed_space)
    return _summarize(location, args.storage)


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _report(args: argparse.Namespace) -> int:
    from study.errors import UserError
    from study.report import ReportError, write_report

    home = study_home(args.study, args.storage)
    try:
        summary = write_report(home, out_dir=args.out, workers=_cpus())  # the figures at once (issue 12: ≤ 3 s)
    except ReportError as err:
        raise UserError(str(err)) from None
    if getattr(args, "format", "markdown") == "latex":
        from study.report.latex import write_lambda_table

        table = write_lambda_table(home, args.out)
        if table is None:
            raise UserError(f"--format latex: study {home.name} has no λ_adv × backbone table (it searches neither "
                            "adapt.lambda_adv_main nor model.name, or no trial completed); report.md was written")
        print(table.read_text(), end="")
    elif args.json:
        import json

        print(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    else:
        print(summary)
    return 0


def _tensorboard(args: argparse.Namespace) -> int:
    from study.view.tensorboard import serve

    home = study_home(args.study, args.storage)
    return int(serve(home, host=args.host, port=args.port) or 0)


def _presets(args: argparse.Namespace) -> int:
    from study.config.files import load_toml, shipped_names
    from study.config.spaces import SPACES

    if getattr(args, "json", False):
        print(json.dumps({"presets": [{"name": n, "description": load_toml(n, "presets").get("description", "")}
                                      for n in shipped_names("presets")],
                          "spaces": [{"name": n, "description": sp.description, "params": dict(sp.params)}
                                     for n, sp in sorted(SPACES.items())]}, indent=2))
        return 0
    print("presets (dastudy study run NAME):")
    for name in shipped_names("presets"):
        data = load_toml(name, "presets")
        print(f"  {name:20s} {data.get('description', '')}")
    print("\nsearch spaces ([search] space = NAME; parameters go in [search.params]):")
    for name, space in sorted(SPACES.items()):
        params = ", ".join(sorted(space.params)) or "-"
        print(f"  {name:20s} {space.description}\n  {'':20s} parameters: {params}")
    return 0


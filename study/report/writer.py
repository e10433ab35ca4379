"""Writing the report: ``report.md``, ``figures/*.png``, ``tables/*.csv`` and ``best_config.toml``."""
from __future__ import annotations

import math
from pathlib import Path

from study.report.aggregate import (LAMBDA_KEY, MIN_CONFIGS_FOR_IMPORTANCE, MIN_REPLICATES, MODEL_KEY, TIE_RULE,
                                    ConfigAggregate, choose_best, completed_and_stopped, equal_budget, is_seed,
                                    paired_vs_control, seeds_text)
from study.report.collect import FIGURES, STATUSES, ReportError, StudyData, TrialRecord, _read_toml, _rungs, load_study
from study.report.figures import _draw_all
from study.config.pbt_settings import PBT_KINDS
from study.report.schedules import member_schedules, schedule_rows
from study.report.importance import Importance, config_importances
from study.report.paper import (SINGLE_NOTE, control_note, fmt_ci, fmt_p, fmt_stats, holm_family, paper_csv,
                                paper_markdown, paper_rows, per_class_delta_rows, pooled_parameters)
from study.report.tables import (ReportSummary, _markdown_table, _param_text, _pct, _signed, _summary_header,
                                 _summary_rows, config_rows, param_label, per_class_rows)

TABLES = "tables"


def _best_config(study_dir: Path, out_dir: Path, data: StudyData, best: TrialRecord | None,
                 config: ConfigAggregate | None = None) -> tuple[Path | None, str | None]:
    """The best configuration's run config (from its median replicate), re-validated, renamed and written as
    ``best_config.toml``."""
    if best is None:
        return None, "no trial has a score: no best configuration"
    if best.run_dir is None or not (study_dir / best.run_dir / "config.toml").is_file():
        return None, f"trial {best.name} has no config.toml in its run directory: no best_config.toml"
    from study.config.files import dump_toml
    from trainables.config import ConfigError, RuntimeConfig, TrainConfig, from_dict, to_dict

    source = study_dir / best.run_dir / "config.toml"
    try:
        cfg = from_dict(TrainConfig, _read_toml(source), source=str(source.relative_to(study_dir)))
    except ConfigError as err:
        return None, f"the best trial's config.toml is not a valid run config ({err})"
    data_dict = to_dict(cfg)
    data_dict["name"] = f"{data.name}-best"
    # Trials run without progress bars (their output goes to Ray's logs); a run of its own shows one again.
    data_dict.setdefault("runtime", {})["progress"] = RuntimeConfig().progress
    path = out_dir / "best_config.toml"
    if config is not None:
        budget = "final evaluation" if config.group == "completed" else config.group
        header = (f"# Best configuration of study {data.name!r}: {data.metric} = {fmt_stats(config.score)} "
                  f"(mean ± sd (n) over {seeds_text(config.seeds)}, at the {budget}).\n"
                  f"# This file is the run config of its median replicate, trial {best.name}; runtime.seed is a "
                  f"replicate index,\n# not part of the configuration: rerun with several seeds.\n"
                  f"# Run it with: dastudy adapt best_config.toml\n")
    else:
        header = (f"# Best configuration of study {data.name!r}: trial {best.name}, "
                  f"{data.metric} = {_pct(best.metric)} at its last report.\n"
                  f"# Run it with: dastudy adapt best_config.toml\n")
    if cfg.model.init_checkpoint:
        header += ("# model.init_checkpoint is the study's source-only baseline as it was on the machine that ran "
                   "the study;\n# point it at your copy of that checkpoint when you run this elsewhere.\n")
    path.write_text(header + dump_toml(data_dict))
    return path, None


def _rounds(n: int) -> str:
    return f"{n} round" if n == 1 else f"{n} rounds"


def _no_trials_message(study_dir: Path) -> str:
    """Why a study directory has no trial to report on: not started yet, or (a study run with ``--storage s3://``)
    its trials are in the store, and this is the driver's local copy of the study's own files."""
    import json
    import shlex

    try:
        where = json.loads((study_dir / "provenance.json").read_text()).get("experiment_path") or ""
    except (OSError, ValueError, AttributeError):
        where = ""
    if "://" in where:
        return (f"{study_dir}: the trials of this study are in the store ({where}); this folder is the driver's copy "
                "of the study's own files. Copy the trials' folders here without their checkpoints, then report: "
                f"aws s3 sync {shlex.quote(where)} {shlex.quote(str(study_dir))} --exclude '*/checkpoint_*'")
    return f"{study_dir}: no trial directories (with params.json) yet; has the study started?"


def write_report(study_dir: str | Path, *, out_dir: str | Path | None = None, workers: int = 1) -> ReportSummary:
    """Write ``report.md``, ``figures/*.png``, ``tables/*.csv`` and ``best_config.toml`` into ``out_dir``
    (default: the study directory; another directory leaves a read-only study archive untouched). ``workers`` > 1
    draws the figures in that many processes at once where forking is safe (the ``study report`` command)."""
    study_dir = Path(study_dir)
    data = load_study(study_dir)
    if not data.trials:
        raise ReportError(_no_trials_message(study_dir))
    out = study_dir if out_dir is None else Path(out_dir)
    if out.resolve() != study_dir.resolve():
        if out.exists() and not out.is_dir():
            raise ReportError(f"--out {out}: exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
    searched = sorted({n for t in data.trials for n in t.params})
    completed, stopped = completed_and_stopped(data)
    budget, at_budget = equal_budget(data)
    choice = choose_best(data.trials, data.mode)  # the one rule, shared with `study status`
    best_cfg: ConfigAggregate | None = choice.config
    best = best_cfg.representative(data.mode) if best_cfg is not None else None
    notes: list[str] = []
    if choice.note:
        notes.append(choice.note)
    if data.baseline_note:
        notes.append(data.baseline_note)
    importance = config_importances(data.optuna, completed={t.name for c in completed for t in c.trials},
                                    direction=data.mode)
    if importance.note:
        notes.append(importance.note)
    figure_dir = out / FIGURES
    figure_dir.mkdir(exist_ok=True)
    figures = _draw_all(figure_dir, data, best=best_cfg, searched=searched, importances=importance.values,
                        rungs=_rungs(data), completed=completed, space_dir=study_dir, workers=workers)
    table_dir = out / TABLES
    # the paper's table only where λ_adv or the backbone is searched (anything else would pool every trial into a row)
    rows_paper = paper_rows(data) if {LAMBDA_KEY, MODEL_KEY} & set(searched) else []
    tables: list[Path] = []
    if rows_paper:
        table_dir.mkdir(exist_ok=True)
        csv_path = table_dir / "lambda_backbone.csv"
        csv_path.write_text(paper_csv(data, rows_paper))
        tables.append(csv_path)
    if data.scheduler in PBT_KINDS:
        members = member_schedules(study_dir, data)
        if members:
            table_dir.mkdir(exist_ok=True)
            csv_path = table_dir / "pbt_schedules.csv"
            csv_path.write_text(_csv(*schedule_rows(members)))
            tables.append(csv_path)
    best_config, config_note = (_best_config(study_dir, out, data, best, best_cfg) if best_cfg is not None
                                else (None, None))
    if config_note:
        notes.append(config_note)
    counts = {s: sum(t.status == s for t in data.trials) for s in STATUSES}
    header = _summary_header(data, searched)
    rows = _summary_rows(data, searched)
    text = _markdown(data, best=best, best_cfg=best_cfg, searched=searched, header=header, rows=rows,
                     figures=figures, importance=importance, best_config=best_config, notes=tuple(notes),
                     counts=counts, optuna_states=data.optuna.states, completed=completed, stopped=stopped,
                     budget=budget, at_budget=at_budget, rows_paper=rows_paper, tables=tables,
                     choice_note=choice.note)
    from study.report.agreement import agreement_section

    validators = agreement_section(study_dir, figure_dir, relative_to=out)  # uda/… validators (issue 14), or ""
    if validators:
        text = text.rstrip("\n") + "\n\n" + validators
    report = out / "report.md"
    report.write_text(text)
    return ReportSummary(
        study=data.name, metric=data.metric, mode=data.mode, selection=data.selection, counts=counts,
        best_trial=best.name if best else None, best_params=dict(best_cfg.params) if best_cfg else {},
        best_metric=best_cfg.score.mean if best_cfg else None,
        best_final={k: best_cfg.final(k).mean for k in sorted({k for t in best_cfg.trials for k in t.final})}
        if best_cfg else {},
        importances=dict(importance.values), report=report, figures=tuple(figures.values()),
        best_config=best_config, header=tuple(header), rows=tuple(tuple(r) for r in rows), notes=tuple(notes),
        best_seeds=best_cfg.seeds if best_cfg else (), best_score=best_cfg.score if best_cfg else None,
        tables=tuple(tables), importance_configurations=importance.configurations, best_note=choice.note,
        best_label=data.label(best) if best else None,
    )


def _markdown(data: StudyData, *, best: TrialRecord | None, best_cfg: ConfigAggregate | None, searched, header,
              rows, figures, importance: Importance, best_config, notes, counts, optuna_states, completed,
              stopped, budget, at_budget, rows_paper, tables, choice_note=None) -> str:
    selection = ("a labelled **holdout** cut from the target train split (`select/…`)" if data.selection == "holdout"
                 else "**target val** (`val/…`): the selection and the final numbers come from the same images, "
                      "so the best score is optimistic (oracle selection, the seed's protocol)")
    counted = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    names = [n for n in searched if not is_seed(n)]
    seed_names = [n for n in searched if is_seed(n)]
    seeds = sorted({str(v) for t in data.trials for k, v in t.params.items() if is_seed(k)})
    lines = [
        f"# Study report: {data.name}",
        "",
        f"- search space `{data.space}`, sampler `{data.sampler}`; {len(data.trials)} trials: {counted}",
        f"- study metric `{data.metric}` ({data.mode}), read on {selection}",
        "- a trial's score is its metric at its **last** report; final numbers are always target val (`val/…`)",
        ("- seeds are replicates: a *configuration* is the searched parameters without `runtime.seed` (seeds "
         f"{', '.join(seeds)}); rankings, the best configuration, the sensitivity means and the importances use "
         "per-configuration mean ± sample sd (n) with a 95 % Student-t interval (`scipy.stats`), never one seed; "
         f"a configuration is ranked as the best only with at least {MIN_REPLICATES} replicates at the budget it is "
         f"ranked at; ranking order: {TIE_RULE}"
         if seed_names else
         "- the study searches no `runtime.seed`: every configuration has one run (n = 1), so no spread can be "
         "given and no configuration is ranked as the best; declare replicates with `search.seeds = [1, 2, 3]`"),
    ]
    rungs = _rungs(data)
    if rungs:
        lines.append(f"- ASHA: max_t = {data.max_t}, grace_period = {data.grace_period}, reduction_factor = "
                     f"{_param_text(data.reduction_factor)} → rungs at {', '.join(map(str, rungs))} "
                     f"{data.time_attr} (evaluation rounds); pruned = stopped by ASHA at a rung")
    elif data.max_t:
        lines.append(f"- scheduler `{data.scheduler}` (no early stopping), {data.max_t} evaluation rounds per run")
    if optuna_states:
        told = ", ".join(f"{v} {k}" for k, v in sorted(optuna_states.items()))
        lines.append(f"- Optuna journal: {told}; importances use the COMPLETE trials only")
        if counts.get("pruned") and not optuna_states.get("PRUNED"):
            lines.append("- the scheduler's early stops reached Optuna as COMPLETE with their early value (plain "
                         "OptunaSearch), which biases TPE and the importances towards fast starters")
    # seed-aggregated, budget-fair rankings
    lines += ["", "## Configurations (seeds aggregated, budget-fair)", ""]
    if completed:
        lines += ["### Completed: ranked at their final evaluation", ""]
        h, b = config_rows(data, completed, names=names)
        lines += [_markdown_table(h, b), "", f"Rank `–`: {SINGLE_NOTE}."
                  + (" *Replicates stopped early*: seeds of the configuration the scheduler stopped; the mean is "
                     "over the survivors only (a selected sample: compare at equal budget below)."
                     if any(c.stopped for c in completed) else ""), ""]
    else:
        lines += ["No configuration completed its full budget.", ""]
    if stopped:
        lines += ["### Stopped early by the scheduler: ranked separately (scored after fewer rounds than a full run, "
                  "not comparable with the completed ones)", ""]
        h, b = config_rows(data, stopped, names=names, finals=False, rank_prefix="s")
        lines += [_markdown_table(h, b), ""]
    if budget is not None and stopped:
        n_scored = sum(len(c.trials) for c in at_budget)
        lines += [f"### At equal budget: {data.metric} at round {budget}, the last evaluation all {n_scored} scored "
                  "trials reached", ""]
        h, b = config_rows(data, at_budget, names=names, finals=False, rank_prefix="b")
        lines += [_markdown_table(h, b), ""]
    diffs = paired_vs_control(completed)
    if diffs:
        lines += ["### Against the λ_adv = 0 control (paired by seed)", "",
                  "Each adversarial configuration minus the λ_adv = 0 configuration with the same other parameters, "
                  "seed by seed (same seed = same initialisation and data order), then mean ± sd (n) and the 95 % "
                  "t-interval of the differences, in points of " f"`{data.metric}`.", ""]
        lines.append(_markdown_table(
            [*[param_label(n) for n in names], "paired seeds", "Δ mean ± sd (n)", "95 % CI", "p", "p (Holm)"],
            [[*[_param_text(d.config.params.get(n, "")) for n in names], ", ".join(map(str, d.seeds)),
              fmt_stats(d.difference, signed=True), fmt_ci(d.difference), fmt_p(d.p_value), fmt_p(d.p_holm)]
             for d in diffs]))
        tested = sum(d.p_value is not None and math.isfinite(d.p_value) for d in diffs)
        lines += ["", f"p: two-sided paired t-test (`scipy.stats.ttest_rel`) of each arm against its control; "
                      f"p (Holm): Holm's step-down adjustment over {holm_family({data.metric: tested})} (family-wise "
                      f"error 5 % when p (Holm) < 0.05); n/a = fewer than 2 paired seeds, no test. {SINGLE_NOTE}.", ""]
    # the paper's table
    lines += ["## λ_adv × backbone (the seed's Table 3 layout)", ""]
    if rows_paper:
        pooled = pooled_parameters(data)
        h, b = paper_markdown(data, rows_paper)
        lines += ["Completed trials only; one row per configuration; final target-val numbers (%), mean ± sample "
                  "sd (n seeds)."
                  + (f" The other searched parameters ({', '.join(f'`{param_label(n)}`' for n in pooled)}) are "
                     "columns: no row pools over them." if pooled else ""), "",
                  _markdown_table(h, b), ""]
        if any(r.vs_control for r in rows_paper):
            lines += [control_note(rows_paper), ""]
        if data.baseline:
            lines += [f"Δ vs source only: {data.baseline_label}.", ""]
        lines += [f"CSV: [`{TABLES}/lambda_backbone.csv`]({TABLES}/lambda_backbone.csv)", ""]
        if any(r.oracle is not None for r in rows_paper):
            lines += [f"The *oracle best-on-val* column is each trial's best evaluation of `{data.metric}`: the "
                      "evaluation is chosen on the val images it is scored on (the seed's protocol), so it is "
                      "optimistic; it is shown for comparison with the seed's numbers and never used for ranking.", ""]
        if data.baseline:
            h, b = per_class_delta_rows(data, rows_paper)
            lines += ["Per-class IoU difference against the source-only baseline (points; mean over seeds minus the "
                      "one baseline run; `*` = not in mIoU13; n/a = another backbone than the baseline's):", "",
                      _markdown_table(h, b), ""]
        else:
            lines += ["No `baseline/` source-only run in this study: no per-class deltas against source only.", ""]
    elif {LAMBDA_KEY, MODEL_KEY} & set(searched):
        lines += ["No completed trial: no table.", ""]
    else:
        lines += [f"The study searches neither `{LAMBDA_KEY}` nor `{MODEL_KEY}`: no table.", ""]
    lines += ["## Trials", "",
              "Ranks are budget-fair: `1, 2, …` = completed trials, `s1, s2, …` = trials stopped early, ranked "
              "among themselves; `-` = failed, diverged or running.", "", _markdown_table(header, rows), ""]
    failed = [t for t in data.trials if t.status in ("failed", "diverged")]
    if failed:
        lines += ["Failed or diverged trials:", ""]
        lines += [f"- {data.label(t)}, `{t.name}`: {t.status} after {_rounds(t.rounds)}"
                  + (f": {t.reason}" if t.reason else "") for t in failed]
        lines.append("")
    lines += ["## Best configuration", ""]
    if best is None or best_cfg is None:
        lines += [f"None: {choice_note}." if choice_note else "No trial reported the study metric.", ""]
    else:
        params = ", ".join(f"`{param_label(k)}` = {_param_text(v)}" for k, v in sorted(best_cfg.params.items()))
        budget = "completed, at the final evaluation" if best_cfg.group == "completed" else best_cfg.group
        lines += [f"{params or 'No searched parameter'}: {data.metric} = {fmt_stats(best_cfg.score)} over "
                  f"{seeds_text(best_cfg.seeds)} (95 % CI {fmt_ci(best_cfg.score)}; {budget}). "
                  f"Its median replicate is trial {data.label(best)} (directory `{best.name}`, Ray trial id "
                  f"{best.trial_id}, {_rounds(best.rounds)}).",
                  ""]
        if best_config is not None:
            lines += [f"Ready to run: [`{best_config.name}`]({best_config.name}) — `dastudy adapt {best_config.name}`",
                      ""]
    lines += ["## Per-class IoU on target val (%)", ""]
    table_header, table_rows = per_class_rows(data, best_cfg)
    if table_rows:
        digits = 1
        lines.append(_markdown_table(["run", *table_header],
                                     [[name, *[_signed(v, digits) if name == "difference" else _pct(v, digits)
                                               for v in values]] for name, values in table_rows]))
        lines += ["", "`*` = not in mIoU13 (wall, fence, pole)."
                  + ("" if data.baseline else " No `baseline/` source-only run in this study: no difference row."),
                  ""]
    else:
        lines += ["No evaluation with per-class IoU.", ""]
    titles = {"sensitivity": "Sensitivity", "learning_curves": "Learning curves", "per_class_iou": "Per-class IoU",
              "importance": "Parameter importance", "pbt_schedules": "Learned schedules (PBT)"}
    lines += ["## Figures", ""]
    if not figures:
        lines += ["None: no trial reported a score to draw.", ""]
    for key, path in figures.items():
        lines += [f"### {titles.get(key, key)}", "", f"![{key}]({FIGURES}/{path.name})", ""]
        if key == "pbt_schedules":
            lines += [f"Each line is one member's values over SGD iterations, the segments of the donors it cloned "
                      f"included (from each member's `run/lineage.jsonl`), coloured by its final {data.metric}; "
                      f"dots mark its clones. Table: [`{TABLES}/pbt_schedules.csv`]({TABLES}/pbt_schedules.csv).",
                      ""]
    lines += ["## Parameter importance (Optuna PED-ANOVA over configuration means, seed left out)", ""]
    if importance.values:
        lines += [f"From {importance.configurations} completed configurations ({importance.trials} trials); "
                  f"shown to 2 significant digits (fewer than {MIN_CONFIGS_FOR_IMPORTANCE} configurations: not "
                  "shown).", ""]
        lines.append(_markdown_table(["parameter", "importance", "n configurations"],
                                     [[k, f"{v:.2g}", str(importance.configurations)]
                                      for k, v in sorted(importance.values.items(), key=lambda kv: (-kv[1], kv[0]))]))
        lines.append("")
    for note in notes:
        lines += [f"Note: {note}.", ""]
    lines += ["---", "Regenerate with `dastudy study report NAME` (`--out DIR` writes elsewhere); browse the runs with "
              "`dastudy study tensorboard NAME` or `optuna-dashboard optuna.journal`.", ""]
    return "\n".join(lines)


def _csv(header: list[str], rows: list[list]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()

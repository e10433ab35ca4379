"""Writing the report: ``report.md``, ``figures/*.png`` and ``best_config.toml``."""
from __future__ import annotations

import math
from pathlib import Path

from study.report.collect import FIGURES, STATUSES, ReportError, StudyData, TrialRecord, _read_toml, _rungs, load_study
from study.report.figures import _draw_all
from study.report.tables import (ReportSummary, _markdown_table, _param_text, _pct, _signed, _summary_header,
                                 _summary_rows, per_class_rows)

def _best_config(study_dir: Path, data: StudyData, best: TrialRecord | None) -> tuple[Path | None, str | None]:
    """The best trial's resolved run config, re-validated, renamed and written as ``best_config.toml``."""
    if best is None:
        return None, "no trial has a score: no best configuration"
    if best.run_dir is None or not (study_dir / best.run_dir / "config.toml").is_file():
        return None, f"trial {best.name} has no config.toml in its run directory: no best_config.toml"
    from study.config import dump_toml
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
    path = study_dir / "best_config.toml"
    header = (f"# Best configuration of study {data.name!r}: trial {best.name}, "
              f"{data.metric} = {_pct(best.metric)} at its last report.\n"
              f"# Run it with: dastudy adapt best_config.toml\n")
    if cfg.model.init_checkpoint:
        header += ("# model.init_checkpoint is the study's source-only baseline as it was on the machine that ran "
                   "the study;\n# point it at your copy of that checkpoint when you run this elsewhere.\n")
    path.write_text(header + dump_toml(data_dict))
    return path, None


def write_report(study_dir: str | Path) -> ReportSummary:
    """Write ``report.md``, ``figures/*.png`` and ``best_config.toml`` into ``study_dir``; return the summary."""
    study_dir = Path(study_dir)
    data = load_study(study_dir)
    if not data.trials:
        raise ReportError(f"{study_dir}: no trial directories (with params.json) yet; has the study started?")
    searched = sorted({n for t in data.trials for n in t.params})
    best = data.best()
    importances, importance_note, optuna_states = dict(data.optuna.importances), data.optuna.note, data.optuna.states
    figure_dir = study_dir / FIGURES
    figure_dir.mkdir(exist_ok=True)
    figures = _draw_all(figure_dir, data, best=best, searched=searched, importances=importances,
                        rungs=_rungs(data))
    best_config, config_note = _best_config(study_dir, data, best)
    notes = tuple(n for n in (importance_note, config_note) if n)
    counts = {s: sum(t.status == s for t in data.trials) for s in STATUSES}
    header = _summary_header(data, searched)
    rows = _summary_rows(data, searched)
    text = _markdown(data, best=best, searched=searched, header=header, rows=rows, figures=figures,
                     importances=importances, best_config=best_config, notes=notes, counts=counts,
                     optuna_states=optuna_states)
    report = study_dir / "report.md"
    report.write_text(text)
    return ReportSummary(
        study=data.name, metric=data.metric, mode=data.mode, selection=data.selection, counts=counts,
        best_trial=best.name if best else None, best_params=dict(best.params) if best else {},
        best_metric=best.metric if best else None, best_final=dict(best.final) if best else {},
        importances=importances, report=report, figures=tuple(figures.values()), best_config=best_config,
        header=tuple(header), rows=tuple(tuple(r) for r in rows), notes=notes,
    )


def _markdown(data: StudyData, *, best, searched, header, rows, figures, importances, best_config, notes,
              counts, optuna_states) -> str:
    selection = ("a labelled **holdout** cut from the target train split (`select/…`)" if data.selection == "holdout"
                 else "**target val** (`val/…`): the selection and the final numbers come from the same images, "
                      "so the best score is optimistic (the seed's protocol)")
    counted = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    lines = [
        f"# Study report: {data.name}",
        "",
        f"- search space `{data.space}`, sampler `{data.sampler}`; {len(data.trials)} trials: {counted}",
        f"- study metric `{data.metric}` ({data.mode}), read on {selection}",
        f"- a trial's score is its metric at its **last** report; final numbers are always target val (`val/…`)",
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
    lines += ["", "## Trials", "", _markdown_table(header, rows), ""]
    failed = [t for t in data.trials if t.status in ("failed", "diverged")]
    if failed:
        lines += ["Failed or diverged trials:", ""]
        lines += [f"- `{t.name}`: {t.status} after {t.rounds} rounds" + (f": {t.reason}" if t.reason else "")
                  for t in failed]
        lines.append("")
    lines += ["## Best configuration", ""]
    if best is None:
        lines += ["No trial reported the study metric.", ""]
    else:
        params = ", ".join(f"`{k}` = {_param_text(v)}" for k, v in sorted(best.params.items()))
        lines += [f"Trial `{best.name}` ({best.status}, Ray trial id {best.trial_id}): {data.metric} = "
                  f"{_pct(best.metric)} after {best.rounds} rounds; {params or 'no searched parameters'}.", ""]
        if best_config is not None:
            lines += [f"Ready to run: [`{best_config.name}`]({best_config.name}) — `dastudy adapt {best_config.name}`",
                      ""]
    lines += ["## Per-class IoU on target val (%)", ""]
    table_header, table_rows = per_class_rows(data, best)
    if table_rows:
        digits = 1
        lines.append(_markdown_table(["run", *table_header],
                                     [[name, *[_signed(v, digits) if name == "difference" else _pct(v, digits)
                                               for v in values]] for name, values in table_rows]))
        lines += ["", "`*` = not in mIoU13 (wall, fence, pole). "
                  + ("" if data.baseline else "No `baseline/` source-only run in this study: no difference row."),
                  ""]
    else:
        lines += ["No evaluation with per-class IoU.", ""]
    titles = {"sensitivity": "Sensitivity", "learning_curves": "Learning curves", "per_class_iou": "Per-class IoU",
              "importance": "Parameter importance"}
    lines += ["## Figures", ""]
    for key, path in figures.items():
        lines += [f"### {titles.get(key, key)}", "", f"![{key}]({FIGURES}/{path.name})", ""]
    lines += ["## Parameter importance (Optuna, PED-ANOVA)", ""]
    if importances:
        lines.append(_markdown_table(["parameter", "importance"],
                                     [[k, f"{v:.3f}"] for k, v in sorted(importances.items(), key=lambda kv: (-kv[1], kv[0]))]))
        lines.append("")
    for note in notes:
        lines += [f"Note: {note}.", ""]
    lines += ["---", "Regenerate with `dastudy study report NAME`; browse the runs with `dastudy study tensorboard "
              "NAME` or `optuna-dashboard optuna.journal`.", ""]
    return "\n".join(lines)



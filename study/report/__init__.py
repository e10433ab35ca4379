"""The study report: ``report.md``, PNG figures and ``best_config.toml`` written from a finished study directory.

Everything is read from the study directory alone (``study.toml``, the trial directories Ray wrote, the engine's
run files, ``optuna.journal``, ``baseline/``), so the report can be regenerated on a copy brought back from a
cluster. Regenerating it is byte-identical: no clock, no absolute paths, sorted inputs and PNGs without the
matplotlib version stamp.

Conventions (stated in the report too):

- a trial's score is the study metric at its **last** report (Ray's ``scope="last"``, and what OptunaSearch tells
  Optuna), so an ASHA-stopped trial is scored at the rung where it was stopped;
- the metric is read on the selection split (``select/…`` = a labelled holdout cut from the target train split,
  ``val/…`` = target val); target-val numbers are always shown separately, as the final numbers;
- per-class IoU uses the seed's Table-2 layout (16 classes, mIoU16, mIoU13; ``*`` = not in mIoU13).

Sections follow the seed's published comparison (its Tables 2 and 3): per-class IoU of the adapted model
against source-only, and the λ_adv sensitivity, here over every searched hyperparameter.

Seeds are replicates and comparisons are budget-fair (:mod:`.aggregate`): rankings, the best configuration and
the importances use per-configuration means over seeds, and trials stopped early are never ranked with completed
ones. A configuration is the best only with at least two replicates at the budget it is ranked at
(:func:`.aggregate.choose_best`, shared with ``study status``). Differences against the λ_adv = 0 control match
every other searched parameter and pair seed by seed, with paired t-tests and Holm's correction (scipy.stats).
The λ_adv × backbone table (:mod:`.paper`) is the seed's Table 3 as an output, one row per configuration.

The source-only numbers are those of the checkpoint every trial starts from (the baseline's ``best.pt``), its
evaluation at the iteration it was selected (:func:`.collect.load_study`), not the baseline's last evaluation.

The package: :mod:`.collect` reads the study directory, :mod:`.importance` the Optuna journal, :mod:`.aggregate`
groups replicates, :mod:`.tables` and :mod:`.paper` build the tables, :mod:`.figures` draws the PNGs and
:mod:`.writer` writes them all.
"""
from __future__ import annotations

from study.report.collect import (FIGURES, STATUSES, ReportError, StudyData, TrialRecord, asha_rungs,
                                  load_study)
from study.report.importance import OptunaSummary, read_optuna
from study.report.tables import ReportSummary, per_class_rows
from study.report.writer import write_report

__all__ = ["ReportSummary", "TrialRecord", "StudyData", "ReportError", "load_study", "write_report",
           "asha_rungs", "per_class_rows", "read_optuna", "OptunaSummary"]

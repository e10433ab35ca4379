"""Searcher, scheduler and console progress for studies: Ray Tune's pieces with the bookkeeping studies need.

- :class:`StudySearch` is Ray's ``OptunaSearch`` telling Optuna what really happened to a trial. Ray tells a trial
  that ASHA stopped early as COMPLETE with its early value, which biases TPE toward configurations that look good
  early (ray-tune-optuna notes, TL;DR 5); here such a trial is told PRUNED (its intermediate values are kept, Optuna
  takes the last one as its value). A failed trial is told FAIL with its reason as a user attribute; a non-finite
  value is never told (Optuna refuses NaN and the trial would stay RUNNING forever).
- :class:`PersistentASHA` is ASHA whose rungs survive ``Tuner.restore`` (Ray rebuilds schedulers empty, ray#30838):
  the recorded values, and which trials it stopped, are written to ``asha_rungs.json`` in the study directory and
  read back on the first use; a trial it stopped is answered STOP again if a resume runs it once more.

Relocation: both are pickled by Ray (``tuner.pkl``, ``searcher-state-*.pkl``) and come back on ``Tuner.restore``,
possibly in another directory or on another machine. Neither pickles a location: the Optuna storage, the study
directory and the rung file are dropped from their pickles and set again with ``bind(...)`` by the driver that
restores them (study/run/tuner.py), from the study's current home. A restored object used unbound raises.
- :class:`StudyProgress` prints one line per trial event instead of Ray's tables (``verbose=0``), each trial named
  by its label (:class:`TrialLabels`: ``#6 λ=0.0291 lr=0.0429 seed=1``, as TensorBoard, the report and ``study
  status`` name it; ``trial_<id>`` is only its directory).
"""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import optuna
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.state.journal import RERUN_OF
from study.run.snapshots import SnapshotPacing
from trainables import faults

__all__ = ["StudySearch", "PersistentASHA", "Unbound", "StudyProgress", "FINISHED_KEY", "FAILURE_FILE", "read_failure", "trial_failure",
           "trial_dirname", "short_param", "TrialLabels", "optuna_number", "note_optuna_number"]

# Reported (1.0) with the last evaluation of a run that trained all its iterations; absent when stopped early.
FINISHED_KEY = "finished"
# Written by the trainable into its trial directory before it raises: why it failed (diverged, OOM, ...).
FAILURE_FILE = "failure.json"


def trial_dirname(trial: Any) -> str:
    """Short, stable trial directory names (Ray's default repeats every parameter in the name)."""
    return f"trial_{trial.trial_id}"


# Ray trial id -> the number of the Optuna trial it runs (a replicate: its configuration's), as this driver's searcher
# asked or restored it (StudySearch, study.run.replicates.ReplicateSearch). The searcher and the progress callbacks
# run in the driver process; this is never pickled (a resumed driver fills it again when the searcher is restored).
_OPTUNA_NUMBERS: dict[str, int] = {}


def note_optuna_number(trial_id: str, number: int | None) -> None:
    if number is not None:
        _OPTUNA_NUMBERS[str(trial_id)] = int(number)


def optuna_number(trial_id: str) -> int | None:
    """The Optuna trial number of a Ray trial of this driver's study; None if its searcher never named one (a PBT
    member, a trial of another driver)."""
    return _OPTUNA_NUMBERS.get(str(trial_id))


class TrialLabels:
    """A running trial's label (:func:`study.config.labels.trial_label`), the identity the progress lines and the
    live table show: ``#6 λ=0.0291 lr=0.0429 seed=1``, the number of its Optuna trial (:func:`optuna_number`) and
    its searched values in the space's order (``dimensions``); with replicates (``replicates``: ``search.seeds``)
    its seed last, its configuration's number first, as the report and TensorBoard label a replicate. A trial
    without an Optuna number (a PBT member) is named by its directory in place of the number, as there too.
    Pickled with the callbacks into ``tuner.pkl``: it holds names only."""

    def __init__(self, dimensions: Sequence[str], *, replicates: bool = False):
        self.dimensions = list(dimensions)
        self.replicates = bool(replicates)

    def __call__(self, trial: Any) -> str:
        from study.config.labels import SEED_KEY, trial_label

        config = getattr(trial, "config", None) or {}
        seed = config.get(SEED_KEY) if self.replicates else None
        return trial_label(optuna_number(trial.trial_id), config, self.dimensions, fallback=trial_dirname(trial),
                           seed=seed)


def short_param(name: str) -> str:
    """The parameter's display name, as everywhere else (:func:`study.config.spaces.param_label`): ``optim.lr@deeplabv2_tiny``
    → ``lr``, ``adapt.lambda_adv_main`` → ``lambda_adv``, ``model.name`` → ``backbone``."""
    from study.config.spaces import param_label

    return param_label(name)


def read_failure(trial_dir: Path | str) -> str | None:
    """The reason in a trial's ``failure.json``: a local directory, or one in an object store (``s3://...``,
    where the trial writes it so that a retry on another node sees it)."""
    try:
        if "://" in str(trial_dir):
            from trainables.objectstore import read_bytes

            return json.loads(read_bytes(f"{str(trial_dir).rstrip('/')}/{FAILURE_FILE}"))["reason"]
        return json.loads((Path(trial_dir) / FAILURE_FILE).read_text())["reason"]
    except (OSError, ValueError, KeyError):
        return None


def trial_failure(trial: Any) -> tuple[str | None, str]:
    """``(reason in the trial's failure.json or None, where its files are)`` of a Ray trial, read through Ray's
    storage filesystem of the study: with ``--storage s3://`` the trial's directory is in the bucket, and Ray's path
    there has no scheme (a local read of it found nothing, and the line said "see dastudy-test/studies/...")."""
    storage = getattr(trial, "storage", None)
    if storage is None:
        return None, ""
    path = str(storage.trial_fs_path).rstrip("/")
    fs = getattr(storage, "storage_filesystem", None)
    root = getattr(getattr(fs, "handler", None), "root", "")  # study.state.store_fs: "s3://bucket"
    where = f"{root.split('://', 1)[0]}://{path}" if "://" in root else path
    if fs is None:
        return read_failure(path), where
    try:
        with fs.open_input_stream(f"{path}/{FAILURE_FILE}") as src:
            return str(json.loads(src.read())["reason"]), where
    except (OSError, ValueError, KeyError, TypeError):
        return None, where


class Unbound(RuntimeError):
    """A restored searcher or scheduler was used before ``bind`` gave it the study's current location."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"{what} was restored without a study location; call bind() first")

    def __reduce__(self):  # pickle/copy rebuild from ``what``, not from the formatted message
        return type(self), (self.what,), self.__dict__


# Attributes that name a place (a journal path, a study directory, an open study on that storage): never pickled.
_LOCATION_BOUND = ("_storage", "_ot_study", "_study_dir")


class StudySearch(OptunaSearch):
    """OptunaSearch with honest final states (PRUNED / FAIL with reason) and the Ray trial id on each Optuna trial.

    A trial that ended without error, without having trained all its iterations (no :data:`FINISHED_KEY` in its
    last result) and before ``max_t`` evaluations was stopped by the scheduler: PRUNED. A state Optuna could not
    record (a full disk) is kept and told again at the next event or after a restore, never dropped.
    """

    def __init__(self, space, *, metric: str, mode: str, max_t: int, study_dir: str | os.PathLike,
                 num_samples: int | None = None, **kwargs):
        super().__init__(space, metric=metric, mode=mode, **kwargs)
        self._max_t = max_t
        self._num_samples = num_samples
        self._study_dir = str(study_dir)
        self._pending: dict[str, dict] = {}  # trial id -> the end Optuna has not recorded yet

    # -- relocation ------------------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in _LOCATION_BOUND}
        state["_ot_trials"] = _trial_ids(self._ot_trials)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.update({key: None for key in _LOCATION_BOUND})
        self._ot_trial_ids = dict(self._ot_trials)
        self._ot_trials = {}
        self.__dict__.setdefault("_pending", {})

    def bind(self, *, study_dir: str | os.PathLike, storage, sampler=None) -> None:
        """Point a restored searcher at the study's current home: its Optuna storage there (``storage``) and,
        optionally, a new sampler. Called by the driver before ``fit`` on every restore."""
        self._study_dir = str(study_dir)
        self._storage = storage
        if sampler is not None:
            self._sampler = sampler
        self._ot_study = optuna.create_study(storage=storage, sampler=self._sampler,
                                             pruner=optuna.pruners.NopPruner(), study_name=self._study_name,
                                             load_if_exists=True,
                                             direction="minimize" if self._mode == "min" else "maximize")
        ids = getattr(self, "_ot_trial_ids", None) or _trial_ids(self._ot_trials)
        self._ot_trials = {tid: optuna.trial.Trial(self._ot_study, storage_id) for tid, storage_id in ids.items()}
        self._note_numbers()

    def _note_numbers(self) -> None:
        """The Optuna number of every Ray trial this searcher knows, for the progress lines (:func:`optuna_number`)."""
        for tid, ot_trial in self._ot_trials.items():
            note_optuna_number(tid, ot_trial.number)

    def bind_space(self, space) -> None:
        """Sample the trials still to come from ``space`` (a resume with ``--allow-changed-space``)."""
        self._space = space

    def save(self, checkpoint_path: str) -> None:
        """The searcher's bookkeeping as JSON (Ray's file name says .pkl): which Ray trial is which Optuna trial,
        which ended, what is still to be told. Everything else comes back from ``tuner.pkl`` and ``bind``; no
        pickle is loaded by dastudy's own code (tests/reliability/test_reliability_safety.py)."""
        with open(checkpoint_path, "w") as fh:
            fh.write(json.dumps(self.state_dict()))  # dumps: C encoder; dump encodes in Python, chunk by chunk

    def state_dict(self) -> dict:
        """What :meth:`save` writes (JSON-ready); :class:`study.run.replicates.ReplicateSearch` nests it in its own."""
        return {"ot_trials": _trial_ids(self._ot_trials), "completed": sorted(self._completed_trials),
                "pending": self._pending}

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Ray's ``Searcher.save_to_dir`` with the temporary file outside ``checkpoint_dir``: that is Ray's driver
        staging directory, which a background thread may be uploading at that moment; a temporary file the upload
        listed and Ray then renamed failed the sync with FileNotFoundError (issue 12). Here the staging directory
        only ever holds whole files under their final names (``os.replace`` within one filesystem)."""
        final = os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str))
        fd, tmp = tempfile.mkstemp(prefix=".dastudy-searcher-", dir=os.path.dirname(os.path.abspath(checkpoint_dir)))
        os.close(fd)
        try:
            self.save(tmp)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def restore(self, checkpoint_path: str) -> None:
        """Ray's state of the searcher at its last snapshot, into this bound searcher: which Ray trial is which
        Optuna trial, which ended, what is still to be told. The location and the sampler stay this object's."""
        if self._ot_study is None:
            raise Unbound("StudySearch")
        try:
            with open(checkpoint_path) as fh:
                saved = json.load(fh)
        except (UnicodeDecodeError, ValueError):  # a study from before: Ray's own (pickled) searcher state
            keep = {key: self.__dict__[key] for key in (*_LOCATION_BOUND, "_sampler")}
            super().restore(checkpoint_path)
            saved = {"ot_trials": _trial_ids(self._ot_trials), "completed": sorted(self._completed_trials),
                     "pending": getattr(self, "_pending", {})}
            self.__dict__.update(keep)
        self.load_state_dict(saved)

    def load_state_dict(self, saved: dict) -> None:
        """Restore what :meth:`state_dict` returned into this bound searcher, then tell Optuna what is pending."""
        if self._ot_study is None:
            raise Unbound("StudySearch")
        ids = {tid: int(storage_id) for tid, storage_id in saved["ot_trials"].items()}
        self._completed_trials = set(saved["completed"])
        self._pending = dict(saved.get("pending", {}))
        self._ot_trials = {tid: optuna.trial.Trial(self._ot_study, storage_id) for tid, storage_id in ids.items()}
        self._ot_trial_ids = ids
        self._note_numbers()
        self._flush_pending()

    # -- Ray's searcher interface ----------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | None:
        if self._ot_study is None:
            raise Unbound("StudySearch")
        self._flush_pending()
        if trial_id not in self._ot_trials and self._ot_study is not None:
            self._adopt_orphan(trial_id)
            if trial_id not in self._ot_trials and self._all_asked():
                return Searcher.FINISHED
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            note_optuna_number(trial_id, ot_trial.number)  # the progress lines' label (TrialLabels)
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            ot_trial.set_user_attr("trial_dir", f"trial_{trial_id}")
            from study.config.labels import trial_label

            # optuna-dashboard shows user attributes: the same name the CLI, the report and TensorBoard use
            ot_trial.set_user_attr("label", trial_label(ot_trial.number, ot_trial.params))
            faults.inject("suggest", ot_trial.number)  # test-only (DASTUDY_FAULT): asked, not yet saved by Ray
        return config

    def _adopt_orphan(self, trial_id: str) -> None:
        """After a driver crash the journal can hold an Optuna trial asked after Ray's last experiment snapshot:
        RUNNING, unknown to the restored searcher, never started. The next new Ray trial takes it over (its
        sampled values are reused by the define-by-run function), so the study neither keeps a RUNNING trial
        forever nor ends with more trials than ``num_samples``."""
        known = {t.number for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        orphans = [t for t in running if t.number not in known]
        if orphans:
            orphan = min(orphans, key=lambda t: t.number)
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphan._trial_id)
            self._ot_trials[trial_id].set_user_attr("adopted_from", orphan.user_attrs.get("ray_trial_id", ""))
            self._set_aside_orphan_dir(orphan.user_attrs.get("ray_trial_id", ""))

    def _all_asked(self) -> bool:
        """True when Optuna already holds ``num_samples`` trials (re-runs of a FAIL not counted twice) and none is
        left to adopt. After a driver kill Ray's saved state can be older than trials that were asked *and ended*
        since (snapshots come every ≥ 10 s; study/run/snapshots.py): their results are in Optuna and in their trial
        folders, but Ray counts them as never created and would sample as many new trials, one Optuna trial too
        many each (a 4-seed grid study ended with 5). The study is complete when Optuna says so."""
        total = getattr(self, "_num_samples", None)  # None in a searcher pickled by older code: no cap
        if not total:
            return False
        from study.state.journal import superseded_numbers

        trials = self._ot_study.get_trials(deepcopy=False)
        return len(trials) - len(superseded_numbers(trials)) >= total

    def _set_aside_orphan_dir(self, ray_trial_id: str) -> None:
        """The killed driver may have created the orphan's Ray trial folder (``params.json``, perhaps a first
        result) before its snapshot; Ray will never run it again. Move it, whole, to ``superseded/`` in the study
        so that the study's ``trial_*`` folders are exactly its trials, and nothing the killed run wrote is lost.
        Only on a local filesystem (an object store's copy of the folder is left as it is)."""
        if not ray_trial_id or not self._study_dir or "://" in self._study_dir:
            return
        old = Path(self._study_dir) / f"trial_{ray_trial_id}"
        if not old.is_dir():
            return
        aside = Path(self._study_dir) / "superseded"
        aside.mkdir(exist_ok=True)
        target = aside / old.name
        if not target.exists():
            os.rename(old, target)  # same filesystem: atomic, never a copy-then-delete

    def _already_recorded(self, trial_id: str) -> bool:
        """True when Optuna holds a final state for this trial although Ray runs it again: the driver died between
        Optuna's tell and Ray's next state snapshot, and `study resume` re-runs the trial. The recorded outcome stands
        (a re-run from the checkpoint reproduces it), and Optuna refuses updates to a finished trial."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()

    def record_reruns(self, results) -> int:
        """After ``fit`` of a resumed study: record each trial Optuna holds as FAIL that this run ended without error
        (:meth:`_record_rerun`), and tell Optuna the end of each trial it still holds as RUNNING that this run ended
        (:meth:`on_trial_complete`); returns how many. Needed because Ray's ``ConcurrencyLimiter`` (which
        ``max_concurrent_trials`` puts around this searcher) passes on the end of a trial only if its restored
        ``live_trials`` name it, and they lag this searcher's state: a trial suggested shortly before the driver was
        killed was in this searcher's saved state but not the limiter's, so its end never reached
        :meth:`on_trial_complete`, Optuna kept it RUNNING and `study status` called it INTERRUPTED (seen in
        tests/study/test_tune_resume.py::test_resume_after_driver_sigkill, 1 run in 3 fresh-clone runs)."""
        recorded = 0
        for result in results:
            trial_id = (result.metrics or {}).get("trial_id")
            if not trial_id:
                continue
            if result.error is None and self._recorded_as_failed(trial_id):
                self._record_rerun(trial_id, result.metrics)
                recorded += 1
            elif (trial_id in self._ot_trials and trial_id not in self._completed_trials
                  and not self._already_recorded(trial_id)):
                self.on_trial_complete(trial_id, result=dict(result.metrics or {}), error=result.error is not None)
                recorded += 1
        return recorded

    def _recorded_as_failed(self, trial_id: str) -> bool:
        ot_trial = self._ot_trials.get(trial_id)
        return ot_trial is not None and (self._ot_study._storage.get_trial(ot_trial._trial_id).state
                                         == optuna.trial.TrialState.FAIL)

    def _record_rerun(self, trial_id: str, result: dict) -> None:
        """A trial Optuna holds as FAIL that ``study resume`` ran again (Ray resumes errored trials from their last
        checkpoint) and that now ended without error. Optuna never changes a finished trial, so the outcome becomes
        a new Optuna trial with the same parameters and earlier intermediate values, ``rerun_of`` naming the failed
        one, which ``study status`` and ``study report`` then leave out (:func:`study.state.journal.superseded_numbers`;
        TPE ignores FAIL trials anyway). Before: the trial stayed FAIL although it completed."""
        old = self._ot_study._storage.get_trial(self._ot_trials[trial_id]._trial_id)
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return  # nothing better to record than the failure
        iteration = int(result.get("training_iteration", 0) or 0)
        complete = bool(result.get(FINISHED_KEY)) or iteration >= self._max_t
        attrs = {k: v for k, v in old.user_attrs.items() if k != "fail_reason"}
        attrs[RERUN_OF] = old.number
        if not complete:
            attrs["pruned_at"] = iteration
        existing = [t for t in self._ot_study.get_trials(deepcopy=False)
                    if t.user_attrs.get(RERUN_OF) == old.number]  # told before a driver kill: not twice
        if not existing:
            self._ot_study.add_trial(optuna.trial.create_trial(
                params=old.params, distributions=old.distributions, value=float(value),
                state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.PRUNED,
                intermediate_values={**old.intermediate_values, iteration: float(value)}, user_attrs=attrs))
            existing = [t for t in self._ot_study.get_trials(deepcopy=False)
                        if t.user_attrs.get(RERUN_OF) == old.number]
        self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, existing[-1]._trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and not self._already_recorded(trial_id):
            try:
                super().on_trial_result(trial_id, result)
            except OSError as exc:  # a full disk: this intermediate value is not recorded; the trial goes on
                print(f"warning: could not record a result of trial {trial_id} in Optuna: {exc}", file=sys.stderr)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False, *,
                          failed_dir: str | None = None) -> None:
        """Ray's end of a trial (``failed_dir``: the trial directory holding ``failure.json`` when it is not
        ``trial_<trial_id>``, i.e. a failed replicate of a configuration; study/run/replicates.py)."""
        if trial_id in self._completed_trials and not error and self._recorded_as_failed(trial_id):
            self._record_rerun(trial_id, result or {})
            return
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result=result, error=error)
        self._completed_trials.add(trial_id)
        self._pending[trial_id] = {"value": (result or {}).get(self.metric), "error": error,
                                   "iteration": int((result or {}).get("training_iteration", 0) or 0),
                                   "finished": bool((result or {}).get(FINISHED_KEY))}
        if failed_dir:
            self._pending[trial_id]["trial_dir"] = failed_dir
        self._flush_pending()

    def _flush_pending(self) -> None:
        """Tell Optuna every trial end it has not recorded yet; one that fails (a full disk) stays pending (it is
        in the searcher's saved state, so a restored driver tells it) and a warning is printed."""
        for trial_id in list(self._pending):
            if trial_id not in self._ot_trials:
                continue
            end = self._pending[trial_id]
            try:
                if not self._already_recorded(trial_id):
                    self._tell_state(self._ot_trials[trial_id], end["value"], error=end["error"],
                                     iteration=end["iteration"], finished=end["finished"], trial_id=trial_id)
            except Exception as exc:  # never let bookkeeping take the study down; told again later
                print(f"warning: could not record trial {trial_id} in Optuna yet ({exc}); will retry",
                      file=sys.stderr)
                return
            del self._pending[trial_id]

    def _tell(self, ot_trial, value: float | None = None, *, state) -> None:
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except RuntimeError as exc:
            # GridSampler calls study.stop() once the grid is exhausted, which raises outside study.optimize;
            # Optuna has stored the state already (in a `finally`), so nothing is lost.
            if "Study.stop" not in str(exc):
                raise

    def _tell_state(self, ot_trial, value, *, error: bool, iteration: int, finished: bool, trial_id: str) -> None:
        from study.config.labels import percent_name

        if not error and isinstance(value, (int, float)) and math.isfinite(value) and \
                percent_name(self.metric) != self.metric:  # Optuna's value stays the fraction the sampler saw
            ot_trial.set_user_attr(percent_name(self.metric), round(100 * float(value), 4))
        if error or not isinstance(value, (int, float)) or not math.isfinite(value):
            # a configuration run on several seeds names the replicate that failed (study/run/replicates.py)
            where = self._pending.get(trial_id, {}).get("trial_dir") or f"trial_{trial_id}"
            reason = read_failure(f"{self._study_dir.rstrip('/')}/{where}") if self._study_dir else None
            if reason is None:
                reason = (f"error (see the trial's error.txt in {self._study_dir or 'the study storage'})" if error
                          else f"no finite {self.metric} reported")
            ot_trial.set_user_attr("fail_reason", reason[:2000])
            self._tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        elif not finished and iteration < self._max_t:
            # Ray hands the result that made the scheduler stop the trial to on_trial_complete only: record it as
            # the last intermediate value, which Optuna then takes as the PRUNED trial's value.
            ot_trial.report(float(value), iteration)
            ot_trial.set_user_attr("pruned_at", iteration)
            self._tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self._tell(ot_trial, float(value), state=optuna.trial.TrialState.COMPLETE)


def _trial_ids(ot_trials: dict) -> dict[str, int]:
    """Ray trial id -> Optuna's storage id of its trial (what survives a pickle; older pickles hold Trial objects)."""
    return {tid: (t if isinstance(t, int) else t._trial_id) for tid, t in ot_trials.items()}


class PersistentASHA(SnapshotPacing, ASHAScheduler):
    """ASHA (Li et al., https://arxiv.org/abs/1810.05934) whose rung records and stop decisions are saved in
    ``<study>/asha_rungs.json`` (the study directory given by ``bind``; never pickled, see the module docstring).

    Ray's ASHA records a trial in a rung once and decides only then; a trial it stopped whose stop Ray's state
    had not saved yet runs again after a resume, finds itself already recorded and was answered CONTINUE, undoing
    the prune. Stopped trials are therefore remembered too and answered STOP whenever they report again."""

    STATE_FILE = "asha_rungs.json"

    def __init__(self, *, study_dir: str | os.PathLike, **kwargs):
        super().__init__(**kwargs)
        self._study_dir: str | None = str(study_dir)
        self._stopped: dict[str, float] = {}  # trial id -> the time_attr value it was stopped at
        self._loaded = False

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_study_dir", "_saved_records")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._study_dir = None
        self.__dict__.setdefault("_stopped", {})

    def bind(self, *, study_dir: str | os.PathLike) -> None:
        self._study_dir = str(study_dir)
        self.__dict__.pop("_saved_records", None)  # a new home gets the whole state at the next result

    @property
    def state_path(self) -> Path:
        if self._study_dir is None:
            raise Unbound("PersistentASHA")
        return Path(self._study_dir) / self.STATE_FILE

    def _load_once(self) -> None:
        if self._loaded:
            return
        path = self.state_path
        self._loaded = True
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        for bracket, rungs in zip(self._brackets, saved.get("brackets", [])):
            for (milestone, recorded), (saved_milestone, saved_recorded) in zip(bracket._rungs, rungs):
                if float(milestone) == float(saved_milestone):
                    for trial_id, value in saved_recorded.items():
                        recorded.setdefault(trial_id, value)
        for trial_id, at in saved.get("stopped", {}).items():
            self._stopped.setdefault(trial_id, at)

    def _records(self) -> int:
        # Ray's brackets only ever add a (trial, value) record to a rung, once per milestone, and stops are only
        # added too: the count of records changes exactly when the saved state would.
        return sum(len(recorded) for b in self._brackets for _, recorded in b._rungs) + len(self._stopped)

    def _save(self) -> None:
        records = self._records()
        if records == self.__dict__.get("_saved_records"):
            return  # nothing new: rewriting the whole file on every result was quadratic over a study
        state = {"brackets": [[[m, dict(r)] for m, r in b._rungs] for b in self._brackets],
                 "stopped": self._stopped}
        path = self.state_path
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(state))  # dumps: C encoder; dump encodes in Python, chunk by chunk
        os.replace(tmp, path)
        self._saved_records = records

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        stopped_at = self._stopped.get(trial.trial_id)
        now = result.get(self._time_attr)
        if stopped_at is not None and now is not None and now >= stopped_at:
            return self.STOP  # stopped here before a driver restart: the decision stands
        action = super().on_trial_result(tune_controller, trial, result)
        if action == self.STOP:
            self._stopped[trial.trial_id] = result.get(self._time_attr)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._load_once()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _fmt_metric(metric: str, value: Any) -> str:
    """mIoU and pixel accuracy (fractions in reports) as percentages, like the tables."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return str(value)
    if metric.rsplit("/", 1)[-1].startswith(("mIoU", "pixel_acc")):
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"


class StudyProgress(Callback):
    """One line per trial event on stdout: start (with its parameters), each evaluation, end state, failure.
    ``name_of``: a trial's name in the lines (the driver passes :class:`TrialLabels`; default: its directory)."""

    def __init__(self, *, metric: str, mode: str, max_t: int, num_samples: int, name_of: Any = None):
        self.metric, self.mode, self.max_t, self.num_samples = metric, mode, max_t, num_samples
        self.name_of = name_of
        self._best: tuple[float, str] | None = None
        self._t0 = time.time()
        self._ended = 0

    def _line(self, text: str) -> None:
        elapsed = time.time() - self._t0
        print(f"[{int(elapsed // 60):3d}:{int(elapsed % 60):02d}] {text}", file=sys.stdout, flush=True)

    def _better(self, value: float) -> bool:
        if self._best is None:
            return True
        return value > self._best[0] if self.mode == "max" else value < self._best[0]

    def _name(self, trial: Any) -> str:
        name_of = self.__dict__.get("name_of")  # None in a callback pickled by older code: the directory name
        return name_of(trial) if name_of is not None else trial_dirname(trial)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        name, where = self._name(trial), trial_dirname(trial)
        if name != where:  # the label holds the searched values; the start line adds where the trial's files are
            self._line(f"{name} started" + ("" if name.startswith(where) else f"   in {where}"))
            return
        params = " ".join(f"{short_param(k)}={_fmt(v)}" for k, v in sorted(trial.config.items()))
        self._line(f"{name} started   {params}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        step = result.get("training_iteration")
        note = ""
        if isinstance(value, (int, float)) and math.isfinite(value) and self._better(value):
            self._best = (float(value), self._name(trial))
            note = "  (highest so far)" if self.mode == "max" else "  (lowest so far)"
        self._line(f"{self._name(trial)} eval {step}/{self.max_t}  {self.metric}={_fmt_metric(self.metric, value)}"
                   f"{note}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        step = int(result.get("training_iteration", 0) or 0)
        state = "COMPLETE" if result.get(FINISHED_KEY) or step >= self.max_t else f"PRUNED at {step}/{self.max_t}"
        self._ended += 1
        self._line(f"{self._name(trial)} {state}  {self.metric}={_fmt_metric(self.metric, result.get(self.metric))}"
                   f"   [{self._ended}/{self.num_samples} trials ended]")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        reason, where = trial_failure(trial)
        if reason is None and where:
            # the study's copy (Ray syncs error.txt into the trial directory), not Ray's temp dir, which is
            # deleted when Ray shuts down
            reason = "see " + shlex.quote(f"{where}/error.txt")
        self._ended += 1
        self._line(f"{self._name(trial)} FAILED  {reason or ''}   [{self._ended}/{self.num_samples} trials ended]")

    def on_experiment_end(self, trials, **info) -> None:
        errors = sum(t.status == "ERROR" for t in trials)
        self._line(f"study ended: {len(trials)} trials, {errors} failed")

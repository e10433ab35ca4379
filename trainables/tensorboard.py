"""TensorBoard reporter: clean scalar tags, prediction panels and an HParams entry in the run's own directory.

Ray's automatic ``TBXLoggerCallback`` prefixes every tag with ``ray/tune/`` (ray#39741), writes HParams only
when a trial ends and knows nothing about images. This reporter is called by the engine itself
(``Trainer(..., reporters=[TensorBoardReporter(run_dir / "tb", hparams=...)])``), so the same events are
written whether the run is a Ray trial, a plain ``dastudy train-source`` / ``adapt`` run or a job on a machine without Ray.

HParams: ``SummaryWriter.add_hparams`` would put the HParams summaries into a *new* timestamped sub-run, so
that TensorBoard's HParams table lists a run without the scalars. Here the experiment and session-start
summaries go into the run's own event file at ``on_start`` and the session end (with the trial's status) at
``on_end``; TensorBoard then reads each metric column from the last value of the run's own scalar tag.

Nothing here imports Ray or Optuna.
"""
from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "TensorBoardReporter", "prediction_panel", "default_metric_tags", "write_session_end",
    "STATUS_BY_RESULT", "PRUNED_TAG", "FAILED_TAG", "STATUS_TAG", "PARAM_LABELS", "param_label",
    "experiment_summary", "write_hparams_session", "percent_tag", "LAYOUT", "layout", "write_layout",
    "PERCENT",
]

# One display name per searched TrainConfig key, used by every view of a study (status, progress lines, report,
# TensorBoard HParams columns and run names, Optuna's user attributes): a parameter reads the same everywhere.
# (Here, not in study.config.spaces, because the engine's reporter names HParams columns and trainables never import
# study; study.config.spaces re-exports it.)
PARAM_LABELS: dict[str, str] = {
    "adapt.lambda_adv_main": "lambda_adv",
    "adapt.lambda_adv_aux": "lambda_adv_aux",
    "adapt.lambda_target": "lambda_target",
    "adapt.lr_d": "lr_d",
    "adapt.gan": "gan",
    "adapt.target_loss": "target_loss",
    "optim.lr": "lr",
    "model.name": "backbone",
    "runtime.seed": "seed",
}
# Older short names (the key's last component), as older tables printed them.
_SHORT = {key.rsplit(".", 1)[1]: label for key, label in PARAM_LABELS.items() if not key.endswith(".name")}


def param_label(name: str) -> str:
    """The display name of a parameter given as an Optuna name (``optim.lr@deeplabv2_tiny``), a TrainConfig key
    (``optim.lr``) or a display name (``lr``): all three give ``lr``. A key without a label keeps its full dotted
    form (``model.weights``), never its last component alone (``model.name`` is not ``name``)."""
    key = str(name).split("@", 1)[0]
    return PARAM_LABELS.get(key) or _SHORT.get(key) or key

PERCENT = " %"  # the unit suffix of an IoU tag: no brackets, see percent_tag


def percent_tag(key: str) -> str | None:
    """The TensorBoard tag of an IoU metric, shown in percent with the unit in its name (``val/mIoU16`` →
    ``val/mIoU16 %``, ``val/IoU/road`` → ``val/IoU/road %``), as the report and the CLI show it; None for any other
    key (losses, learning rates, ``uda/…`` validators keep their own scale and name). Not ``val/mIoU16 (%)``:
    TensorBoard's Custom Scalars dashboard matches a chart's series by reading the tag as a regex, so a tag with
    brackets is fetched but never drawn (measured with TensorBoard 2.21: an empty chart)."""
    last = str(key).split("/")
    if len(last) >= 2 and (last[1].startswith("mIoU") or last[1] == "IoU") and not key.endswith(PERCENT):
        return f"{key}{PERCENT}"
    return None


def _mean_chart(mean: str) -> list:
    return ["Multiline", [rf"^(val|select)/{mean}{PERCENT}$"]]


def layout(num_classes: int | None = None) -> dict[str, Any]:
    """Custom scalars (one row per category, its charts side by side). Each mIoU of the class setting on a chart of
    its own: mIoU13 and mIoU16 differ by three classes and by ~5 points, so one chart would compare unlike numbers.
    ``num_classes`` None: every mean."""
    means = {16: ("mIoU16", "mIoU13"), 19: ("mIoU19", "mIoU16", "mIoU13")}.get(num_classes,
                                                                               ("mIoU16", "mIoU13", "mIoU19"))
    return {
        "mIoU (%)": {f"{mean} (%)": _mean_chart(mean) for mean in means},
        "losses (G | D)": {
            "generator: adversarial losses": ["Multiline", [r"^train/loss_adv_.*"]],
            "discriminator: losses": ["Multiline", [r"^train/loss_d_.*"]],
            "segmentation losses": ["Multiline", [r"^train/loss_seg.*"]],
        },
    }


LAYOUT = layout()


def write_layout(writer: Any, num_classes: int | None = None) -> None:
    """The custom-scalars layout into ``writer``'s own event file (the plugin merges the layouts of all runs, so
    no extra run is needed to hold it)."""
    writer.add_custom_scalars(layout(num_classes))


PRUNED_TAG = "trial/pruned"  # 1.0 when the scheduler (or the user) stopped the run early
FAILED_TAG = "trial/failed"  # 1.0 when the run diverged or raised
STATUS_TAG = "trial/status"  # text: completed | diverged | stopped | pruned | failed

# Result status (engine's on_end) → TensorBoard HParams session status. The HParams plugin has no
# "aborted" status, and it keeps the *first* session end of a run for good: an early stop therefore writes no
# session end at all (TensorBoard shows Unknown, as for a missing one), only trial/pruned = 1, so that a run
# resumed later (`dastudy study resume`) can still close its session as Success.
STATUS_BY_RESULT = {
    "completed": "STATUS_SUCCESS",
    "diverged": "STATUS_FAILURE",
    "failed": "STATUS_FAILURE",
    "error": "STATUS_FAILURE",
    "stopped": "STATUS_UNKNOWN",
    "pruned": "STATUS_UNKNOWN",
    "interrupted": "STATUS_UNKNOWN",
}


def default_metric_tags(num_classes: int, selection: str = "val") -> tuple[str, ...]:
    """The metric columns of the HParams table when the caller names none: the mIoUs of the class setting,
    on target val and, when checkpoints are selected on the holdout split, on that split too."""
    means = ("mIoU16", "mIoU13") if num_classes == 16 else (f"mIoU{num_classes}",)
    tags = [f"val/{m}" for m in means]
    if selection == "holdout":
        tags += [f"select/{m}" for m in means]
    return tuple(tags)


def _palette(num_classes: int) -> np.ndarray:
    # Index 255 (ignore) and every index without a class are black.
    from data.labels import class_colors

    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:num_classes] = np.asarray(class_colors(num_classes), dtype=np.uint8)
    return palette


def _colorize(label_map: np.ndarray, palette: np.ndarray) -> np.ndarray:
    label_map = np.asarray(label_map)
    # Out-of-range values (negative, >255) are shown as ignore rather than wrapping around.
    safe = np.where((label_map >= 0) & (label_map < 256), label_map, 255).astype(np.int64)
    return palette[safe]


def _resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = (np.arange(height) * image.shape[0] // height).clip(0, image.shape[0] - 1)
    cols = (np.arange(width) * image.shape[1] // width).clip(0, image.shape[1] - 1)
    return image[rows][:, cols]


def prediction_panel(image: np.ndarray, label: np.ndarray, pred: np.ndarray, *, num_classes: int,
                     gap: int = 2) -> np.ndarray:
    """``image | ground truth | prediction`` side by side as one HxWx3 uint8 array (class colours, ignore black).

    The image is resized (nearest) to the label's size when they differ: under the "full" protocol the
    label keeps its native resolution while the network input is resized.
    """
    label = np.asarray(label)
    pred = np.asarray(pred)
    if label.ndim != 2 or pred.shape != label.shape:
        raise ValueError(f"prediction_panel: label {label.shape} and pred {pred.shape} must be equal HxW maps")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"prediction_panel: image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    height, width = label.shape
    if image.shape[:2] != (height, width):
        image = _resize_nearest(image, height, width)
    palette = _palette(num_classes)
    separator = np.full((height, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([image, separator, _colorize(label, palette), separator, _colorize(pred, palette)],
                          axis=1)


def _hparam_value(value: Any) -> float | str | None:
    # The HParams plugin knows numbers, strings and bools; torch's helper files bools as numbers, so they
    # become strings here to stay categorical. Lists (e.g. sizes) become their JSON text.
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def write_session_end(writer_or_logdir: Any, status: str, *, iteration: int | None = None) -> None:
    """Record how a run ended: ``trial/pruned``, ``trial/failed``, a status text and, for a final status
    (completed → Success, diverged/failed → Failure), the HParams session end.

    ``writer_or_logdir`` is an open ``SummaryWriter`` or a run directory (a new event file is added there, e.g.
    by a driver for a trial whose engine never reached ``on_end``). ``status`` is an engine result status
    (``completed``, ``diverged``, ``failed``, ``stopped``, ``interrupted``) or ``pruned``.
    """
    from torch.utils.tensorboard import SummaryWriter

    if status not in STATUS_BY_RESULT:
        raise ValueError(f"write_session_end: status = {status!r} is not valid; allowed: "
                         + " | ".join(STATUS_BY_RESULT))
    own_writer = not isinstance(writer_or_logdir, SummaryWriter)
    writer = SummaryWriter(str(writer_or_logdir), filename_suffix=".status") if own_writer else writer_or_logdir
    try:
        step = 0 if iteration is None else int(iteration)
        writer.add_scalar(PRUNED_TAG, 1.0 if status in ("stopped", "pruned") else 0.0, step)  # not "interrupted"
        writer.add_scalar(FAILED_TAG, 1.0 if STATUS_BY_RESULT[status] == "STATUS_FAILURE" else 0.0, step)
        writer.add_text(STATUS_TAG, status, step)
        if STATUS_BY_RESULT[status] != "STATUS_UNKNOWN":
            writer._get_file_writer().add_summary(_session_end_summary(STATUS_BY_RESULT[status]), step)
        writer.flush()
    finally:
        if own_writer:
            writer.close()


def _session_end_summary(status_name: str):
    # Built like torch.utils.tensorboard.summary.hparams builds its (always successful) session end;
    # tensorboard.plugins.hparams.summary.session_end_pb would need TensorFlow.
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status_name)),
        version=metadata.PLUGIN_DATA_VERSION,
    )
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=SummaryMetadata(plugin_data=plugin))])


def experiment_summary(domains: Mapping[str, Mapping[str, Any]], metric_tags: Sequence[str]):
    """The HParams experiment (the table's columns) with a declared domain per hyperparameter.

    ``domains``: ``{name: {"low": a, "high": b, "log": bool}}`` (an interval) or ``{name: {"values": [...],
    "log": bool}}`` (discrete numbers, strings or bools), in column order: one column per parameter. The HParams
    dashboard has no per-column default scale (every numeric axis opens linear), so a log-searched parameter says
    so in its column's description (shown as the column's tooltip): click "Logarithmic" for that axis in the
    Parallel Coordinates view. TensorBoard keeps one experiment for all runs (the first it finds), so every run of
    a study writes this same one."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    infos = []
    for name, domain in domains.items():
        info = api_pb2.HParamInfo(name=name, display_name=name)
        if domain.get("log"):
            info.description = ("searched on a log scale: choose Logarithmic for this axis in Parallel "
                                "Coordinates (TensorBoard opens every axis linear)")
        if "values" not in domain:
            info.type = api_pb2.DATA_TYPE_FLOAT64
            info.domain_interval.CopyFrom(api_pb2.Interval(min_value=float(domain["low"]),
                                                           max_value=float(domain["high"])))
        else:
            values = [_hparam_value(v) for v in domain["values"]]
            if all(isinstance(v, (int, float)) for v in values):
                info.type = api_pb2.DATA_TYPE_FLOAT64
                info.domain_discrete.extend([float(v) for v in values])
            else:
                info.type = api_pb2.DATA_TYPE_STRING
                info.domain_discrete.extend([str(v) for v in values])
        infos.append(info)
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=[
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=tag) for tag in metric_tags])
    content = plugin_data_pb2.HParamsPluginData(experiment=experiment, version=metadata.PLUGIN_DATA_VERSION)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    return Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=SummaryMetadata(plugin_data=plugin))])


def write_hparams_session(writer: Any, hparams: Mapping[str, Any], *, metric_tags: Sequence[str],
                          domains: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Experiment and session-start summaries into ``writer``'s own event file (not a sub-run)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    values = {name: _hparam_value(value) for name, value in sorted(hparams.items())}
    values = {name: value for name, value in values.items() if value is not None}
    metric_tags = tuple(dict.fromkeys(percent_tag(tag) or tag for tag in metric_tags))
    experiment, session_start, _success_end = hparams_summaries(values, {tag: 0.0 for tag in metric_tags})
    if domains:
        experiment = experiment_summary(domains, metric_tags)
    file_writer = writer._get_file_writer()
    file_writer.add_summary(experiment)
    file_writer.add_summary(session_start)


class TensorBoardReporter:
    """Engine reporter writing TensorBoard events under ``logdir``.

    Args:
        logdir: the run's TensorBoard directory (``<run_dir>/tb``).
        hparams: the searched hyperparameters of this run (flat ``{name: value}``); when given, the run is an
            HParams session whose columns are these names and ``metric_tags``. ``None``: no HParams entry.
        metric_tags: scalar tags shown as metric columns (default: :func:`default_metric_tags` of the run).
        panel_every: write the prediction panels at every ``panel_every``-th evaluation.
        hparam_domains: the searched space as HParams domains (see :func:`experiment_summary`): the table's
            columns are then these names (one per parameter; a log domain says so in its description) with
            their ranges.
    """

    def __init__(self, logdir: str | Path, *, hparams: Mapping[str, Any] | None = None,
                 metric_tags: Sequence[str] = (), panel_every: int = 1,
                 hparam_domains: Mapping[str, Mapping[str, Any]] | None = None):
        if panel_every < 1:
            raise ValueError(f"TensorBoardReporter: panel_every = {panel_every!r} is not valid; allowed: >= 1")
        self.logdir = Path(logdir)
        self.hparams = None if hparams is None else dict(hparams)
        self.metric_tags = tuple(metric_tags)
        self.panel_every = panel_every
        self.hparam_domains = dict(hparam_domains) if hparam_domains else None
        self._writer = None
        self._evaluations = 0
        self._last_iteration = 0
        self._num_classes: int | None = None

    # -- hooks -------------------------------------------------------------------------------------------
    def on_start(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._num_classes = getattr(trainer, "num_classes", None)
        cfg = getattr(trainer, "cfg", None)
        self.logdir.mkdir(parents=True, exist_ok=True)
        resumed_at = int(getattr(trainer, "iteration", 0) or 0)
        # A resumed run restarts after its checkpoint: purge_step makes TensorBoard drop what the interrupted
        # run logged after that iteration (work that was lost), as metrics.jsonl does.
        self._writer = SummaryWriter(str(self.logdir), purge_step=resumed_at + 1 if resumed_at > 0 else None)
        self._last_iteration = resumed_at
        if cfg is not None:
            self._writer.add_text("run/config", _config_markdown(cfg), 0)
        write_layout(self._writer, self._num_classes)
        if self.hparams is not None:
            self._write_session_start(cfg)
        self._writer.flush()

    def on_log(self, iteration: int, scalars: Mapping[str, Any]) -> None:
        self._last_iteration = int(iteration)
        self._add_scalars(iteration, scalars)

    def on_evaluate(self, iteration: int, metrics: Mapping[str, Any], trainer: Any) -> None:
        self._last_iteration = int(iteration)
        self._add_scalars(iteration, metrics)
        self._evaluations += 1
        if (self._evaluations - 1) % self.panel_every == 0:
            self._add_panels(iteration, trainer)
        # A scheduler may kill the trial at any report: what was evaluated must be on disk already.
        self._writer.flush()

    def on_checkpoint(self, iteration: int, path: Any) -> None:
        if self._writer is not None:
            self._writer.flush()

    def on_end(self, result: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        status = str(result.get("status", "completed"))
        if status not in STATUS_BY_RESULT:
            status = "failed"
        iteration = result.get("iterations", self._last_iteration)
        total = result.get("total_iterations")
        if status == "stopped" and isinstance(total, int) and isinstance(iteration, int) and iteration >= total:
            # Ray stops a trial at its last report even when that report ends a full run: not an early stop.
            status = "completed"
        if self.hparams is not None:
            write_session_end(self._writer, status, iteration=int(iteration))
        else:
            self._writer.add_text(STATUS_TAG, status, int(iteration))
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- helpers -----------------------------------------------------------------------------------------
    def _write_session_start(self, cfg: Any) -> None:
        metric_tags = self.metric_tags
        if not metric_tags:
            selection = getattr(getattr(cfg, "eval", None), "selection", "val")
            metric_tags = default_metric_tags(self._num_classes or 19, selection)
        metric_tags = tuple(dict.fromkeys(metric_tags + (PRUNED_TAG,)))
        write_hparams_session(self._writer, self.hparams, metric_tags=metric_tags, domains=self.hparam_domains)

    def _add_scalars(self, iteration: int, values: Mapping[str, Any]) -> None:
        for tag, value in values.items():
            if _is_number(value):
                # Non-finite values are kept: a diverging loss must be visible as such. IoUs in percent, as
                # everywhere else (the unit is in the tag).
                shown = percent_tag(tag)
                self._writer.add_scalar(shown or tag, 100 * float(value) if shown else float(value), int(iteration))

    def _add_panels(self, iteration: int, trainer: Any) -> None:
        samples = list(getattr(trainer, "last_eval_samples", None) or ())
        num_classes = getattr(trainer, "num_classes", None) or self._num_classes
        if not samples or num_classes is None:
            return
        for index, sample in enumerate(samples):
            panel = prediction_panel(sample["image"], sample["label"], sample["pred"], num_classes=num_classes)
            tag = "val/panel" if len(samples) == 1 else f"val/panel/{index}"
            self._writer.add_image(tag, panel, int(iteration), dataformats="HWC")


def _config_markdown(cfg: Any) -> str:
    # TensorBoard's text plugin renders markdown: a code block keeps the JSON readable.
    try:
        from trainables.config import to_dict

        data = to_dict(cfg)
    except Exception:  # not a dataclass config (a test double): its repr is still useful
        data = repr(cfg)
    return "```\n" + json.dumps(data, indent=2, sort_keys=True, default=str) + "\n```"

"""Checks made before Ray starts any trial: datasets present, the cluster can host one trial, storage shared,
checkpoints fit on the disk (the watchdog for trials that never start is in :mod:`study.run.autoscale`).

Each check raises :class:`PreflightError` with what is wrong and what to do; a study that would otherwise
hang PENDING forever (a GPU request on a CPU-only cluster), fail on a worker node (a storage path only the head
can see) or fail in every trial (a missing dataset) never launches.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from trainables.config import TrainConfig

__all__ = ["PreflightError", "PendingTimeout", "NodeInfo", "check_datasets", "cluster_nodes",
           "check_cluster_resources", "is_uri", "check_storage_shared", "probe_storage_visibility", "private_tmpdir",
           "describe_nodes", "CheckpointEstimate", "estimate_checkpoint_bytes", "check_checkpoint_space"]


class PreflightError(ValueError):
    """The study cannot run as configured on this cluster/filesystem; nothing was launched."""


class PendingTimeout(PreflightError):
    """No trial could start within ``resources.pending_timeout``: the cluster lacks (and did not add) a resource."""


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    cpu: float
    gpu: float


def check_datasets(train: TrainConfig, *, what: str = "train") -> None:
    """Every dataset root (and weight file) of a run config exists; relative paths were made absolute earlier."""
    domains = (("source", train.data.source), ("target", train.data.target), ("val", train.data.val))
    for key, domain in domains:
        if domain is None:
            continue
        root = Path(domain.root)
        if not root.is_dir():
            hint = " (`dastudy data synth` or `dastudy demo` creates the synthetic benchmark)" \
                if "synth" in str(root) else " (see `dastudy data --help` for the expected layout)"
            raise PreflightError(f"{what}.data.{key}.root = {root}: no such dataset directory{hint}")
    for key in ("init_checkpoint",):
        value = getattr(train.model, key)
        if value and not Path(value).is_file():
            raise PreflightError(f"{what}.model.{key} = {value}: no such file")


def cluster_nodes() -> list[NodeInfo]:
    """Alive nodes of the connected Ray cluster with their CPU/GPU totals."""
    import ray

    out = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        out.append(NodeInfo(node_id=node["NodeID"], address=node.get("NodeManagerAddress", "?"),
                            cpu=float(res.get("CPU", 0)), gpu=float(res.get("GPU", 0))))
    return out


def check_cluster_resources(*, cpu: float, gpu: float, nodes: Sequence[NodeInfo], autoscaling: bool = False) -> int:
    """Refuse a per-trial request no single node can satisfy; returns how many trials fit at once now.

    ``autoscaling``: the cluster adds nodes on demand (KubeRay's autoscaler, ``ray up`` with worker types, GPU
    workers from zero replicas); a request no live node can host is accepted (0 slots now) and the caller asks the
    autoscaler for it (:func:`request_from_autoscaler`); :class:`PendingWatchdog` ends the study if it never comes.
    """
    if not nodes:
        raise PreflightError("the Ray cluster has no alive node")
    total_gpu = sum(n.gpu for n in nodes)
    summary = ", ".join(f"{n.address}: {n.cpu:g} CPU, {n.gpu:g} GPU" for n in nodes)
    if autoscaling and not any(n.cpu >= cpu and n.gpu >= gpu for n in nodes):
        return 0
    if gpu > 0 and total_gpu == 0:
        raise PreflightError(f"resources.gpu = {gpu:g} but the cluster has no GPU ({summary}); the trials would "
                             "stay PENDING forever. Use resources.gpu = 0 here, or --address a cluster with GPUs "
                             "(resources.autoscaling = true where the cluster adds GPU workers on demand)")
    fitting = [n for n in nodes if n.cpu >= cpu and n.gpu >= gpu]
    if not fitting:
        raise PreflightError(f"no node can host one trial of resources cpu = {cpu:g}, gpu = {gpu:g} "
                             f"(nodes: {summary}); lower the request")
    per_node = []
    for n in fitting:
        slots = int(n.cpu // cpu) if cpu else 10 ** 6
        if gpu:
            slots = min(slots, int(round(n.gpu / gpu, 6)))
        per_node.append(slots)
    return sum(per_node)


def is_uri(storage: str) -> bool:
    """``s3://bucket/x``, ``gs://...``: an object store every node reaches (``file://`` is a local path)."""
    return "://" in storage and not storage.startswith("file://")


def probe_storage_visibility(storage: str, nodes: Sequence[NodeInfo]) -> dict[str, bool]:
    """Write a marker under ``storage`` here and ask one task pinned to each node whether it sees it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    Path(storage).mkdir(parents=True, exist_ok=True)
    marker = Path(storage) / f".dastudy-shared-check-{uuid.uuid4().hex[:12]}"
    marker.write_text("dastudy storage check\n")
    try:
        @ray.remote(num_cpus=0)
        def sees(path: str) -> bool:
            return os.path.exists(path)

        refs = {n.node_id: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False))
                .remote(str(marker)) for n in nodes}
        return {node_id: bool(ray.get(ref, timeout=120)) for node_id, ref in refs.items()}
    finally:
        marker.unlink(missing_ok=True)


def check_storage_shared(storage: str, nodes: Sequence[NodeInfo], *,
                         probe: Callable[[str, Sequence[NodeInfo]], dict[str, bool]] = probe_storage_visibility
                         ) -> None:
    """With more than one node, trials write their checkpoints and run directories into the storage path from
    wherever they run: a local path must be visible on every node (NFS, or all nodes on one host), or the
    storage must be an object-store URI. Ray itself only finds out when the first checkpoint is reported."""
    if len(nodes) <= 1 or is_uri(storage):
        return
    path = storage[len("file://"):] if storage.startswith("file://") else storage
    visible = probe(path, nodes)
    blind = [n for n in nodes if not visible.get(n.node_id, False)]
    if blind:
        where = ", ".join(f"{n.address} ({n.node_id[:8]})" for n in blind)
        raise PreflightError(
            f"storage {storage} is not shared: {len(blind)} of {len(nodes)} nodes cannot see it ({where}). On a "
            "multi-node cluster the study storage must be a network filesystem mounted at the same path on every "
            "node, or an object-store URI (--storage s3://bucket/studies); see docs/cluster.md")


def private_tmpdir() -> str:
    """A short private directory for Ray's session files (unix socket paths are limited to ~107 characters)."""
    base = Path(tempfile.gettempdir()) / f"dastudy-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix="r", dir=base)


def local_node(num_cpus: int | None = None) -> NodeInfo:
    """This machine as the local Ray that ``study run`` starts would see it: ``num_cpus`` (``--num-cpus``) or the
    CPUs this process may run on, and the GPUs CUDA shows (``CUDA_VISIBLE_DEVICES`` honoured, as Ray's own
    detection does)."""
    import os

    import torch

    try:
        cpus = num_cpus or len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = num_cpus or os.cpu_count() or 1
    return NodeInfo(node_id="local", address="this machine", cpu=float(cpus), gpu=float(torch.cuda.device_count()))


def describe_nodes(nodes: Sequence[NodeInfo]) -> str:
    cpus, gpus = sum(n.cpu for n in nodes), sum(n.gpu for n in nodes)
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus:g} CPU, {gpus:g} GPU"



# ---------------------------------------------------------------------------------------------------------
# checkpoint volume


@dataclass(frozen=True)
class CheckpointEstimate:
    """Checkpoint disk use of a study: ``per_checkpoint`` bytes (the full training state), ``kept`` checkpoints
    per trial at most, ``trials`` trials whose checkpoints stay."""

    per_checkpoint: int
    kept: int
    trials: int
    note: str

    @property
    def total(self) -> int:
        return self.per_checkpoint * self.kept * self.trials

    def describe(self) -> str:
        return (f"checkpoints: about {_size(self.total)} at most ({_size(self.per_checkpoint)} per checkpoint x "
                f"{self.kept} kept per trial x {self.trials} trials; {self.note})")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def estimate_checkpoint_bytes(*, state_bytes: int, kept: int, num_samples: int, keep_pruned: bool,
                              max_t: int, grace_period: int, reduction_factor: float, asha: bool) -> CheckpointEstimate:
    """The most checkpoint bytes a study leaves. Completed trials keep ``kept`` checkpoints (Ray's
    ``num_to_keep``: the best ones plus the latest); with ``keep_pruned = false`` a PRUNED or FAILED trial's
    checkpoints are deleted when it ends, and under ASHA only about ``num_samples / reduction_factor ** rungs``
    trials reach ``max_t`` (the rest are pruned at a rung); while they run, at most ``max_concurrent_trials`` more
    trials hold checkpoints (not counted: a small share of a large study)."""
    trials = num_samples
    note = "every trial keeps its checkpoints"
    if not keep_pruned and asha:
        rungs = 0
        milestone = grace_period
        while milestone * reduction_factor <= max_t:
            milestone *= reduction_factor
            rungs += 1
        trials = max(1, math.ceil(num_samples / reduction_factor ** rungs))
        note = f"PRUNED/FAILED trials' checkpoints removed; ASHA lets ~{trials} of {num_samples} trials finish"
    elif not keep_pruned:
        note = "FAILED trials' checkpoints removed; FIFO runs every trial to the end"
    return CheckpointEstimate(per_checkpoint=int(state_bytes), kept=kept, trials=trials, note=note)


def check_checkpoint_space(estimate: CheckpointEstimate, path: str | Path, *, margin: float = 1.1) -> None:
    """Refuse a study whose checkpoints cannot fit on the local filesystem of ``path`` (with a 10% margin)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if estimate.total * margin > free:
        raise PreflightError(
            f"{estimate.describe()} but {probe} has {_size(free)} free: lower num_samples or checkpoints_to_keep, "
            "set keep_pruned_checkpoints = false, or use --storage on a larger filesystem or an object store")

"""Checks before any trial starts: cluster resources, shared storage, datasets; the GPU-memory estimate."""
from __future__ import annotations

import dataclasses

import pytest

from study.resources import (NodeInfo, PreflightError, check_cluster_resources, check_datasets,
                             check_storage_shared, is_uri)
from study_helpers import tiny_train_table
from trainables.config import TrainConfig, from_dict
from trainables.tune import estimate_gpu_memory_gib, gpu_share

CPU_NODE = NodeInfo("a" * 56, "10.0.0.1", cpu=8, gpu=0)
GPU_NODE = NodeInfo("b" * 56, "10.0.0.2", cpu=16, gpu=4)


def test_gpu_request_on_a_cpu_only_cluster_fails_fast():
    with pytest.raises(PreflightError, match="no GPU .* PENDING forever"):
        check_cluster_resources(cpu=1, gpu=0.25, nodes=[CPU_NODE])


def test_request_no_node_can_host_is_refused_and_packing_is_counted():
    with pytest.raises(PreflightError, match="no node can host one trial"):
        check_cluster_resources(cpu=32, gpu=0, nodes=[CPU_NODE, GPU_NODE])
    # 4 GPUs at 0.25 -> 16 slots, capped by 16 CPUs at 1 each; the CPU node hosts no GPU trial.
    assert check_cluster_resources(cpu=1, gpu=0.25, nodes=[CPU_NODE, GPU_NODE]) == 16
    assert check_cluster_resources(cpu=2, gpu=0.25, nodes=[GPU_NODE]) == 8
    assert check_cluster_resources(cpu=1, gpu=0, nodes=[CPU_NODE, GPU_NODE]) == 24


def test_unshared_storage_on_a_multi_node_cluster_is_refused():
    calls = []

    def probe(path, nodes):
        calls.append(path)
        return {CPU_NODE.node_id: True, GPU_NODE.node_id: False}  # the worker cannot see the head's path

    with pytest.raises(PreflightError, match=r"not shared: 1 of 2 nodes cannot see it \(10.0.0.2"):
        check_storage_shared("/home/me/studies", [CPU_NODE, GPU_NODE], probe=probe)
    assert calls == ["/home/me/studies"]
    # Shared (NFS) path: accepted; one node or an object store: nothing to probe.
    check_storage_shared("/mnt/nfs/studies", [CPU_NODE, GPU_NODE], probe=lambda p, n: {x.node_id: True for x in n})
    check_storage_shared("/home/me/studies", [CPU_NODE], probe=lambda p, n: pytest.fail("probed one node"))
    check_storage_shared("s3://bucket/studies", [CPU_NODE, GPU_NODE], probe=lambda p, n: pytest.fail("probed s3"))
    assert is_uri("gs://b/x") and not is_uri("file:///tmp/x") and not is_uri("studies")


def test_missing_dataset_root_is_named(tmp_path, tiny_benchmark):
    table = tiny_train_table(tiny_benchmark)
    check_datasets(from_dict(TrainConfig, table))
    table["data"]["val"]["root"] = str(tmp_path / "nope")
    with pytest.raises(PreflightError, match=r"train.data.val.root = .*nope: no such dataset directory"):
        check_datasets(from_dict(TrainConfig, table))


def _cfg(**changes) -> TrainConfig:
    cfg = TrainConfig()  # AdaptSegNet: source 1280x720 + target 1024x512, batch 1
    for section, values in changes.items():
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})
    return cfg


def test_gpu_memory_estimate_reproduces_the_measured_points_and_scales():
    # The four H100 measurements (environment.md) are reproduced exactly by the two-point lines.
    assert estimate_gpu_memory_gib(_cfg(runtime={"amp": "bf16"})) == pytest.approx(4.0)
    assert estimate_gpu_memory_gib(_cfg(runtime={"amp": "bf16"}, optim={"batch_size": 4})) == pytest.approx(14.4)
    assert estimate_gpu_memory_gib(_cfg()) == pytest.approx(7.0)
    assert estimate_gpu_memory_gib(_cfg(optim={"batch_size": 4})) == pytest.approx(26.9)
    # Batch 2 in bf16: fixed 0.5333 + 2 * 3.4667 = 7.4667 GiB (hand-computed).
    assert estimate_gpu_memory_gib(_cfg(runtime={"amp": "bf16"}, optim={"batch_size": 2})) == pytest.approx(7.4667,
                                                                                                          abs=1e-4)
    # Source-only counts the source image only: 0.3667 + 6.6333 * 921600 / 1445888 = 4.5948 GiB.
    assert estimate_gpu_memory_gib(_cfg(adapt={"mode": "source_only"})) == pytest.approx(4.5948, abs=1e-4)
    # Half the pixels per domain, fp32: 0.3667 + 6.6333 / 2 = 3.6833 GiB.
    half = _cfg(data={"source": dataclasses.replace(TrainConfig().data.source, size=(640, 720)),
                      "target": dataclasses.replace(TrainConfig().data.target, size=(512, 512))})
    assert estimate_gpu_memory_gib(half) == pytest.approx(3.6833, abs=1e-4)


def test_gpu_share_is_a_no_op_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu_share(_cfg(), 0.25) is None

"""A two-node Ray cluster (``ray.cluster_utils.Cluster``, both nodes on this host): the storage check probes every
node, and the trials of a study run on both nodes."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from study.config.study_config import study_from_dict
from study_helpers import TEST_RAY_ENV, study_table

ray = pytest.importorskip("ray")


@pytest.fixture
def two_nodes(monkeypatch):
    from ray.cluster_utils import Cluster

    for key, value in TEST_RAY_ENV.items():
        monkeypatch.setenv(key, value)
    # A private Ray temp root: ``Cluster`` writes the head's address to ``<RAY_TMPDIR>/ray/ray_current_cluster``
    # without creating that folder, so on a machine where Ray never ran (no /tmp/ray) it failed with
    # FileNotFoundError, and elsewhere it read and overwrote other jobs' /tmp/ray. Short path (under /tmp, not
    # $TMPDIR): Ray's Unix socket paths must stay under ~107 characters.
    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    os.makedirs(os.path.join(tmp, "ray"))
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": tmp,
                                      "object_store_memory": 100 * 1024 ** 2})
    # The address file went to the private root, not to a shared /tmp/ray.
    assert os.path.isfile(os.path.join(tmp, "ray", "ray_current_cluster"))
    cluster.add_node(num_cpus=1, object_store_memory=100 * 1024 ** 2)
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_trials_run_on_both_nodes(two_nodes, tiny_benchmark, tmp_path):
    from study.config.resources import cluster_nodes, probe_storage_visibility
    from study.run.tuner import run_study
    from trainables.tune import probe_trial

    nodes = cluster_nodes()
    assert len(nodes) == 2
    # The real storage probe: one task pinned to each node looks for a marker written here (same host: shared).
    assert probe_storage_visibility(str(tmp_path / "studies"), nodes) == {n.node_id: True for n in nodes}

    table = study_table(tiny_benchmark, name="two-nodes", num_samples=4, max_concurrent_trials=2,
                        scheduler={"kind": "fifo"}, resources={"cpu": 1, "gpu": 0})
    results, location = run_study(study_from_dict(table, source="test"), storage=str(tmp_path / "studies"),
                                  trainable=probe_trial)
    assert results.num_errors == 0 and len(results) == 4
    probes = [json.loads(p.read_text()) for p in location.home.glob("trial_*/probe.json")]
    assert len(probes) == 4
    assert {p["node_id"] for p in probes} == {n.node_id for n in nodes}
    assert not list(location.home.glob(".dastudy-shared-check-*"))  # the probe's marker is removed
    assert os.path.isdir(location.home)

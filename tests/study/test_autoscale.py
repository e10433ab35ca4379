"""Autoscaling-aware launch: a request no live node can host is refused on a fixed cluster, accepted (and asked
of the autoscaler) with ``resources.autoscaling = true``, and a study whose trials never start ends after
``resources.pending_timeout`` with a message naming the missing resource instead of waiting for ever."""
from __future__ import annotations

import shutil
import tempfile
import time

import pytest

from study.config.study_config import study_from_dict
from study_helpers import TEST_RAY_ENV, study_table

ray = pytest.importorskip("ray")


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_clock_runs_only_while_nothing_runs(monkeypatch):
    from study.run import autoscale

    clock = _Clock()
    dog = autoscale.PendingWatchdog(timeout_s=10, request={"CPU": 1.0, "GPU": 1.0}, clock=clock)
    monkeypatch.setattr(dog, "describe", lambda waited, name, missing: f"waited {waited:.0f} for {name}")
    missing = ["GPU"]
    monkeypatch.setattr(dog, "missing", lambda: list(missing))
    dog.observe(["PENDING"], "trial_a")
    clock.now = 9
    dog.observe(["PENDING"], "trial_a")
    assert dog.message is None
    dog.observe(["RUNNING", "PENDING"], "trial_a")  # queued behind a running trial: progress, the clock resets
    clock.now = 30
    dog.observe(["RUNNING", "PENDING"], "trial_a")
    assert dog.message is None and not dog.stopper().stop_all()
    dog.observe(["TERMINATED", "PENDING"], "trial_b")
    clock.now = 39
    dog.observe(["TERMINATED", "PENDING"], "trial_b")
    assert dog.message is None
    missing.clear()  # at the deadline the cluster has a GPU: the trial waits its turn, the clock restarts
    clock.now = 40
    dog.observe(["TERMINATED", "PENDING"], "trial_b")
    assert dog.message is None
    missing.append("GPU")  # the node went away
    clock.now = 49
    dog.observe(["TERMINATED", "PENDING"], "trial_b")
    assert dog.message is None
    clock.now = 50
    dog.observe(["TERMINATED", "PENDING"], "trial_b")
    assert dog.message == "waited 10 for trial_b" and dog.stopper().stop_all()
    with pytest.raises(autoscale.PendingTimeout, match="waited 10 for trial_b"):
        autoscale.raise_if_pending_timeout()
    autoscale.raise_if_pending_timeout()  # reported once


class _Sdk:
    """Stands in for ``ray.autoscaler.sdk.request_resources``: records each request (the latest replaces the one
    before, as in Ray)."""

    def __init__(self, fail_on_release: bool = False):
        self.calls: list[list[dict]] = []
        self.fail_on_release = fail_on_release

    def __call__(self, num_cpus=None, bundles=None):
        assert num_cpus is None
        if not bundles and self.fail_on_release:
            raise ConnectionError("GCS gone")
        self.calls.append(list(bundles))

    @property
    def outstanding(self) -> list[dict]:
        return self.calls[-1] if self.calls else []


@pytest.fixture
def sdk(monkeypatch):
    import ray.autoscaler.sdk

    from study.run import autoscale

    fake = _Sdk()
    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", fake)
    monkeypatch.setattr(autoscale, "_REQUESTED", [])
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # ray_session uses "the running Ray": starts none
    return fake


class _Failed(Exception):
    pass


@pytest.mark.parametrize("ending", ["done", "exception", "ctrl-c"])
def test_the_autoscaler_request_is_withdrawn_when_the_session_ends(sdk, ending):
    """Issue 20, item 4: ``request_resources`` persists until the next request, so the GPU nodes of a long-lived
    cluster stayed up after the study. The driver's Ray session withdraws it however the study ends."""
    from study.run.autoscale import request_from_autoscaler
    from study.run.tuner import ray_session

    raised = {"done": None, "exception": _Failed, "ctrl-c": KeyboardInterrupt}[ending]
    try:
        with ray_session(address="auto"):
            assert request_from_autoscaler(cpu=4, gpu=0.25, trials=2) == {"CPU": 4.0, "GPU": 0.25}
            assert sdk.outstanding == [{"CPU": 4.0, "GPU": 0.25}] * 2  # asked for while the study runs
            if raised is not None:
                raise raised()
    except (_Failed, KeyboardInterrupt) as err:
        assert type(err) is raised  # the study's own exception, not one of the release
    assert sdk.calls == [[{"CPU": 4.0, "GPU": 0.25}] * 2, []] and sdk.outstanding == []


def test_a_session_that_connects_withdraws_the_request_before_it_disconnects(sdk, monkeypatch):
    """When the driver itself connects (``ray.init``), the request is withdrawn while it still can be, before
    ``ray.shutdown``, also when the study raised."""
    from study.run.autoscale import request_from_autoscaler
    from study.run.tuner import ray_session

    events: list[str] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: events.append("init"))
    monkeypatch.setattr(ray, "shutdown", lambda: events.append(f"shutdown, request {sdk.outstanding}"))
    with pytest.raises(_Failed):
        with ray_session(address="10.0.0.1:6379"):
            request_from_autoscaler(cpu=2, gpu=1, trials=1)
            raise _Failed()
    assert events == ["init", "shutdown, request []"]


def test_a_session_that_asked_nothing_releases_nothing_and_a_failed_release_hides_nothing(sdk, capsys):
    from study.run.autoscale import release_autoscaler_request, request_from_autoscaler
    from study.run.tuner import ray_session

    with ray_session(address="auto"):
        pass
    assert sdk.calls == []  # another driver's request on the same cluster is left alone
    sdk.fail_on_release = True
    with pytest.raises(_Failed):
        with ray_session(address="auto"):
            request_from_autoscaler(cpu=1, gpu=1, trials=1)
            raise _Failed()
    assert "could not withdraw the autoscaler request for {'CPU': 1.0, 'GPU': 1.0}" in capsys.readouterr().err
    assert release_autoscaler_request() is False  # reported once, not retried at every later session


def test_fixed_cluster_refuses_autoscaling_cluster_accepts():
    from study.config.resources import NodeInfo, PreflightError, check_cluster_resources

    nodes = [NodeInfo(node_id="a", address="10.0.0.1", cpu=8, gpu=0)]
    with pytest.raises(PreflightError, match="no GPU"):
        check_cluster_resources(cpu=1, gpu=1, nodes=nodes)
    assert check_cluster_resources(cpu=1, gpu=1, nodes=nodes, autoscaling=True) == 0
    assert check_cluster_resources(cpu=1, gpu=0, nodes=nodes, autoscaling=True) == 8


@pytest.fixture
def cpu_only_ray(monkeypatch):
    for key, value in TEST_RAY_ENV.items():
        monkeypatch.setenv(key, value)
    tmp = tempfile.mkdtemp(prefix="ra", dir="/tmp")  # short: unix socket paths are limited to ~107 characters
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False, object_store_memory=100 * 1024 ** 2, _temp_dir=tmp)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def _request_on_the_cluster() -> list[dict]:
    """The autoscaler request the cluster holds now, read back where Ray 2.60 stores it (v1 autoscaler: the GCS
    key-value store; v2: the GCS's cluster resource constraints)."""
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    if is_autoscaler_v2():
        from ray.autoscaler.v2.sdk import get_cluster_resource_state
        from ray.experimental.internal_kv import internal_kv_get_gcs_client

        state = get_cluster_resource_state(internal_kv_get_gcs_client())
        return [dict(b.resources_bundle) for c in state.cluster_resource_constraints
                for r in c.resource_requests for b in [r.request] * r.count]
    import json

    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    return json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL) or b"[]")


@pytest.mark.slow
def test_the_request_reaches_a_real_cluster_and_is_withdrawn_there(cpu_only_ray):
    """The same through Ray's own request_resources on a running Ray (about 10 s: Ray starts): the request is on
    the cluster while the session lasts, and gone after a study that raised."""
    from study.run.autoscale import request_from_autoscaler
    from study.run.tuner import ray_session

    assert _request_on_the_cluster() == []
    with pytest.raises(_Failed):
        with ray_session(address="auto"):
            request_from_autoscaler(cpu=1, gpu=1, trials=2)
            assert _request_on_the_cluster() == [{"CPU": 1.0, "GPU": 1.0}] * 2
            raise _Failed()
    assert _request_on_the_cluster() == []


def _gpu_study(benchmark, **overrides):
    table = study_table(benchmark, name="needs-gpu", num_samples=2, resources={"cpu": 1, "gpu": 1, **overrides})
    table["train"]["runtime"]["device"] = "auto"
    return study_from_dict(table, source="test")


@pytest.mark.slow
def test_a_gpu_nobody_provides_ends_the_study_at_the_deadline(cpu_only_ray, tiny_benchmark, tmp_path, capsys):
    """About 20-40 s: Ray starts, the trial waits 3 s PENDING, the study ends with the deadline message; a resume
    on a Ray with a GPU runs the trials that waited."""
    from study.run.autoscale import PendingTimeout
    from study.config.resources import PreflightError
    from study.run.tuner import run_study
    from trainables.tune import probe_trial

    with pytest.raises(PreflightError, match="no GPU"):  # a fixed cluster: refused before launch
        run_study(_gpu_study(tiny_benchmark), storage=str(tmp_path / "fixed"), trainable=probe_trial)
    assert not (tmp_path / "fixed" / "needs-gpu").exists()

    started = time.monotonic()
    with pytest.raises(PendingTimeout, match=r"pending_timeout = 3\).*no node provides GPU") as err:
        run_study(_gpu_study(tiny_benchmark, autoscaling=True, pending_timeout=3),
                  storage=str(tmp_path / "auto"), trainable=probe_trial)
    assert time.monotonic() - started < 120
    assert "needs CPU = 1, GPU = 1" in str(err.value)
    assert "asked the autoscaler" in capsys.readouterr().out
    home = tmp_path / "auto" / "needs-gpu"
    assert (home / "study.toml").is_file() and not list(home.glob("trial_*/probe.json"))  # nothing ran

    # The message says "then `dastudy study resume`": once a GPU exists, the resume runs the trials that waited
    # (Ray's stop-all had recorded them TERMINATED without a result, and a resume never ran them).
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from study.run.tuner import resume_study

    ray.shutdown()
    gpu_tmp = tempfile.mkdtemp(prefix="rg", dir="/tmp")
    try:  # GPUs as a Ray resource (the probe trials touch no device); two, so that both waiting probes start
        # together (a probe waits up to 60 s for the study's max_concurrent_trials probes to have started)
        ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False, object_store_memory=100 * 1024 ** 2, _temp_dir=gpu_tmp)
        resume_study(home, trainable=probe_trial)
    finally:
        ray.shutdown()
        shutil.rmtree(gpu_tmp, ignore_errors=True)
    assert len(list(home.glob("trial_*/probe.json"))) == 2
    trials = optuna.load_study(study_name="needs-gpu", storage=JournalStorage(
        JournalFileBackend(str(home / "optuna.journal")))).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]

"""Object storage as a study's home, against a real S3-API server (moto's standalone server, started here on
127.0.0.1 with its own port and stopped by PID; nothing reaches a real cloud): a study run with
``--storage s3://...`` has everything that defines it in the bucket, and after its driver is killed it resumes
from the bucket alone into an empty local folder on a "new head"."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from moto_server import moto_server
from study_helpers import TEST_RAY_ENV, kill_tree, study_table, write_study_file

ray = pytest.importorskip("ray")
pytest.importorskip("moto", reason="moto[server] is missing: `make test` installs it (pip extra 'test')")
boto3 = pytest.importorskip("boto3", reason="boto3 is missing: `make test` installs it with moto[server]")

BUCKET = "dastudy-test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """moto's S3 server on a free local port (tests/study/moto_server.py); the standard AWS variables point
    everything (boto3, pyarrow, Ray, the trials) at it."""
    with moto_server(tmp_path, BUCKET) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        yield boto3.client("s3"), env


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


DRIVER = """
import sys
from study.config.study_config import load_study_config
from study.run.tuner import run_study
from trainables.tune import checkpoint_probe
run_study(load_study_config(sys.argv[1]), storage=sys.argv[2], num_cpus=2, trainable=checkpoint_probe)
"""


@pytest.mark.slow
@pytest.mark.extended
def test_study_in_the_bucket_resumes_on_a_new_head(s3_server, tiny_benchmark, tmp_path, monkeypatch,
                                                   remove_driver_temp_dirs):
    """4 probe trials (6 evaluations, 64 KiB checkpoints), driver killed after the first trial ends, resumed
    from the bucket into an empty folder: measured 160-175 s on the 2 shared cores at load 10-15 (most of it Ray
    start-up, restore and moto under load)."""
    client, aws = s3_server
    name, storage = "s3study", f"s3://{BUCKET}/studies"
    remove_driver_temp_dirs(tmp_path / "head1" / name)  # the killed driver's local home
    table = study_table(tiny_benchmark, name=name, num_samples=4, max_concurrent_trials=2, max_failures=1,
                        checkpoints_to_keep=8, scheduler={"kind": "fifo"},
                        search={"space": "lambda_lr", "sampler": "tpe", "seed": 3, "startup_trials": 2})
    table["train"]["optim"].update(iter_max=12, iter_stop=12)  # 6 evaluations
    study_file = write_study_file(tmp_path / f"{name}.toml", table)
    env = {**os.environ, **TEST_RAY_ENV, **aws, "RAY_TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO),
           "DASTUDY_HOME": str(tmp_path / "head1"), "DASTUDY_PROBE_CKPT_BYTES": str(64 * 1024),
           "DASTUDY_PROBE_SLEEP_S": "0.2", "DASTUDY_PROBE_DIVERGE_BELOW": "0.25",
           "DASTUDY_LEASE_TTL_S": "10"}  # the killed driver's lease (study/state/lease.py): the resume waits it out
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(study_file), storage], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in driver.stdout], daemon=True).start()
    output: list[str] = []
    ended = 0
    deadline = time.time() + 240
    while ended < 1 and time.time() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert driver.poll() is None, "driver ended early:\n" + "".join(output)
            continue
        output.append(line)
        ended += bool(re.search(r"\] #\d+ .* (COMPLETE|FAILED)", line))  # progress lines start with the trial label
    assert ended, "no trial ended in time:\n" + "".join(output)
    time.sleep(1.5)  # one more experiment snapshot
    kill_tree(driver)
    assert driver.returncode == -signal.SIGKILL, "".join(output)

    prefix = f"studies/{name}/"
    before = _keys(client, prefix)
    for key in ("study.toml", "space.json", "provenance.json", "optuna.journal", "tuner.pkl"):
        assert prefix + key in before, (key, before)
    head1 = {p: p.read_bytes() for p in (tmp_path / "head1" / name).rglob("*") if p.is_file()}

    # A new head: an empty local folder, the bucket only.
    from study.run.storage import restore_from_store
    from study.run.tuner import resume_study
    from trainables.tune import checkpoint_probe

    for key, value in env.items():
        if key.startswith(("DASTUDY_", "AWS_")) or key in TEST_RAY_ENV:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("DASTUDY_HOME", str(tmp_path / "head2"))
    home = tmp_path / "head2" / name
    started = time.perf_counter()
    assert restore_from_store(f"{storage}/{name}", None) == home  # `dastudy study resume s3://.../s3study`
    pulled = time.perf_counter() - started
    assert sorted(p.name for p in home.iterdir()) >= ["optuna.journal", "provenance.json", "space.json",
                                                      "study.toml"]
    results, location = resume_study(home, num_cpus=2, trainable=checkpoint_probe, log=print)
    resumed = time.perf_counter() - started
    print(f"resume from object storage: {pulled:.2f} s to download the study files, {resumed:.1f} s to the end "
          f"of the study ({len(results)} trials)")

    # Optuna (the journal downloaded and kept in step) knows every trial once, none RUNNING.
    from study.state.location import load_study_dir
    from study.state.optuna_storage import optuna_storage

    study_cfg, _ = load_study_dir(home)
    trials = optuna.load_study(study_name=name, storage=optuna_storage(study_cfg, home)).trials
    assert len(trials) == 4
    states = sorted(t.state.name for t in trials)
    assert "RUNNING" not in states and "COMPLETE" in states, states
    # The bucket holds everything that defines the study, up to date: journal, rungs-free FIFO, run artifacts,
    # checkpoints of completed trials, failure records of diverged ones (where a retry on another node reads them).
    after = _keys(client, prefix)
    journal = client.get_object(Bucket=BUCKET, Key=prefix + "optuna.journal")["Body"].read()
    assert journal == (home / "optuna.journal").read_bytes()
    by_dir = {t.user_attrs["trial_dir"]: t for t in trials}
    for trial_dir, trial in by_dir.items():
        keys = [k for k in after if k.startswith(f"{prefix}{trial_dir}/")]
        assert f"{prefix}{trial_dir}/run/probe.jsonl" in keys, (trial_dir, keys)  # the trial's working dir synced
        if trial.state.name == "COMPLETE":
            assert any("/checkpoint_" in k for k in keys), (trial_dir, keys)
        if trial.state.name == "FAIL":
            record = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}{trial_dir}/failure.json")["Body"]
                                .read())
            assert record["kind"] == "diverged"
            assert "diverged at evaluation 2" in trial.user_attrs["fail_reason"]  # read from the bucket
    # Nothing was written into the first head's folder after the kill.
    assert {p: p.read_bytes() for p in (tmp_path / "head1" / name).rglob("*") if p.is_file()} == head1


def test_failure_record_is_read_from_the_store_by_a_retry_elsewhere(s3_server, tmp_path):
    """A retry on another node starts in an empty working directory: it must find the first attempt's
    diverged/OOM record in the trial's directory in the store and fail at once instead of training again."""
    from trainables.tune import TrialContext, _final_failure, _write_failure

    context = TrialContext(train={}, study_dir="", metric="val/mIoU16", store=f"s3://{BUCKET}/studies/st")
    first = tmp_path / "node-a" / "trial_1"
    _write_failure(first, "diverged", "diverged at iteration 4: val/mIoU16 = nan", context)
    client, _ = s3_server
    assert json.loads(client.get_object(Bucket=BUCKET, Key="studies/st/trial_1/failure.json")["Body"].read())[
        "kind"] == "diverged"
    elsewhere = tmp_path / "node-b" / "trial_1"  # no local copy there
    assert _final_failure(elsewhere, context) == "diverged at iteration 4: val/mIoU16 = nan"
    assert _final_failure(elsewhere, TrialContext(train={}, study_dir="", metric="m",
                                                  store=f"s3://{BUCKET}/studies/other")) is None


def test_pull_study_never_overwrites_a_local_folder(s3_server, tmp_path):
    from study.run.storage import pull_study, push_study

    src = tmp_path / "src"
    src.mkdir()
    (src / "study.toml").write_text("name = 'x'\n")
    (src / "optuna.journal").write_text("{}\n")
    uri = f"s3://{BUCKET}/studies/x"
    assert sorted(push_study(src, uri)) == ["optuna.journal", "study.toml"]
    assert push_study(src, uri, seen={"study.toml": (src.joinpath("study.toml").stat().st_size,
                                                     src.joinpath("study.toml").stat().st_mtime_ns)}) == [
        "optuna.journal"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        pull_study(uri, busy)
    assert (busy / "mine.txt").read_text() == "keep" and not (busy / "study.toml").exists()
    with pytest.raises(FileNotFoundError, match="no study in the store"):
        pull_study(f"s3://{BUCKET}/studies/nothing", tmp_path / "new")
    home = pull_study(uri, tmp_path / "new")
    assert (home / "study.toml").read_text() == "name = 'x'\n" and (home / "optuna.journal").is_file()


def test_a_checkpoint_above_the_multipart_threshold_goes_up_in_parts_and_comes_back_whole(s3_server, tmp_path):
    """24 MiB (a real DeepLabV2 checkpoint is ~400 MB): pyarrow uploads it as an S3 multipart upload (moto's
    server logs CreateMultipartUpload and the parts), and each node's copy is streamed down byte-identical."""
    import hashlib

    from study.run.storage import publish_checkpoint
    from trainables.objectstore import local_copy

    best = tmp_path / "best.pt"
    best.write_bytes(os.urandom(24 << 20))
    uri = publish_checkpoint(best, f"s3://{BUCKET}/studies/big")
    log = (tmp_path / "moto.log").read_text()
    assert re.search(r"POST /[\w/.-]*studies/big/baseline/init\.pt\?uploads", log), log[-2000:]  # CreateMultipartUpload
    assert log.count("partNumber=") >= 2, log[-2000:]  # more than one part went up
    client, _ = s3_server
    head = client.head_object(Bucket=BUCKET, Key="studies/big/baseline/init.pt")
    assert head["ContentLength"] == 24 << 20 and "-" in head["ETag"]  # a multipart object's ETag: md5-<parts>
    local = Path(local_copy(uri, cache_dir=str(tmp_path / "node-cache")))
    assert hashlib.sha256(local.read_bytes()).digest() == hashlib.sha256(best.read_bytes()).digest()


def test_baseline_checkpoint_reaches_trials_through_the_store(s3_server, tmp_path):
    """With object storage the baseline's checkpoint (every trial's init) is uploaded next to the study and each
    node downloads it once; the trial's config points at that local copy."""
    from study.run.storage import publish_checkpoint
    from trainables.tune import TrialContext, trial_train_config
    from study_helpers import tiny_train_table

    best = tmp_path / "best.pt"
    best.write_bytes(b"weights" * 1000)
    uri = publish_checkpoint(best, f"s3://{BUCKET}/studies/b")
    assert uri == f"s3://{BUCKET}/studies/b/baseline/init.pt"
    client, _ = s3_server
    assert client.get_object(Bucket=BUCKET, Key="studies/b/baseline/init.pt")["Body"].read() == best.read_bytes()
    train = tiny_train_table(tmp_path)
    context = TrialContext(train=train, study_dir="", metric="val/mIoU16", init_checkpoint=uri)
    cfg = trial_train_config(context, {}, trial_name="trial_x")
    local = Path(cfg.model.init_checkpoint)
    assert local.is_file() and local.read_bytes() == best.read_bytes() and local != best
    try:
        fetched = local.stat().st_mtime_ns
        assert trial_train_config(context, {}, trial_name="trial_y").model.init_checkpoint == str(local)
        assert local.stat().st_mtime_ns == fetched  # a second trial on this node: not downloaded again
        best.write_bytes(b"other weights")
        publish_checkpoint(best, f"s3://{BUCKET}/studies/b")  # a new object under the same URI is fetched anew
        again = Path(trial_train_config(context, {}, trial_name="trial_z").model.init_checkpoint)
        assert again != local and again.read_bytes() == b"other weights"
    finally:
        for path in {local, locals().get("again", local)}:
            path.unlink(missing_ok=True)


def test_checkpoint_deletions_in_the_bucket_wait_for_two_landed_snapshots(s3_server):
    """Ray's storage filesystem on an object store (study/state/store_fs.py): a checkpoint directory Ray deletes
    stays in the bucket until two experiment snapshots have been written after the request, so that no snapshot a
    resume reads names a deleted checkpoint (and Ray's forced snapshots can be off); other deletions happen at once,
    and the filesystem pickles without the store's credentials."""
    import pickle

    from study.state.atomic_fs import DEFERRED
    from study.state.store_fs import ray_path, store_filesystem

    client, _ = s3_server
    fs = store_filesystem(f"s3://{BUCKET}/studies")
    root = ray_path(f"s3://{BUCKET}/studies/s")
    assert root == f"{BUCKET}/studies/s"

    def put(key: str, data: bytes = b"x") -> None:
        with fs.open_output_stream(f"{root}/{key}") as out:
            out.write(data)

    def listed() -> set[str]:  # objects, not the empty "trial_a/" markers pyarrow leaves for a parent directory
        return {k.removeprefix("studies/s/") for k in _keys(client, "studies/s/") if not k.endswith("/")}

    put("trial_a/checkpoint_000001/state.pt")
    put("trial_a/checkpoint_000002/state.pt")
    put("trial_a/run/metrics.jsonl")
    put("trial_b/checkpoint_000001/state.pt")
    DEFERRED.enable()
    try:
        fs.delete_dir(f"{root}/trial_a/checkpoint_000001")  # deferred
        fs.delete_dir(f"{root}/trial_a/run")  # not a checkpoint: at once
        assert "trial_a/checkpoint_000001/state.pt" in listed() and "trial_a/run/metrics.jsonl" not in listed()
        put("experiment_state-2026.json", b"{}")  # may have been encoded before the request
        assert "trial_a/checkpoint_000001/state.pt" in listed() and DEFERRED.landed == 1
        fs.delete_dir(f"{root}/trial_b/checkpoint_000001")  # asked after the first landed
        put("experiment_state-2026.json", b"{}")  # written after the first request: that one goes
        assert "trial_a/checkpoint_000001/state.pt" not in listed()
        assert "trial_b/checkpoint_000001/state.pt" in listed() and DEFERRED.pending == 1
        put("trial_a/checkpoint_000003/state.pt", b"y" * 10)  # other objects do not count as snapshots
        assert DEFERRED.landed == 2
        assert DEFERRED.flush() == 1 and "trial_b/checkpoint_000001/state.pt" not in listed()
        assert listed() == {"trial_a/checkpoint_000002/state.pt", "trial_a/checkpoint_000003/state.pt",
                            "experiment_state-2026.json"}
        fs.delete_dir(f"{root}/trial_a/checkpoint_000002")  # not deferring (flushed): at once
        assert "trial_a/checkpoint_000002/state.pt" not in listed()
    finally:
        DEFERRED.disable()
    data = pickle.dumps(fs)
    assert b"testing" not in data and pickle.loads(data).open_input_stream(
        f"{root}/trial_a/checkpoint_000003/state.pt").read() == b"y" * 10


def test_a_failed_trials_reason_is_read_from_the_bucket_for_the_progress_line(s3_server, tmp_path):
    """Ray's trial path in a bucket has no scheme: the progress line read it as a local path, found nothing and said
    "see dastudy-test/studies/.../error.txt"; it reads the reason through the study's storage filesystem now."""
    from types import SimpleNamespace

    from study.run.search import trial_failure
    from study.state.atomic_fs import atomic_local_filesystem
    from study.state.store_fs import store_filesystem

    fs = store_filesystem(f"s3://{BUCKET}/studies")
    with fs.open_output_stream(f"{BUCKET}/studies/st/trial_1/failure.json") as out:
        out.write(json.dumps({"kind": "diverged", "reason": "NaN loss at iteration 7"}).encode())
    trial = SimpleNamespace(storage=SimpleNamespace(trial_fs_path=f"{BUCKET}/studies/st/trial_1",
                                                    storage_filesystem=fs))
    assert trial_failure(trial) == ("NaN loss at iteration 7", f"s3://{BUCKET}/studies/st/trial_1")
    trial.storage.trial_fs_path = f"{BUCKET}/studies/st/trial_2"  # crashed: no record, Ray's error.txt is there
    assert trial_failure(trial) == (None, f"s3://{BUCKET}/studies/st/trial_2")
    local = SimpleNamespace(storage=SimpleNamespace(trial_fs_path=str(tmp_path / "trial_3"),
                                                    storage_filesystem=atomic_local_filesystem()))
    (tmp_path / "trial_3").mkdir()
    (tmp_path / "trial_3" / "failure.json").write_text(json.dumps({"kind": "oom", "reason": "out of memory"}))
    assert trial_failure(local) == ("out of memory", str(tmp_path / "trial_3"))
    assert trial_failure(SimpleNamespace(storage=None)) == (None, "")


def test_read_failure_takes_an_object_store_uri(s3_server):
    from study.run.search import read_failure
    from trainables.objectstore import write_bytes

    write_bytes(f"s3://{BUCKET}/studies/st/trial_9/failure.json", json.dumps({"reason": "OOM at 3"}).encode())
    assert read_failure(f"s3://{BUCKET}/studies/st/trial_9/") == "OOM at 3"
    assert read_failure(f"s3://{BUCKET}/studies/st/trial_8") is None  # no record: None, not an error

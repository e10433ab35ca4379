"""Safety properties read from the code and checked on the pieces that decide them: what may delete or replace
files (each call site reviewed), how files are loaded, what listens on the network, when Ray's token
authentication is turned off, and the test-only fault hook itself."""
from __future__ import annotations

import ast
import inspect
import math
import os
import subprocess
import sys

import pytest

from reliability_helpers import REPO

pytestmark = pytest.mark.timeout(120)

PACKAGES = ("study", "trainables", "data", "models")
DESTRUCTIVE = {"rmtree", "remove", "unlink", "rmdir", "removedirs", "rename", "move", "delete_dir",
               "delete_dir_contents", "delete_file"}

# Every call that deletes, moves or replaces a file, by (module, function, call), with the reason it is safe. A new
# call site fails the test until it is reviewed and listed here (docs/reliability.md, "Data safety").
REVIEWED = {
    ("study/state/atomic_fs.py", "_AtomicFile.discard", "os.unlink"): "its own temporary file",
    ("study/state/atomic_fs.py", "_AtomicFile.close", "os.unlink"): "its own temporary file, after a failed write",
    ("study/state/atomic_fs.py", "_AtomicFile.close", "os.replace"): "its temporary file over the file Ray writes",
    ("study/state/atomic_fs.py", "AtomicLocalHandler.delete_dir", "self._fs.delete_dir"):
        "on Ray's behalf: checkpoint directories Ray wrote in the study (CheckpointConfig.num_to_keep)",
    ("study/state/atomic_fs.py", "AtomicLocalHandler.delete_dir_contents", "self._fs.delete_dir_contents"):
        "on Ray's behalf, inside its own storage directories",
    ("study/state/atomic_fs.py", "AtomicLocalHandler.delete_file", "self._fs.delete_file"):
        "on Ray's behalf, its own files in the study (e.g. the storage check marker)",
    ("study/state/atomic_fs.py", "AtomicLocalHandler.move", "self._fs.move"): "on Ray's behalf, inside the study",
    ("study/state/atomic_fs.py", "DeferredDeletes._delete", "fs.delete_dir"):
        "on Ray's behalf, later: only checkpoint_<n> directories Ray asked AtomicLocalHandler.delete_dir or "
        "DeferringStoreHandler.delete_dir to delete, on that filesystem",
    ("study/state/store_fs.py", "DeferringStoreHandler.delete_dir", "self._fs.delete_dir"):
        "on Ray's behalf: Ray's own directories in the study's bucket prefix (checkpoints are deferred)",
    ("study/state/store_fs.py", "DeferringStoreHandler.delete_dir_contents", "self._fs.delete_dir_contents"):
        "on Ray's behalf, inside its own storage prefix (pyarrow refuses the store's root)",
    ("study/state/store_fs.py", "DeferringStoreHandler.delete_file", "self._fs.delete_file"):
        "on Ray's behalf, its own objects in the study's prefix (e.g. the storage check marker)",
    ("study/state/store_fs.py", "DeferringStoreHandler.move", "self._fs.move"): "on Ray's behalf, inside the study",
    ("study/config/resources.py", "probe_storage_visibility", "marker.unlink"): "the uniquely named marker it wrote",
    ("study/run/search.py", "PersistentASHA._save", "os.replace"): "its temporary file over asha_rungs.json",
    ("study/run/search.py", "StudySearch.save_to_dir", "os.replace"):
        "its mkstemp file over the searcher state in Ray's driver staging directory",
    ("study/run/search.py", "StudySearch.save_to_dir", "os.unlink"): "its own mkstemp file, after a failed save",
    ("study/run/search.py", "StudySearch._set_aside_orphan_dir", "os.rename"):
        "the folder of a trial the killed driver started but Ray never recorded, moved whole into superseded/ "
        "(nothing deleted; never over an existing folder)",
    ("study/state/journal.py", "repair_journal", "os.replace"):
        "the journal rewritten without a torn record (under Optuna's journal lock), from its own temporary file",
    ("study/view/tensorboard.py", "TensorBoardProcess.stop", "self.log_path.unlink"):
        "only the log file start() created (owns_log)",
    ("study/run/tuner.py", "ray_session", "shutil.rmtree"): "the private Ray temp dir mkdtemp made in the same call",
    ("study/run/baseline.py", "_set_aside", "run_dir.rename"):
        "a baseline attempt killed before its first checkpoint kept as <dir>.attempt-N (nothing deleted)",
    ("trainables/checkpoint.py", "atomic_save", "os.replace"): "its temporary file over the checkpoint",
    ("trainables/checkpoint.py", "atomic_save", "Path(tmp_name).unlink"): "its temporary file, after a failure",
    ("trainables/engine.py", "run_training", "run_dir.rmdir"):
        "the run directory this call created, only if still empty (the run never started)",
    ("trainables/rundir.py", "_remove_run_files", "path.unlink"):
        "--overwrite of a verified dastudy run directory: the files its manifest lists (inside the run directory "
        "only), or a pre-manifest run's fixed file names and tb/ events, and .<our name>.*.tmp leftovers",
    ("trainables/rundir.py", "_remove_run_files", "folder.rmdir"): "--overwrite: checkpoints/ and tb/, if now empty",
    ("trainables/rundir.py", "_remove_run_files", "run_dir / MANIFEST.unlink"): "--overwrite: the old manifest",
    ("trainables/rundir.py", "write_json_atomic", "os.replace"): "its temporary file over a run file",
    ("trainables/rundir.py", "write_config", "os.replace"): "its temporary file over config.toml",
    ("trainables/tune.py", "_TuneReporter.on_evaluate", "self.run_dir / 'checkpoints' / STOP_STATE.unlink"):
        "the trial's own stop.pt (a graceful stop's state), once Ray holds a later checkpoint of the same trial",
    ("trainables/tune.py", "train_trial", "run_dir.rename"):
        "a restarted trial keeps its earlier attempt's run/ as run.attempt-N (nothing deleted)",
    ("study/state/checkpoint_files.py", "remove_checkpoint_dirs", "fs.delete_dir"):
        "Ray's own checkpoint_<n> directories (name-matched) directly in a trial's directory: of a PRUNED/finally "
        "failed trial after a snapshot (CheckpointJanitor), or on resume those the restored state no longer names "
        "and that are older than its newest (remove_orphaned_checkpoints)",
    ("study/run/storage.py", "pull_study", "os.replace"): "its .part file over a file it downloads into an empty home",
    ("study/view/tensorboard.py", "TensorBoardProcess.stop", "shutil.rmtree"):
        "the private view directory start() made with mkdtemp for a read-only study",
    ("study/view/tensorboard.py", "_remove_made", "path.unlink"):
        "a symlink/file an earlier build_view listed in the view's marker, only directly inside the view",
    ("study/view/tensorboard.py", "_remove_made", "shutil.rmtree"):
        "a folder an earlier build_view listed in the view's marker, only directly inside the view",
    ("trainables/objectstore.py", "local_copy", "os.replace"): "its mkstemp file over the node's cached download",
    ("trainables/staging.py", "sweep_stale_staging", "shutil.rmtree"):
        "a checkpoint staging folder dastudy-ckpt-<pid>-* in the temp folder: this user's, not a link, untouched "
        "for an hour, its process gone",
    ("trainables/objectstore.py", "local_copy", "os.unlink"): "its own mkstemp file, after a failed download",
    ("data/io.py", "atomic_write_bytes", "os.replace"):
        "its temporary file over a file of a new synthetic benchmark or of `data prepare` output",
    ("data/io.py", "atomic_write_bytes", "os.unlink"): "its temporary file, after a failure",
}


def _call_sites() -> set[tuple[str, str, str]]:
    found = set()
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            module = str(path.relative_to(REPO))
            scope: list[str] = []

            class Visitor(ast.NodeVisitor):
                def _scoped(self, node):
                    scope.append(node.name)
                    self.generic_visit(node)
                    scope.pop()

                visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

                def visit_Call(self, node):
                    func = node.func
                    if isinstance(func, ast.Attribute):
                        target = ast.unparse(func.value)
                        if func.attr in DESTRUCTIVE or (func.attr == "replace" and target == "os"):
                            found.add((module, ".".join(scope), f"{target}.{func.attr}"))
                    self.generic_visit(node)

            Visitor().visit(ast.parse(path.read_text(), filename=module))
    return found


def test_every_call_that_deletes_or_replaces_files_is_reviewed():
    found = _call_sites()
    unreviewed = sorted(found - set(REVIEWED))
    assert not unreviewed, ("new call sites that delete/move/replace files: check that each touches only paths "
                            f"created by dastudy in the same run, then list them in REVIEWED: {unreviewed}")
    gone = sorted(set(REVIEWED) - found)
    assert not gone, f"reviewed call sites that no longer exist (remove them from REVIEWED): {gone}"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def test_no_shell_deletes_and_every_torch_load_is_weights_only():
    loads = 0
    shells = ("os.system", "subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
              "subprocess.check_output")
    for module, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in shells:
                words = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                assert not any(w == "rm" or w.startswith(("rm ", "rmdir")) for w in words), \
                    f"{module}: {ast.unparse(node)}"
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "pickle.load", "pickle.loads"):
                loads += 1
                keywords = {k.arg: k.value for k in node.keywords}
                assert ast.unparse(node.func) == "torch.load", f"{module}: {ast.unparse(node)}"
                weights_only = keywords.get("weights_only")
                assert isinstance(weights_only, ast.Constant) and weights_only.value is True, \
                    f"{module}: {ast.unparse(node)}"
    assert loads >= 2  # trainables/checkpoint.py and models/pretrained.py


def test_ray_token_authentication_is_only_disabled_by_tests(monkeypatch):
    from study.run.tuner import RAY_ENV, configure_environment
    from study_helpers import TEST_RAY_ENV

    assert TEST_RAY_ENV["RAY_AUTH_MODE"] == "disabled"  # the tests ask for it ...
    assert "RAY_AUTH_MODE" not in RAY_ENV  # ... the study code never sets it
    assert [m for m, text in _sources().items() if "RAY_AUTH_MODE" in text] == []
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    configure_environment()
    assert "RAY_AUTH_MODE" not in os.environ


def _listening(process) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of ``process`` and its descendants, read from the OS."""
    import psutil

    found = set()
    for proc in [process, *process.children(recursive=True)]:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    return found


LOOPBACK = {"127.0.0.1", "::1"}


def test_server_defaults_are_localhost():
    from study.view import tensorboard
    from study.cli import get_parser

    args = get_parser().parse_args(["study", "tensorboard", "somewhere"])
    assert args.host == "127.0.0.1"
    for function in (tensorboard.start, tensorboard.serve):
        assert inspect.signature(function).parameters["host"].default == "127.0.0.1"


@pytest.mark.slow
def test_tensorboard_listens_on_localhost_only(tmp_path):
    """The sockets the started TensorBoard really opened (it was checked through its arguments before)."""
    import psutil
    from torch.utils.tensorboard import SummaryWriter

    from study.view.tensorboard import start

    with SummaryWriter(str(tmp_path / "trial_0" / "run" / "tb")) as writer:
        writer.add_scalar("val/mIoU16", 0.5, 1)
    port = _free_port()
    board = start(tmp_path, port=port)
    try:
        sockets = _listening(psutil.Process(board.process.pid))
        assert (("127.0.0.1", port) in sockets), sockets
        assert {ip for ip, _ in sockets} <= LOOPBACK, f"TensorBoard listens beyond localhost: {sockets}"
    finally:
        board.stop()


@pytest.mark.slow
@pytest.mark.extended  # 6.5 s of make test for a known limit; test-extended still fails when an upgrade fixes it
@pytest.mark.xfail(strict=True, reason="Ray 2.60's core (GCS, raylet, workers, agents) binds its gRPC servers to "
                   "all interfaces even with _node_ip_address=127.0.0.1; no public option limits it. Kept strict so "
                   "that an upgrade that binds to localhost turns this into a failure to act on "
                   "(docs/reliability.md, 'Safety of loading and serving').")
def test_local_ray_listens_on_localhost_only(monkeypatch):
    import psutil
    import ray

    from study.run.tuner import ray_session
    from study_helpers import TEST_RAY_ENV

    for key, value in TEST_RAY_ENV.items():
        monkeypatch.setenv(key, value)
    with ray_session(num_cpus=1):
        assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker is up too
        sockets = _listening(psutil.Process())
        assert sockets, "no listening socket found: the check itself is broken"
        open_beyond = {(ip, port) for ip, port in sockets if ip not in LOOPBACK}
        assert not open_beyond, f"the local Ray listens beyond localhost: {sorted(open_beyond)}"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_study_resume_help_warns_about_pickled_state(capsys):
    from study.cli import main

    with pytest.raises(SystemExit):
        main(["study", "resume", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "pickled" in text and "resume only study directories you trust" in text


# ---------------------------------------------------------------------------------------------------------
# the fault hook (test-only)


def test_fault_specs_are_parsed_strictly():
    from trainables.faults import Fault, parse_faults

    assert parse_faults("crash_at:5, pause_at:start, nan_at:evaluate:4@seed=6") == (
        Fault("crash", "step", 5), Fault("pause", "start", None), Fault("nan", "evaluate", 4, 6))
    for bad in ("crash_at:", "boom_at:3", "crash_at:later:3", "crash_at:3@seed=x", "crash_at:step"):
        with pytest.raises(ValueError, match="DASTUDY_FAULT"):
            parse_faults(bad)


def test_faults_fire_once_across_processes_and_only_for_their_seed(tmp_path, monkeypatch):
    import torch

    from trainables import faults

    monkeypatch.setenv("DASTUDY_FAULT", "crash_at:3@seed=7,nan_at:2,oom_at:evaluate:4")
    monkeypatch.setenv("DASTUDY_FAULT_DIR", str(tmp_path))
    faults.inject("step", 3, seed=1)  # another seed: nothing
    with pytest.raises(RuntimeError, match="injected fault: crash at the step of iteration 3"):
        faults.inject("step", 3, seed=7)
    faults.inject("step", 3, seed=7)  # claimed: a retry goes on
    losses = {"loss_seg": torch.tensor(0.5), "loss_adv": torch.tensor(0.1)}
    faults.inject("step", 2, seed=1, values=losses)
    assert all(math.isnan(v.item()) for v in losses.values())
    with pytest.raises(torch.cuda.OutOfMemoryError, match="CUDA out of memory"):
        faults.inject("evaluate", 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash_at-step-3-seed7", "nan_at-step-2",
                                                          "oom_at-evaluate-4"]
    # another process finds the claims and does nothing
    code = ("from trainables import faults\nfaults.inject('step', 3, seed=7)\nfaults.inject('evaluate', 4)\n"
            "print('went on')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "went on", out.stderr


@pytest.mark.parametrize("unset", ["absent", "empty"])
def test_fault_hook_costs_nothing_when_unset(monkeypatch, unset):
    """Unset, the hook does one environment lookup and returns: it parses nothing, claims nothing, touches no file
    and leaves the losses it is given alone (so it may sit in the training loop)."""
    from types import SimpleNamespace

    from trainables import faults

    lookups = []

    class Environ(dict):
        def get(self, key, default=None):
            lookups.append(key)
            return super().get(key, default)

    environ = Environ({} if unset == "absent" else {faults.FAULT_ENV: ""})
    monkeypatch.setattr(faults, "os", SimpleNamespace(environ=environ))

    def never(*args, **kwargs):
        raise AssertionError("the unset fault hook did more than one lookup")

    monkeypatch.setattr(faults, "parse_faults", never)
    monkeypatch.setattr(faults, "_claim", never)
    monkeypatch.setattr(faults, "_fire", never)
    losses = {"loss_seg": 1.5}
    for iteration in range(1000):
        assert faults.inject("step", iteration, seed=1, values=losses) is None
    assert lookups == [faults.FAULT_ENV] * 1000 and losses == {"loss_seg": 1.5}


# ---------------------------------------------------------------------------------------------------------
# out of memory in a fractional GPU share (the logic, on the CPU)


def _cuda_config(tiny_benchmark, **optim):
    from study_helpers import tiny_train_table
    from trainables.config import TrainConfig, from_dict

    table = tiny_train_table(tiny_benchmark)
    table["runtime"]["device"] = "cuda"
    table["optim"].update(optim)
    return from_dict(TrainConfig, table, source="test")


def test_gpu_share_caps_the_allocator_and_an_oom_names_the_cap(tiny_benchmark, monkeypatch):
    import torch

    from trainables.tune import TrialFailed, _is_oom, gpu_share, oom_reason

    capped = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: type("Props", (), {"total_memory": 80 * 1024 ** 3})())
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device: capped.append(fraction))
    cap = gpu_share(_cuda_config(tiny_benchmark), 0.25)
    assert cap == 20.0 and capped == [0.25]  # a quarter of an 80 GiB device
    err = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")
    reason = oom_reason(err, cap_gib=cap, share=0.25)
    assert reason.startswith("CUDA out of memory within its memory cap of 20.0 GiB (resources.gpu = 0.25")
    assert "Tried to allocate 512.00 MiB" in reason and "optim.batch_size" in reason
    assert _is_oom(err) and _is_oom(RuntimeError("CUDA out of memory. Tried ...")) and not _is_oom(ValueError("x"))
    # a config that cannot fit its share fails before training, naming what it needs and the cap
    with pytest.raises(TrialFailed, match=r"needs about .* GiB .* but its share is 20.0 GiB"):
        gpu_share(_cuda_config(tiny_benchmark, batch_size=4000), 0.25)

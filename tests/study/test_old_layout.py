"""Studies written by the flat ``study/`` layout still load: every class their pickles name by an old module path
resolves (study/_moved.py), to the same class the new layout defines. The fixture is a real replicate-ASHA study
made by tests/study/fixtures/make_pre_layers_study.py on the flat layout (commit 97014a7)."""
from __future__ import annotations

import importlib
import json
import pickletools
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from study._moved import OLD_PATHS

FIXTURE = Path(__file__).parent / "fixtures" / "pre_layers_study.tar.gz"
REPO = Path(__file__).resolve().parents[2]


def _globals(data: bytes) -> set[tuple[str, str]]:
    """The (module, name) pairs a pickle imports, read from its opcodes without running it."""
    found, strings, memo = set(), [], {}
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            strings.append(arg)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = strings[-1] if strings else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            strings.append(memo.get(arg))
        elif op.name in ("GLOBAL", "INST"):
            found.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]))
    return found


def _pickles(home: Path) -> dict[str, bytes]:
    """Every pickle Ray left in the study: whole files, and the cloudpickled fields of the JSON trial records."""
    out: dict[str, bytes] = {}

    def walk(where: str, value) -> None:
        if isinstance(value, dict):
            if value.get("_type") == "CLOUDPICKLE_FALLBACK":
                out[f"{where}:{len(out)}"] = bytes.fromhex(value["value"])
            for item in value.values():
                walk(where, item)
        elif isinstance(value, list):
            for item in value:
                walk(where, item)
        elif isinstance(value, str) and value[:1] == "{":
            try:
                walk(where, json.loads(value))
            except ValueError:
                pass

    for path in sorted(home.rglob("*")):
        if path.suffix not in (".pkl", ".json"):
            continue
        data = path.read_bytes()
        if data[:1] == b"\x80":  # a pickle protocol header (Ray's search_gen_state-*.json is one too)
            out[str(path.relative_to(home))] = data
        elif data[:1] == b"{":
            try:
                walk(str(path.relative_to(home)), json.loads(data))
            except ValueError:  # result.json: JSON lines
                continue
    return out


@pytest.fixture(scope="module")
def old_study(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("prelayers")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(home, filter="data")
    return home


def test_the_fixture_names_classes_by_their_old_paths(old_study):
    """The fixture can tell: it does pickle the flat layout's paths (else the next test would prove nothing)."""
    names = set().union(*map(_globals, _pickles(old_study).values()))
    old = {(m, n) for m, n in names if m in OLD_PATHS}
    assert {("study.search", "StudySearch"), ("study.replicates", "ReplicateASHA"),
            ("study.replicates", "ReplicateSearch"), ("study.storage", "CheckpointJanitor")} <= old, sorted(old)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # old paths on purpose
def test_every_name_an_old_study_pickled_resolves_to_the_new_class(old_study):
    names = set().union(*map(_globals, _pickles(old_study).values()))
    ours = sorted((m, n) for m, n in names if m.split(".")[0] in ("study", "trainables", "models", "data"))
    assert ours
    for module, name in ours:
        obj = getattr(importlib.import_module(module), name)
        if module in OLD_PATHS:  # the same object as the new path's, not a copy
            assert obj is getattr(importlib.import_module(OLD_PATHS[module]), name)
            if isinstance(obj, type):  # a new pickle of it names the new path
                assert obj.__module__ == OLD_PATHS[module], (module, name, obj.__module__)


@pytest.mark.slow  # > 2 s: outside make test-quick
def test_an_old_studys_ray_state_unpickles_into_the_new_classes(old_study):
    """In a fresh interpreter (no module of the new layout imported beforehand): Ray's tuner.pkl, its search
    generator state and every trial record load, and the searcher and scheduler are the new layout's classes."""
    code = f"""
import json, pickle, sys
sys.path.insert(0, {str(REPO)!r})
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_old_layout import _pickles
from pathlib import Path
blobs = _pickles(Path({str(old_study)!r}))
loaded = {{where: pickle.loads(data) for where, data in blobs.items()}}
tuner = loaded["tuner.pkl"]["_tune_config"]
print(type(tuner.search_alg).__module__, type(tuner.search_alg).__name__)
print(type(tuner.scheduler).__module__, type(tuner.scheduler).__name__)
print(len(loaded))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    searcher, scheduler, count = result.stdout.split("\n")[:3]
    assert searcher == "study.run.replicates ReplicateSearch"
    assert scheduler == "study.run.replicates ReplicateASHA"
    assert int(count) >= 6  # tuner.pkl, the search state and the trial records' storage contexts


@pytest.mark.slow  # > 2 s: outside make test-quick
def test_old_paths_are_the_new_modules_and_keep_their_own_spec():
    """Each old path imported first (before its new module), in a fresh interpreter."""
    code = """
import importlib, sys
from study._moved import OLD_PATHS
for old, new in OLD_PATHS.items():
    fresh = new not in sys.modules
    module = importlib.import_module(old)
    assert module is sys.modules[new] and module.__name__ == new and module.__spec__.name == new, (old, fresh)
    importlib.reload(module)
print("ok")
"""
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_every_old_path_has_a_new_home_and_no_module_is_left_at_the_old_one():
    for old, new in OLD_PATHS.items():
        assert not (REPO / (old.replace(".", "/") + ".py")).exists(), old
        assert (REPO / (new.replace(".", "/") + ".py")).is_file(), new


FLAT_LAYOUT_COMMIT = "97014a7"  # the last commit with the flat study/ layout


@pytest.mark.slow
@pytest.mark.extended
def test_a_study_killed_under_the_flat_layout_resumes_to_the_end_with_the_layers(tiny_benchmark, tmp_path,
                                                                                  remove_driver_temp_dirs):
    """The real thing, once per `make test-extended`: the flat layout's own code (a git worktree of its last commit)
    starts a replicate study and is SIGKILLed mid-trial; `dastudy study resume` of this tree finishes it."""
    import os
    import time

    from study_helpers import TEST_RAY_ENV, kill_tree, study_table, write_study_file

    old = tmp_path / "flat"
    made = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), FLAT_LAYOUT_COMMIT],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no worktree of {FLAT_LAYOUT_COMMIT} (a shallow clone?): {made.stderr.strip()}")
    try:
        table = study_table(tiny_benchmark, name="flat", num_samples=2, scheduler={"kind": "fifo"},
                            search={"space": "lambda_lr", "sampler": "tpe", "seed": 0, "startup_trials": 2,
                                    "seeds": [1, 2]})
        table["train"]["optim"].update(iter_max=8, iter_stop=8)
        study_file = write_study_file(tmp_path / "flat.toml", table)
        storage, faults = tmp_path / "studies", tmp_path / "faults"
        faults.mkdir()
        remove_driver_temp_dirs(storage / "flat")
        env = {**os.environ, **TEST_RAY_ENV, "RAY_TMPDIR": str(tmp_path), "PYTHONPATH": str(old),
               "DASTUDY_FAULT": "pause_at:step:5", "DASTUDY_FAULT_PAUSE_S": "600", "DASTUDY_FAULT_DIR": str(faults)}
        with open(tmp_path / "flat.log", "w") as log:
            driver = subprocess.Popen([sys.executable, "-m", "study.cli", "study", "run", str(study_file),
                                       "--storage", str(storage), "--num-cpus", "2"], cwd=old, env=env, stdout=log,
                                      stderr=subprocess.STDOUT)
            deadline = time.time() + 300
            while not any(faults.iterdir()):
                assert driver.poll() is None and time.time() < deadline, (tmp_path / "flat.log").read_text()[-3000:]
                time.sleep(0.3)
            kill_tree(driver)
        pickled = _globals((storage / "flat" / "tuner.pkl").read_bytes())
        assert ("study.search", "StudySearch") in pickled  # the flat layout wrote it
        env.update(PYTHONPATH=str(REPO))
        for key in ("DASTUDY_FAULT", "DASTUDY_FAULT_DIR"):
            env.pop(key)
        resumed = subprocess.run([sys.executable, "-m", "study.cli", "study", "resume", "flat", "--storage",
                                  str(storage), "--num-cpus", "2"], cwd=REPO, env=env, capture_output=True,
                                 text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        # 2 configurations x 2 seeds: the status lists each replicate (issue 19), all four completed
        assert "4 of 4 trials (4 COMPLETE)" in resumed.stdout, resumed.stdout[-3000:]
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture_output=True)

"""Honest interrupts and live progress (issue 19): SIGINT/SIGTERM stop a study through Ray Tune's graceful path
and exit 130/143 with one resume line; interrupted trials read INTERRUPTED in `status`; resuming a finished study
starts no Ray; the progress is a table redrawn in place on a terminal and plain lines elsewhere; Ray's private-API
and token-auth warnings are gone."""
from __future__ import annotations

import io
import logging
import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from study_helpers import TEST_RAY_ENV, study_table, write_study_file


# ---------------------------------------------------------------------------------------------------------
# the signal path, without Ray


def test_sigint_and_sigterm_ask_rays_interrupt_path_once_then_stop_at_once():
    from study.run.interrupts import EXIT_SIGINT, EXIT_SIGTERM, StudyInterrupted, graceful_stop, stop_requested

    for signum, code in ((signal.SIGINT, EXIT_SIGINT), (signal.SIGTERM, EXIT_SIGTERM)):
        asked = []
        before = signal.getsignal(signum)
        with graceful_stop():
            assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # Ray keeps our SIGINT handler
            previous_usr1 = signal.signal(signal.SIGUSR1, lambda s, f: asked.append(s))  # Ray's, once fit runs
            try:
                os.kill(os.getpid(), signum)
                time.sleep(0.05)
                assert asked == [signal.SIGUSR1] and stop_requested() == signum
                with pytest.raises(KeyboardInterrupt):  # a second signal: at once
                    os.kill(os.getpid(), signum)
                    time.sleep(0.05)
            finally:
                signal.signal(signal.SIGUSR1, previous_usr1)
        assert signal.getsignal(signum) is before and "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
        err = StudyInterrupted(stop_requested(), "my study")
        assert err.exit_code == code == 128 + signum
        assert err.resume_line("/s t") == "interrupted — resume with: dastudy study resume 'my study' --storage '/s t'"


def test_with_a_drain_the_running_trials_save_first_then_rays_stop_runs_in_the_main_thread():
    from study.run.interrupts import graceful_stop, stop_requested

    events = []
    released = threading.Event()

    def drain():  # save_running_trials: waits for the trials while Ray's loop goes on
        events.append(("drain", threading.current_thread() is threading.main_thread()))
        released.wait(5)

    with graceful_stop(drain):
        previous_usr1 = signal.signal(signal.SIGUSR1, lambda s, f: events.append(
            ("ray stop", threading.current_thread() is threading.main_thread())))
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            assert events == [("drain", False)] and stop_requested() == signal.SIGTERM  # Ray not told yet
            released.set()
            deadline = time.time() + 5
            while len(events) < 2 and time.time() < deadline:
                time.sleep(0.05)  # the main thread runs Python signal handlers between bytecodes
            assert events == [("drain", False), ("ray stop", True)]
        finally:
            signal.signal(signal.SIGUSR1, previous_usr1)


def test_a_drain_that_fails_still_stops_the_study(capsys):
    from study.run.interrupts import graceful_stop

    asked = []

    def drain():
        raise ConnectionError("no cluster")

    with graceful_stop(drain):
        previous_usr1 = signal.signal(signal.SIGUSR1, lambda s, f: asked.append(s))
        try:
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.time() + 5
            while not asked and time.time() < deadline:
                time.sleep(0.05)
        finally:
            signal.signal(signal.SIGUSR1, previous_usr1)
    assert asked == [signal.SIGUSR1]
    assert "could not be asked to save (ConnectionError: no cluster)" in capsys.readouterr().err


@pytest.mark.parametrize("finished", [None, "2 of 2 trials COMPLETE or PRUNED"])
def test_a_stop_that_came_as_the_last_trials_ended_is_not_an_interruption(monkeypatch, tmp_path, finished):
    """SLURM's warning can arrive while the last trials finish: the study is then complete, and exiting 143 would
    only make the job requeue itself to find nothing to resume."""
    import study.run.interrupts
    import study.run.tuner as tuner_module
    from study.run.interrupts import StudyInterrupted
    from study.state.location import StudyLocation

    class FakeTuner:  # Ray's fit, as a stop leaves it: the signal recorded, the state saved, fit returned
        def fit(self):
            study.run.interrupts._state["signum"] = signal.SIGTERM
            return "results"

    monkeypatch.setattr(tuner_module, "finished_trials", lambda study_cfg, home: finished)
    location = StudyLocation(home=tmp_path, ray_storage="s3://bucket/studies", name="s")
    study_cfg = type("S", (), {"name": "s", "scheduler": type("K", (), {"kind": "fifo"})()})()
    if finished is None:
        with pytest.raises(StudyInterrupted):
            tuner_module._fit(FakeTuner(), location, study_cfg)
    else:
        assert tuner_module._fit(FakeTuner(), location, study_cfg) == "results"


def test_a_signal_before_rays_loop_runs_is_a_plain_keyboard_interrupt():
    from study.run.interrupts import graceful_stop

    previous_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt), graceful_stop():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGUSR1, previous_usr1)


def test_rays_own_interrupt_messages_are_dropped_at_their_logger(caplog):
    from study.run.interrupts import graceful_stop

    ray_logger = logging.getLogger("ray.tune.tune")
    with caplog.at_level(logging.WARNING, logger="ray.tune.tune"), graceful_stop():
        ray_logger.warning("Experiment has been interrupted, but the most recent state was saved.\n"
                           "Resume experiment with: Tuner.restore(path=...)")
        ray_logger.warning("a warning of its own")
    assert [r.getMessage() for r in caplog.records] == ["a warning of its own"]


# ---------------------------------------------------------------------------------------------------------
# status and resume without Ray


def _finished_study(tmp_path, benchmark, *, states):
    """A study directory with an Optuna journal whose trials are in ``states`` (no Ray ran)."""
    import optuna

    from study.config.study_config import load_study_config
    from study.state.location import StudyLocation, write_study_files
    from study.state.optuna_storage import optuna_storage

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_study_file(tmp_path / "s.toml", study_table(benchmark, name="done", num_samples=len(states)))
    study = load_study_config(path)
    home = tmp_path / "studies" / "done"
    write_study_files(study, StudyLocation(home=home, ray_storage=str(home.parent), name="done"), extra={})
    ot = optuna.create_study(study_name="done", storage=optuna_storage(study, home), direction="maximize")
    for number, state in enumerate(states):
        trial = ot.ask({"adapt.lambda_adv_main": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        trial.set_user_attr("trial_dir", f"trial_{number:04d}")
        trial.report(0.1 + number / 100, 1)
        if state != "RUNNING":
            ot.tell(trial, 0.1 + number / 100 if state == "COMPLETE" else None,
                    state=getattr(optuna.trial.TrialState, state))
    return home


@pytest.mark.parametrize("command, signum, code", [("run", signal.SIGINT, 130), ("run", signal.SIGTERM, 143),
                                                   ("resume", signal.SIGINT, 130)])
def test_an_interrupted_study_exits_130_or_143_with_the_one_resume_line(tmp_path, tiny_benchmark, monkeypatch, capsys,
                                                                       command, signum, code):
    """The command's side of an interrupt (end to end with Ray: the extended SIGINT test and the SLURM test): the
    driver's StudyInterrupted becomes the documented exit code and one line that can be pasted, no traceback."""
    import study.run.tuner as tuner
    from study.cli import main
    from study.run.interrupts import StudyInterrupted

    def interrupted(*args, **kwargs):
        raise StudyInterrupted(signum, "my study")

    monkeypatch.setattr(tuner, "run_study", interrupted)
    monkeypatch.setattr(tuner, "resume_study", interrupted)
    path = write_study_file(tmp_path / "s.toml", study_table(tiny_benchmark))
    storage = tmp_path / "my studies"
    (storage / "my study").mkdir(parents=True)
    (storage / "my study" / "study.toml").write_text("")  # found by name; resume_study itself is replaced
    args = ["study", "run", str(path)] if command == "run" else ["study", "resume", "my study"]
    assert main([*args, "--storage", str(storage)]) == code
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"interrupted — resume with: dastudy study resume 'my study' --storage '{storage}'"]
    assert "Traceback" not in captured.out + captured.err and "Tuner.restore" not in captured.out + captured.err


def test_resume_of_a_finished_study_says_so_and_starts_no_ray(tmp_path, tiny_benchmark, monkeypatch, capsys):
    import ray

    from study.cli import main

    def refused(*args, **kwargs):
        raise AssertionError("a finished study must not start Ray")

    monkeypatch.setattr(ray, "init", refused)
    home = _finished_study(tmp_path, tiny_benchmark, states=["COMPLETE", "PRUNED", "COMPLETE"])
    assert main(["study", "resume", str(home)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"study done in {home} is finished (3 of 3 trials COMPLETE or PRUNED); nothing to resume"
    # a FAILED trial is not an end (a resume runs it again), nor is a trial short of num_samples
    from study.state.location import load_study_dir
    from study.state.resume_checks import finished_trials

    failed = _finished_study(tmp_path / "f", tiny_benchmark, states=["COMPLETE", "FAIL"])
    assert finished_trials(load_study_dir(failed)[0], failed) is None


def _states(out: str) -> list[str]:
    return [state for state in ("COMPLETE", "RUNNING", "INTERRUPTED")
            for line in out.splitlines() if line.startswith("#") and f" {state}" in line]  # rows start with the label


def test_trials_of_a_study_no_driver_runs_read_interrupted(tmp_path, tiny_benchmark, capsys):
    from study.cli import main
    from study.state.lock import study_lock

    home = _finished_study(tmp_path, tiny_benchmark, states=["COMPLETE", "RUNNING", "RUNNING"])
    with study_lock(home, command="test driver"):  # a live driver: its trials do run
        assert main(["study", "status", str(home)]) == 0
        out = capsys.readouterr().out
        assert _states(out) == ["COMPLETE", "RUNNING", "RUNNING"] and "INTERRUPTED" not in out
    assert main(["study", "status", str(home)]) == 0  # the driver is gone (Ctrl-C, SIGTERM, killed)
    out = capsys.readouterr().out
    assert _states(out) == ["COMPLETE", "INTERRUPTED", "INTERRUPTED"], out
    assert "RUNNING" not in out and "(1 COMPLETE, 2 INTERRUPTED)" in out
    assert f"2 trial(s) INTERRUPTED (no driver runs the study); continue with: dastudy study resume {home}" in out


# ---------------------------------------------------------------------------------------------------------
# progress


class _Trial:
    def __init__(self, trial_id, config, status="RUNNING", last_result=None):
        self.trial_id, self.config, self.status = trial_id, config, status
        self.last_result = last_result or {}
        self.storage = None


def _progress(stream, *, live):
    from study.run.progress import LiveProgress
    from study.run.search import StudyProgress, trial_dirname

    plain = StudyProgress(metric="val/mIoU16", mode="max", max_t=4, num_samples=4)
    return LiveProgress(plain, name_of=trial_dirname, metric="val/mIoU16", mode="max", max_t=4, num_samples=4,
                        max_concurrent=2, name="demo", stream=stream, live=live)


def _play(progress):
    """Two trials start; a evaluates twice (10 s per iteration) and completes; b evaluates once."""
    a = _Trial("a", {"adapt.lambda_adv_main": 0.01, "optim.lr@deeplabv2_tiny": 0.02})
    b = _Trial("b", {"adapt.lambda_adv_main": 0.002, "optim.lr@deeplabv2_tiny": 0.004})
    trials = [a, b]
    progress.on_trial_start(0, trials, a)
    progress.on_trial_start(0, trials, b)
    for step, value in ((1, 0.10), (4, 0.15)):
        a.last_result = {"training_iteration": step, "val/mIoU16": value, "time_this_iter_s": 10.0}
        progress.on_trial_result(0, trials, a, dict(a.last_result))
    b.last_result = {"training_iteration": 1, "val/mIoU16": 0.12, "time_this_iter_s": 10.0}
    progress.on_trial_result(0, trials, b, dict(b.last_result))
    progress.on_trial_complete(0, trials, a)  # as Ray does it: the callback first, then the status
    a.status = "TERMINATED"
    return trials


def test_progress_and_eta_are_plain_lines_off_a_terminal():
    stream = io.StringIO()
    progress = _progress(stream, live=None)  # a StringIO is no terminal
    trials = _play(progress)
    out = stream.getvalue()
    assert "\x1b[" not in out  # no cursor movement in a log file
    lines = out.splitlines()
    assert sum("started" in line for line in lines) == 2 and sum(" eval " in line for line in lines) == 3
    # after a trial ends (its Ray status still RUNNING): done / running / pending, best so far, time per evaluation
    # round, ETA.
    # Left: b 3 iterations + 2 pending x 4 (the ended trial ran 4) = 11, at 10 s, 1 running: ~110 s = ~2 min
    assert lines[-1].endswith("progress: study demo: 1/4 done, 1 running, 2 pending · best val/mIoU16 15.00 % "
                              "(trial_a) · 10.0 s/evaluation · ETA ~2 min"), lines[-1]
    assert progress.eta_s(trials) == pytest.approx((3 + 2 * 4) * 10.0 / 1)


def test_an_ended_trial_that_starts_again_counts_as_running():
    """A resume (or a retry) runs an errored trial again: once it starts, its own RUNNING status holds, and each fit
    starts from the restored statuses."""
    stream = io.StringIO()
    progress = _progress(stream, live=False)
    trials = _play(progress)
    a = trials[0]
    a.status = "RUNNING"  # restarted by a resume
    progress.setup()
    assert progress.counts(trials)["running"] == 2
    progress.on_trial_error(0, trials, a)  # fails again: ended before Ray sets ERROR
    assert progress.counts(trials)["done"] == 1
    progress.on_trial_start(0, trials, a)  # and is retried
    assert progress.counts(trials) == {"done": 0, "running": 2, "pending": 2}


def _on_a_terminal(columns: int, lines: int, play) -> str:
    """What ``play(progress)`` writes to a pseudo-terminal of that size (0 x 0: one nobody has sized)."""
    import fcntl
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    stream = os.fdopen(slave, "w", buffering=1)
    out = b""
    try:
        progress = _progress(stream, live=None)  # decided from the stream: a pty is a terminal
        assert progress.live
        play(progress)
        stream.flush()
        while select.select([master], [], [], 0.2)[0]:
            out += os.read(master, 65536)
    finally:
        stream.close()
        os.close(master)
    return out.decode()


def test_progress_is_a_table_redrawn_in_place_on_a_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # sys.stdout's width (pytest-xdist sets 80): not the terminal drawn on
    text = _on_a_terminal(160, 40, _play)
    assert "\x1b[" in text and re.search(r"\x1b\[\d+F\x1b\[J", text)  # the table is redrawn where it was
    final = text.rsplit("\x1b[J", 1)[-1]  # what the screen shows after the last redraw
    assert "study demo: 1/4 done, 1 running, 2 pending · best val/mIoU16 15.00 % (trial_a)" in final
    assert "ETA ~2 min" in final and "10.0 s/evaluation" in final
    assert any(line.split()[:1] == ["trial"] and "evals" in line.split() for line in final.splitlines())  # header
    rows = [line.split() for line in final.replace("\r", "").splitlines() if line.strip().startswith("trial_")]
    assert rows == [["trial_b", "0.002", "0.004", "1/4", "12.00", "RUNNING"],
                    ["trial_a", "0.01", "0.02", "4/4", "15.00", "COMPLETE"]], final
    assert "trial_a COMPLETE" in text  # the end line itself stays above the table (in the scrollback)


@pytest.mark.parametrize("columns, lines, env, width", [(60, 30, "200", 60), (90, 30, "200", 90), (0, 0, "70", 70)])
def test_the_table_fits_the_terminal_it_is_drawn_on(monkeypatch, columns, lines, env, width):
    """Lines are cut to the stream's terminal (a wrapped line would break the in-place redraw); a pty nobody sized
    falls back to $COLUMNS."""
    monkeypatch.setenv("COLUMNS", env)
    final = _on_a_terminal(columns, lines, _play).rsplit("\x1b[J", 1)[-1].replace("\r", "")
    lines = [line for line in final.splitlines() if line]
    drawn = lines[[line.startswith("study demo: 1/4 done") for line in lines].index(True):]  # after the end line
    assert len(drawn) == 4 and max(map(len, drawn)) == width - 1, drawn  # the summary is longer than any width


def test_progress_pickles_without_its_stream():
    import pickle

    progress = _progress(io.StringIO(), live=False)
    _play(progress)
    restored = pickle.loads(pickle.dumps(progress))  # Tuner.restore unpickles the callbacks
    assert restored.stream is sys.stdout and restored.seconds_per_iteration() == 10.0


def test_every_hook_of_the_progress_callback_is_one_ray_calls():
    """A hook Ray does not define is never called: ``on_step`` (Ray 2.60 calls ``on_step_begin``/``on_step_end``)
    left the live table unrefreshed and the graceful stop without the list of running trials."""
    from ray.tune import Callback

    from study.run.progress import LiveProgress

    hooks = [name for name in vars(LiveProgress) if name.startswith("on_") or name == "setup"]
    assert "on_step_end" in hooks and all(name in vars(Callback) for name in hooks), hooks


def test_interrupted_study_end_line_says_stopped_not_ended(monkeypatch):
    import study.run.interrupts

    stream = io.StringIO()
    progress = _progress(stream, live=False)
    trials = _play(progress)
    monkeypatch.setitem(study.run.interrupts._state, "signum", signal.SIGINT)
    progress.on_step_end(0, trials)  # Tune's loop goes on after the signal: b is running then
    for ray_marks_it in ("RUNNING", "TERMINATED"):  # what Ray left as b's status once it stopped it
        trials[1].status = ray_marks_it
        progress.on_experiment_end(trials)
        last = stream.getvalue().splitlines()[-1]
        assert "study stopped by SIGINT: 1 of 4 trials ended, 1 interrupted" in last and "study ended" not in last
    trials[1].last_result["finished"] = 1.0  # b reached its end before Ray stopped it: ended, not interrupted
    progress.on_experiment_end(trials)
    assert "study stopped by SIGINT: 2 of 4 trials ended, 0 interrupted" in stream.getvalue().splitlines()[-1]


# ---------------------------------------------------------------------------------------------------------
# Ray's warnings


def test_no_private_api_warning_when_forced_snapshots_are_switched_off(caplog):
    from ray.tune.execution.tune_controller import TrialRunnerWrapper
    from ray.util.debug import reset_log_once

    from study.run.snapshots import stop_forced_snapshots

    manager = type("Manager", (), {"_sync_every_n_trial_checkpoints": 2})()
    controller = type("Controller", (), {"_checkpoint_manager": manager})()
    wrapped = TrialRunnerWrapper(controller, trial_executor=None)  # what Ray hands a scheduler
    reset_log_once("restrict_accessing_tune_controller")
    with caplog.at_level(logging.WARNING):
        assert stop_forced_snapshots(wrapped) is True
    assert manager._sync_every_n_trial_checkpoints is None
    assert not [r for r in caplog.records if "You are trying to access" in r.getMessage()]


def test_a_local_ray_keeps_rays_auth_choice_and_drops_only_its_default_notice(monkeypatch):
    """The environment's auth mode is left as the user has it (setting it ourselves after Ray's import made
    ray.init fail: tests/study/test_report.py runs a real study that way); Ray's "token authentication is enabled"
    notice about its own default is dropped at its logger, its warning that auth is disabled is not."""
    import logging

    import ray

    import study.run.tuner

    seen = {}
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(mode=os.environ.get("RAY_AUTH_MODE"), **kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with study.run.tuner.ray_session():
        pass
    assert seen["mode"] is None and seen["address"] == "local" and "RAY_AUTH_MODE" not in os.environ
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")

    def passes(message: str) -> bool:
        return all(f.filter(logging.LogRecord(log.name, logging.WARNING, __file__, 1, message, None, None))
                   for f in log.filters)

    assert not passes("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled ...")
    assert passes("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's choice is kept
    with study.run.tuner.ray_session():
        pass
    assert seen["mode"] == "disabled"


# ---------------------------------------------------------------------------------------------------------
# end to end with Ray


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "study.cli", *args]


def _drive(command, env, cwd, *, until, signum, group, timeout=240):
    """Start ``command`` in a process group of its own, send ``signum`` once ``until()`` is true, and return its
    exit code and output. ``group``: to every process of the group, the driver and the Ray processes it started
    (a terminal's Ctrl-C); else to the driver alone (SIGTERM forwarded by a batch script, `kill PID`)."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    output: list[str] = []
    deadline = time.time() + timeout
    sent = False
    while proc.poll() is None or not lines.empty():
        try:
            output.append(lines.get(timeout=0.5))
        except queue.Empty:
            pass
        if not sent and until():
            if group:
                os.killpg(proc.pid, signum)  # our own group (start_new_session), by its id
            else:
                proc.send_signal(signum)
            sent = True
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("driver did not stop:\n" + "".join(output))
    assert sent, "the driver ended before the signal:\n" + "".join(output)
    return proc.wait(), "".join(output)


@pytest.mark.slow
@pytest.mark.extended  # ~50 s; make test has SIGTERM end to end on a real SLURM (tests/deploy/test_slurm.py)
def test_sigint_stops_a_study_that_resumes_to_the_end(tiny_benchmark, tmp_path, remove_driver_temp_dirs):
    table = study_table(tiny_benchmark, name="stopme", num_samples=3, max_concurrent_trials=2,
                        scheduler={"kind": "fifo"})
    table["train"]["optim"].update(iter_max=8, iter_stop=8)
    study_file = write_study_file(tmp_path / "stopme.toml", table)
    storage = tmp_path / "studies"
    home = storage / "stopme"
    remove_driver_temp_dirs(home)
    env = {**os.environ, **TEST_RAY_ENV, "RAY_TMPDIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "DASTUDY_FAULT": "pause_at:step:5",
           "DASTUDY_FAULT_PAUSE_S": "600",
           # the held trial cannot save where it is (it sleeps inside an iteration): the stop waits 5 s for it
           "DASTUDY_STOP_GRACE_S": "5"}
    line = f"interrupted — resume with: dastudy study resume stopme --storage {storage}"
    # SIGTERM to the driver alone (what a batch script forwards), exit 143 and the resume after it: on a real SLURM
    # in tests/deploy/test_slurm.py
    for n, (args, signum, group, code) in enumerate(((("run", str(study_file)), signal.SIGINT, True, 130),)):
        faults = tmp_path / f"faults{n}"  # a trial holds at step 5 (after its checkpoint at 4) until the signal
        faults.mkdir()
        code_got, out = _drive(_cli("study", *args, "--storage", str(storage), "--num-cpus", "2"),
                               {**env, "DASTUDY_FAULT_DIR": str(faults)}, tmp_path,
                               until=lambda: any(faults.iterdir()), signum=signum, group=group)
        assert code_got == code, out[-3000:]
        assert out.rstrip().splitlines()[-1] == line, out[-3000:]
        assert f"study stopped by {signal.Signals(signum).name}" in out and "study ended" not in out
        assert "Tuner.restore" not in out and "Resume experiment with" not in out
        assert "You are trying to access" not in out and "Token authentication is enabled" not in out
        status = subprocess.run(_cli("study", "status", "stopme", "--storage", str(storage)), cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
        assert "INTERRUPTED" in status.stdout and " RUNNING" not in status.stdout, status.stdout
    env.pop("DASTUDY_FAULT")
    done = subprocess.run(_cli("study", "resume", "stopme", "--storage", str(storage), "--num-cpus", "2"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    again = subprocess.run(_cli("study", "resume", "stopme", "--storage", str(storage)), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "is finished (3 of 3 trials COMPLETE or PRUNED); nothing to resume" in again.stdout
    assert "resuming" not in again.stdout + again.stderr  # no Ray started

"""TensorBoard launcher on a study directory, and a real-browser check of the HParams page (headless chromium)."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from study.tensorboard import TensorBoardError, event_files, port_is_free, start

sys.path.insert(0, str(Path(__file__).parent))
from test_report import TRIALS, make_study, real_study  # noqa: E402  (the report tests' studies)

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "img" / "tensorboard_hparams.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("tb"), name="tbstudy", tensorboard=True)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_benchmark):
    return real_study(tmp_path_factory.getbasetemp() / "real_study", tiny_benchmark)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow  # starts a TensorBoard server: not in the -m 'not slow' loop
def test_start_lists_every_trial_run_and_stops_cleanly(study_dir):
    port = free_port()
    board = start(study_dir, port=port)
    try:
        assert board.url == f"http://127.0.0.1:{port}/"
        runs = json.loads(_get(board.url + "data/runs"))
        assert sorted(runs) == sorted([f"{p.name}/run/tb" for p in study_dir.glob("trial_*")] + ["baseline/tb"])
        assert not port_is_free("127.0.0.1", port)
        # What the HParams dashboard asks TensorBoard for: one session group per trial (the baseline has no
        # HParams entry), its status, its hyperparameters and the last value of each metric tag.
        groups = _post(board.url + "data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
        by_run = {g["name"]: g for g in groups["sessionGroups"]}
        assert sorted(by_run) == sorted(f"{p.name}/run/tb" for p in study_dir.glob("trial_*"))
        expected_status = {"completed": "STATUS_SUCCESS", "pruned": "STATUS_UNKNOWN", "failed": "STATUS_FAILURE",
                           "diverged": "STATUS_FAILURE"}
        for (name, lam, lr, seed, rounds, fate), trial_dir in zip(TRIALS, sorted(study_dir.glob("trial_*"))):
            group = by_run[f"{trial_dir.name}/run/tb"]
            assert group["sessions"][0]["status"] == expected_status[fate], name
            assert group["hparams"] == {"adapt.lambda_adv_main": lam, "optim.lr@deeplabv2_tiny": lr,
                                        "runtime.seed": float(seed)}
            values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
            last = json.loads((trial_dir / "result.json").read_text().splitlines()[-1])
            assert values["val/mIoU13"] == pytest.approx(last["val/mIoU13"], rel=1e-6)  # float32 in events
            assert values["trial/pruned"] == (1.0 if fate == "pruned" else 0.0)
    finally:
        board.stop()
    assert board.process.poll() is not None
    assert port_is_free("127.0.0.1", port)
    assert not board.log_path.exists()


def test_refuses_missing_events_and_busy_port(study_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TensorBoardError, match="no TensorBoard event files"):
        start(tmp_path / "empty", port=free_port())
    with pytest.raises(FileNotFoundError, match="no such study directory"):
        start(tmp_path / "missing", port=free_port())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TensorBoardError, match=f"port {port} on 127.0.0.1 is already in use"):
            start(study_dir, port=port)
    assert len(event_files(study_dir)) >= len(TRIALS) + 1


@pytest.mark.slow  # starts a TensorBoard server: not in the -m 'not slow' loop
def test_serve_stops_tensorboard_on_ctrl_c(study_dir):
    port = free_port()
    code = f"from study.tensorboard import serve; raise SystemExit(serve({str(study_dir)!r}, port={port}))"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        line = parent.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + parent.stderr.read()
        children = psutil.Process(parent.pid).children(recursive=True)
        assert children and _get(f"http://127.0.0.1:{port}/data/runs")
        parent.send_signal(signal.SIGINT)
        assert parent.wait(90) == 0  # generous: a loaded CI machine once needed more than 30 s
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"orphaned TensorBoard processes: {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


# ---------------------------------------------------------------------------------------------------------
# real browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Visible text of the page, including the shadow roots the Polymer HParams dashboard renders into (which
# --dump-dom does not serialise).
PAGE_TEXT_JS = """(() => { const out = [];
  const walk = (n) => { if (n.nodeName === 'STYLE' || n.nodeName === 'SCRIPT') return;
    if (n.nodeType === 3) { const t = n.nodeValue.trim(); if (t) out.push(t); return; }
    if (n.shadowRoot) walk(n.shadowRoot); for (const c of n.childNodes) walk(c); };
  walk(document); return out.join('\\n'); })()"""


class HeadlessChromium:
    """Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: file descriptors 3
    and 4, NUL-terminated JSON messages), so no WebSocket client is needed."""

    def __init__(self, executable: str, *, width: int = 1600, height: int = 1000):
        command_read, self._command_write = os.pipe()
        self._reply_read, reply_write = os.pipe()

        def wire_pipes():  # in the child: the protocol expects fds 3 (commands in) and 4 (replies out)
            a = fcntl.fcntl(command_read, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(reply_write, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"],
            close_fds=False, preexec_fn=wire_pipes, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(command_read)
        os.close(reply_write)
        self._buffer = b""
        self._next_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._command_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                ready, _, _ = select.select([self._reply_read], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise TimeoutError(f"chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._reply_read, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> str:
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        return self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def text(self, session: str) -> str:
        result = self.send("Runtime.evaluate", {"expression": PAGE_TEXT_JS, "returnByValue": True}, session)
        return result["result"].get("value", "")

    def screenshot(self, session: str, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, session)["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._command_write)
        os.close(self._reply_read)


def _table_value(value: float) -> str:
    """How the HParams table prints a number: 5 significant digits, trailing zeros kept."""
    return "%#.5g" % value


@pytest.mark.browser
@pytest.mark.slow
def test_hparams_page_in_a_real_browser(tiny_study, tmp_path):
    """`dastudy study tensorboard` on a finished study, the HParams page rendered by headless chromium."""
    executable = _chromium()
    if executable is None:
        pytest.skip("chromium is not installed (`make browser` installs it with apt-get); browser check skipped")
    from study.report import load_study

    trials = {f"{t.name}/run/tb": t for t in load_study(tiny_study).trials}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "study.cli", "study", "tensorboard", str(tiny_study), "--port",
                               str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        url = f"http://127.0.0.1:{port}/#hparams"
        assert f"http://127.0.0.1:{port}/" in line, line + server.stderr.read()
        flags = [executable, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                 "--window-size=1600,1000", "--virtual-time-budget=15000"]
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0 and "<tf-hparams-dashboard" in dom.stdout, dom.stderr[-2000:]
        assert "<title>dastudy: tiny</title>" in dom.stdout
        cli_shot = tmp_path / "hparams_cli.png"
        subprocess.run([*flags, f"--screenshot={cli_shot}", url], capture_output=True, timeout=120, check=True)
        assert cli_shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # --dump-dom cannot see into shadow roots, where the HParams table lives: read the rendered text over
        # the DevTools protocol once every trial row is on screen.
        browser = HeadlessChromium(executable)
        try:
            session = browser.open(url)
            deadline = time.monotonic() + 45
            text = ""
            while time.monotonic() < deadline:
                text = browser.text(session)
                if all(run in text for run in trials) and "Color by" in text:
                    break
                time.sleep(0.5)
            shot = tmp_path / "hparams.png"
            browser.screenshot(session, shot)
        finally:
            browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            assert server.wait(90) == 0
        finally:
            if server.poll() is None:
                server.kill()

    lines = text.splitlines()
    assert f"Number of matching session groups: {len(trials)}" in lines
    table = lines[lines.index("Show Metrics") + 1:lines.index("Color by")]
    columns = table[:min(table.index(run) for run in trials)]
    assert columns == ["adapt.lambda_adv_main", "optim.lr", "val/mIoU13", "val/mIoU16", "trial/pruned"]
    for run, trial in trials.items():
        row = table[table.index(run) + 1:table.index(run) + 1 + len(columns)]
        assert row[2] == _table_value(trial.metric), (run, row)  # the trial's last val/mIoU13
        assert row[3] == _table_value(trial.final["val/mIoU16"]), (run, row)
        assert row[4] == _table_value(1.0 if trial.status == "pruned" else 0.0), (run, row)

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    if not DOCS_SCREENSHOT.exists() or os.environ.get("DASTUDY_UPDATE_DOCS_IMG") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)

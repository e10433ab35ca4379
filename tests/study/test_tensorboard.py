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
from test_report import TRIALS, make_study  # noqa: E402  (the fixture study of the report tests)

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "img" / "tensorboard_hparams.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("tb"), name="tbstudy", tensorboard=True)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_start_lists_every_trial_run_and_stops_cleanly(study_dir):
    port = free_port()
    board = start(study_dir, port=port)
    try:
        assert board.url == f"http://127.0.0.1:{port}/"
        runs = json.loads(_get(board.url + "data/runs"))
        assert sorted(runs) == sorted([f"{p.name}/run/tb" for p in study_dir.glob("trial_*")] + ["baseline/tb"])
        assert not port_is_free("127.0.0.1", port)
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
        assert parent.wait(30) == 0
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


def _expected_rows(study: Path) -> dict[str, str]:
    """Run name → the HParams table's rendering of its last val/mIoU13 (5 significant digits)."""
    out = {}
    for trial_dir in sorted(study.glob("trial_*")):
        last = json.loads((trial_dir / "result.json").read_text().splitlines()[-1])
        out[f"{trial_dir.name}/run/tb"] = f"{last['val/mIoU13']:.5g}"
    return out


@pytest.mark.browser
def test_hparams_page_in_a_real_browser(study_dir, tmp_path):
    executable = _chromium()
    if executable is None:
        pytest.skip("chromium is not installed (`make browser` installs it with apt-get); browser check skipped")
    port = free_port()
    with start(study_dir, port=port) as board:
        url = board.hparams_url
        flags = [executable, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                 "--window-size=1600,1000", "--virtual-time-budget=15000"]
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0 and "<tf-hparams-dashboard" in dom.stdout, dom.stderr[-2000:]  # the HParams tab rendered
        assert "<title>dastudy: tbstudy</title>" in dom.stdout
        cli_shot = tmp_path / "hparams_cli.png"
        subprocess.run([*flags, f"--screenshot={cli_shot}", url], capture_output=True, timeout=120, check=True)
        assert cli_shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # --dump-dom cannot see into shadow roots, where the HParams table lives: read the rendered text over
        # the DevTools protocol once every trial row is on screen.
        expected = _expected_rows(study_dir)
        browser = HeadlessChromium(executable)
        try:
            session = browser.open(url)
            deadline = time.monotonic() + 45
            text = ""
            while time.monotonic() < deadline:
                text = browser.text(session)
                if all(run in text for run in expected):
                    break
                time.sleep(0.5)
            lines = text.splitlines()
            shot = tmp_path / "hparams.png"
            browser.screenshot(session, shot)
        finally:
            browser.close()

    assert f"Number of matching session groups: {len(expected)}" in lines
    for column in ("adapt.lambda_adv_main", "optim.lr@deeplabv2_tiny", "val/mIoU13", "val/mIoU16", "trial/pruned"):
        assert column in lines
    table = lines[lines.index("Show Metrics"):]
    for run, value in expected.items():
        row = table[table.index(run):table.index(run) + 7]
        assert value in row, (run, row)  # the metric column shows the trial's last val/mIoU13
    pruned = {run: table[table.index(run) + 6] for run in expected}
    assert sorted(pruned.values()).count("1.0000") == sum(fate == "pruned" for *_, fate in TRIALS)
    assert "baseline/tb" not in table[:table.index("Color by")]  # no HParams session: not a table row

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    if not DOCS_SCREENSHOT.exists() or os.environ.get("DASTUDY_UPDATE_DOCS_IMG") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)

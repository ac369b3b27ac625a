"""Real-browser helpers: start `foleyloop ui` on a free port and drive headless Chromium against it.

Chromium's own ``--screenshot`` / ``--dump-dom`` with ``--virtual-time-budget=60000`` are tried first. On virtual
time the browser does not wait for WebSocket traffic, which is how Streamlit delivers a page, so on a busy
machine it often captures the loading skeleton (measured here: 0 of 6 tries with the load average near 8). When
that happens the same headless browser, with the same flags but real time, is driven over the DevTools protocol
until the page script has finished, and the capture is taken then.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
BASE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1400,1000"]
VIRTUAL_TIME = "--virtual-time-budget=60000"
DONE_JS = ("(() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
           " return !!app && app.dataset.testScriptState === 'notRunning'"
           " && app.dataset.testConnectionState === 'CONNECTED'; })()")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the studio exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not become healthy in {timeout_s:.0f} s")


@dataclass
class Studio:
    url: str
    proc: subprocess.Popen  # `foleyloop ui` execs Streamlit, so this is the server process itself

    def wait_idle(self, quiet_s: float = 0.5, timeout_s: float = 90) -> bool:
        """Wait until the server stops using CPU (a page script left running by an earlier visit slows the
        next visit's WebSocket handshake)."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        end = time.monotonic() + timeout_s
        last, quiet_since = sum(proc.cpu_times()[:2]), time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.25)
            now = sum(proc.cpu_times()[:2])
            if now - last > 0.02:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return True
            last = now
        return False


@contextmanager
def studio(db: Path, log_path: Path) -> Iterator[Studio]:
    """`python -m agent.cli --db DB ui --port P --host 127.0.0.1` in its own session, on a free port."""
    port = free_port()
    argv = [sys.executable, "-m", "agent.cli", "--db", str(db), "ui", "--port", str(port), "--host", "127.0.0.1"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            yield Studio(url, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Capture:
    dom: str
    png: Path | None
    method: str  # "virtual-time" (Chromium's --dump-dom/--screenshot) or "devtools"

    @property
    def finished(self) -> bool:
        return 'data-test-script-state="notRunning"' in self.dom

    def text(self) -> str:
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", self.dom))


# ---- Chromium's command-line capture (virtual time) --------------------------------------------------------------
def _cli(url: str, *mode: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        return subprocess.run([str(CHROMIUM), *BASE_FLAGS, VIRTUAL_TIME, f"--user-data-dir={profile}", *mode, url],
                              capture_output=True, timeout=timeout_s)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def dump_dom(url: str) -> str:
    return _cli(url, "--dump-dom").stdout.decode("utf-8", "replace")


def screenshot(url: str, out: Path) -> Path | None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    _cli(url, f"--screenshot={out}")
    return out if out.is_file() else None


# ---- the same browser over the DevTools protocol (real time, waits for the page script) --------------------------
class DevTools:
    def __init__(self, timeout_s: float = 60):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.proc = subprocess.Popen([str(CHROMIUM), *BASE_FLAGS, f"--user-data-dir={self.profile}",
                                      "--remote-debugging-port=0", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = self._port(timeout_s)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout_s)
        self._id = 0

    def _port(self, timeout_s: float) -> int:
        active = Path(self.profile) / "DevToolsActivePort"
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if active.is_file() and active.read_text().strip():
                return int(active.read_text().split()[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


def devtools_capture(url: str, png: Path | None, must_contain: list[str], timeout_s: float = 90,
                     settle_s: float = 2.0) -> Capture:
    """Navigate, wait until the script has finished and ``must_contain`` is on the page, let charts draw, capture."""
    tools = DevTools()
    try:
        tools.call("Page.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
        tools.call("Page.navigate", url=url)
        end = time.monotonic() + timeout_s
        checks = " && ".join([DONE_JS] + [f"document.body.innerText.includes({json.dumps(s)})" for s in must_contain])
        while time.monotonic() < end and not tools.evaluate(checks):
            time.sleep(0.25)
        time.sleep(settle_s)  # vega-lite draws its canvases after the script has finished
        if png is not None:
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"]))
        return Capture(tools.evaluate("document.documentElement.outerHTML") or "", png, "devtools")
    finally:
        tools.close()


# ---- what the tests call -----------------------------------------------------------------------------------------
def ink_fraction(png: Path, dark: int = 110) -> float:
    """Share of dark pixels: Streamlit's loading skeleton has none, a rendered page has text and charts."""
    from PIL import Image

    with Image.open(png) as im:
        gray = im.convert("L")
        return sum(gray.histogram()[:dark]) / (gray.width * gray.height)


def capture(server: Studio, path: str, png: Path | None, must_contain: list[str], cli_tries: int = 2,
            min_ink: float = 0.002) -> Capture:
    """DOM (and a screenshot) of a fully rendered page: Chromium's CLI on virtual time first, DevTools if needed."""
    url = server.url + path
    for _ in range(cli_tries):
        server.wait_idle()
        cap = Capture(dump_dom(url), None, "virtual-time")
        if cap.finished and all(s in cap.text() for s in must_contain):
            if png is None:
                return cap
            server.wait_idle()
            shot = screenshot(url, png)
            if shot is not None and ink_fraction(shot) >= min_ink:
                return Capture(cap.dom, shot, cap.method)
    server.wait_idle()
    return devtools_capture(url, png, must_contain)

"""Headless Chromium driven over the DevTools protocol, for scripts that look at a UI the way a
person does (docs/tools/label_studio_screenshot.py, benchmarks/ui_tour.py). Needs `chromium`
(Debian: `apt-get install chromium`). Why not Playwright or Selenium: both download their own browser
build at install time, which this offline machine cannot; the protocol over one websocket is enough
for open, wait, click and screenshot."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from PIL import Image
from websockets.sync.client import connect

from tests.mlflow_server import free_port

WIDTH, HEIGHT = 1400, 900


class Browser:
    """Headless Chromium driven over the DevTools protocol: one page, commands by id."""

    def __init__(self, profile: Path) -> None:
        port = free_port()
        self.process = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
             f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            self._connect(port)
        except BaseException:
            self.close()
            raise

    def _connect(self, port: int) -> None:
        deadline, pages = time.monotonic() + 30, list[dict]()
        while not pages:
            if time.monotonic() > deadline:
                raise RuntimeError("Chromium's DevTools endpoint did not answer in 30 s")
            try:
                pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
            except httpx.TransportError:
                time.sleep(0.3)
        self.socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params: object) -> dict:
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            message = json.loads(self.socket.recv())
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message["result"])

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, ready: str, settle_s: float = 3.0, timeout_s: float = 60.0) -> None:
        """Navigate, wait until the JavaScript expression `ready` is true (the app has rendered), then settle."""
        self.call("Page.navigate", url=url)
        self.wait(f"document.readyState === 'complete' && ({ready})", settle_s, timeout_s)

    def wait(self, condition: str, settle_s: float = 1.0, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(f"!!({condition})"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.evaluate('location.href')}: `{condition}` not true after {timeout_s} s")
            time.sleep(0.5)
        time.sleep(settle_s)

    def screenshot(self, path: Path) -> None:
        """A PNG of the viewport, in 256 colours to keep it small for the docs."""
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(path, optimize=True)
        print(f"{path} ({path.stat().st_size // 1024} KB)")

    def close(self) -> None:
        if hasattr(self, "socket"):
            self.socket.close()
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)

"""A real `mlflow server` for tests: a SQLite (or given PostgreSQL) backend and served artifacts in a temporary folder,
bound to 127.0.0.1 on a free port, one worker (~500 MB instead of ~2.8 GB for the default four).

It runs in its own session (process group) with its own HOME, and is stopped by that group's id
when the `with` block ends, passed or failed: SIGTERM, then SIGKILL if it has not gone in 30 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 120  # ~5 s when idle; the two shared cores can be busy with other tests


@dataclass(frozen=True)
class MlflowServer:
    url: str            # http://127.0.0.1:<port>, what MLFLOW_TRACKING_URI is set to
    folder: Path        # holds mlflow.db, artifacts/ and server.log
    pid: int

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def mlflow_server(folder: Path, backend_store_uri: str | None = None) -> Iterator[MlflowServer]:
    """Start the server, wait until GET /health answers, yield it; always stop it. A database
    backend (PostgreSQL) gets `mlflow db upgrade` first, as a team's set-up does."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "home").mkdir(exist_ok=True)
    port = free_port()
    env = {**os.environ, "HOME": str(folder / "home"), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    backend_store_uri = backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}"
    if not backend_store_uri.startswith("sqlite:"):
        subprocess.run([str(BIN / "mlflow"), "db", "upgrade", backend_store_uri], env=env, cwd=folder, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=STARTUP_TIMEOUT_S)
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_store_uri,
               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    with (folder / "server.log").open("w") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            server = MlflowServer(f"http://127.0.0.1:{port}", folder, process.pid)
            _wait_until_healthy(server, process)
            yield server
        finally:
            _stop(process)


def _wait_until_healthy(server: MlflowServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n"
                               f"{(server.folder / 'server.log').read_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not answer /health in {STARTUP_TIMEOUT_S} s:\n"
                               f"{(server.folder / 'server.log').read_text()}")
        time.sleep(0.3)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The server's whole process group (uvicorn and its worker), by id: SIGTERM, then SIGKILL."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

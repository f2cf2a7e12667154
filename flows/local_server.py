"""A real `prefect server` on loopback, for as long as a block needs it: `transferflow serve`
without PREFECT_API_URL, and the integration tests' session server.

Schedules, triggers and global concurrency limits need a server that outlives one flow run, which
the ephemeral engine is not. The UI takes the address of its API from PREFECT_UI_API_URL, not from
`--port` (a UI on another port otherwise calls port 4200), so both are set to the chosen port.
The server is stopped by its PID on the way out, whatever happened inside the block.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import TransferflowError

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0  # ~9 s when idle; several times that on two busy cores
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LocalServer:
    pid: int
    port: int
    home: Path
    log: Path

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def server_environment(home: Path, port: int) -> dict[str, str]:
    """What `prefect server start --host 127.0.0.1 --port PORT` needs for a UI that reaches its API."""
    api_url = f"http://{HOST}:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": HOST, "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def answers(api_url: str, timeout: float = 2.0) -> bool:
    """Whether `GET <api_url>/health` answers `true`."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.read().strip() == b"true"
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def local_prefect_server(home: Path, port: int | None = None,
                        environment: dict[str, str] | None = None) -> Iterator[LocalServer]:
    """Start `prefect server start` on 127.0.0.1 (a free port unless given) with its own
    PREFECT_HOME, wait until /api/health answers, yield it, and stop it by PID on exit.
    `environment` adds server settings, e.g. PREFECT_API_DATABASE_CONNECTION_URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = home / f"server-{port}.log"
    with log.open("ab") as output:
        process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", HOST,
                                    "--port", str(port)], env={**server_environment(home, port), **(environment or {})},
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # Ctrl-C reaches us, and we stop it in order
    server = LocalServer(process.pid, port, home, log)
    try:
        wait_until_healthy(process, server)
        yield server
    finally:
        stop(process)


def wait_until_healthy(process: subprocess.Popen[bytes], server: LocalServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(server.api_url):
        if process.poll() is not None or time.monotonic() > deadline:
            why = f"exited with code {process.returncode}" if process.returncode is not None else "did not answer"
            raise TransferflowError(f"The local Prefect server on port {server.port} {why} within "
                                    f"{START_TIMEOUT_S:.0f} s (log: {server.log}). Fix: see the log's end, or "
                                    "start a server yourself and set PREFECT_API_URL.")
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's PID; SIGKILL to its process group if it has not exited in time."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def server_for_dask_workers(needed: bool) -> Iterator[None]:
    """Dask workers are other processes. On the ephemeral engine each starts its own temporary API
    server on the same SQLite file (the first task took 28-32 s here, against 7 s on a real server),
    so with PREFECT_API_URL unset this command starts one real server on loopback, on the
    PREFECT_HOME the engine would use, and exports its URL before the cluster spawns a worker.
    The server is stopped by its PID when the block ends."""
    if not needed or os.environ.get("PREFECT_API_URL"):
        yield
        return
    with local_prefect_server(Path(os.environ["PREFECT_HOME"])) as server:
        print(f"Dask task runner: a local Prefect server for this run at {server.ui_url}", flush=True)
        os.environ["PREFECT_API_URL"] = server.api_url  # before Prefect is imported: its settings read it
        try:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: server.api_url}):
                try:
                    yield
                finally:
                    drain_to_server()
        finally:
            os.environ.pop("PREFECT_API_URL", None)


def drain_to_server(timeout_s: float = 15.0) -> None:
    """Send the logs and events Prefect still holds to the server before it stops. Left queued,
    Prefect's background workers retry the closed port when the process exits (a minute here,
    ending in "Error logging to API")."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=timeout_s)

"""A real Label Studio server for tests: `label-studio start` from its own virtual environment
(`make label-studio` creates it: a Django application with its own pins, never in transferflow's),
bound to 127.0.0.1 on a free port, with a temporary data folder (SQLite, uploads) and HOME.

The user and both kinds of API key are made without a browser:
- `--username/--password/--user-token --enable-legacy-api-token` on `label-studio start` create the
  user, its legacy token (`Authorization: Token <key>`) and an organization that accepts it (new
  organizations accept only personal access tokens by default);
- the personal access token (a JWT refresh token, what the UI hands out today) comes from
  `POST /api/token/`. `label-studio-sdk` takes either as `api_key`: it tells them apart and trades a
  personal access token for short-lived `Bearer` access tokens itself.

Migrating a fresh SQLite database takes ~55 s on two busy cores, so the migrated database is made
once per Label Studio install (`<venv>/transferflow-template/`, under a file lock: two pytest
workers may ask at once) and copied for each server; a server then answers /health in ~7 s.

Analytics, Sentry error reports and the PyPI version check are off. The server runs in its own
session (process group) and is stopped by that group's id when the `with` block ends, passed or
failed: SIGTERM, then SIGKILL if it has not gone in 30 s.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.mlflow_server import free_port

# The Makefile's LABEL_STUDIO_VENV; a different one can be named in the environment.
DEFAULT_VENV = Path(__file__).resolve().parents[1] / ".labelstudio-venv"
USERNAME = "labeller@example.com"
PASSWORD = "tf-test-password"  # (a throwaway server on loopback, removed after the tests)
STARTUP_TIMEOUT_S = 240.0      # ~7 s from the template, ~65 s migrating; the two shared cores can be busy
STOP_TIMEOUT_S = 30.0
DATABASE = "label_studio.sqlite3"

# Nothing leaves the machine: Sentry's default DSN is cleared, analytics and the version check are
# off. And nobody else on the machine can sign up to the test server.
QUIET_ENV = {"SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
             "LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}


@dataclass(frozen=True)
class LabelStudioServer:
    url: str            # http://127.0.0.1:<port>, what LABEL_STUDIO_URL is set to
    api_key: str        # a personal access token (JWT refresh token), what LABEL_STUDIO_API_KEY is set to
    legacy_token: str   # the same user's legacy token: `Authorization: Token <legacy_token>`
    username: str
    password: str
    folder: Path        # holds data/ (SQLite, media/upload), home/ and server.log
    pid: int

    def access_token(self) -> str:
        """A short-lived access token for raw HTTP calls (`Authorization: Bearer <token>`), as the
        sdk gets one: the personal access token is a refresh token and is refused as a Bearer."""
        response = httpx.post(f"{self.url}/api/token/refresh/", json={"refresh": self.api_key}, timeout=30)
        response.raise_for_status()
        return str(response.json()["access"])

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token()}"}


def label_studio_venv() -> Path:
    """The virtual environment with `label-studio`; a skip, or under CI a failure, when absent."""
    venv = Path(os.environ.get("LABEL_STUDIO_VENV", DEFAULT_VENV)).resolve()
    if not (venv / "bin" / "label-studio").exists():
        reason = f"Label Studio is not installed in {venv} (`make label-studio` installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)
    return venv


def _base_env(home: Path, data: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LABEL_STUDIO_", "DJANGO_")) and key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, **QUIET_ENV, "HOME": str(home), "LABEL_STUDIO_BASE_DATA_DIR": str(data)}


def _manage_py(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages/label_studio/manage.py"))
    if not found:
        raise RuntimeError(f"no label_studio/manage.py under {venv}")
    return found[0]


def template_database(venv: Path) -> Path:
    """The migrated, empty SQLite database for this Label Studio install, made on first use."""
    template = venv / "transferflow-template"
    database = template / DATABASE
    with (venv / "transferflow-template.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other pytest worker waits here, then finds it made
        if database.exists():
            return database
        building = Path(tempfile.mkdtemp(prefix="building-", dir=venv))
        try:
            (building / "home").mkdir()
            env = {**_base_env(building / "home", building), "SECRET_KEY": secrets.token_urlsafe(50)}
            subprocess.run([str(venv / "bin" / "python"), str(_manage_py(venv)), "migrate", "--no-color", "-v", "0"],
                           cwd=building, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True,
                           timeout=900)
            template.mkdir(exist_ok=True)
            shutil.copyfile(building / DATABASE, template / f"{DATABASE}.part")
            os.replace(template / f"{DATABASE}.part", database)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return database


@contextmanager
def label_studio_server(folder: Path) -> Iterator[LabelStudioServer]:
    """Start the server, wait until GET /health answers, make the personal access token, yield; always stop it."""
    venv = label_studio_venv()
    folder.mkdir(parents=True, exist_ok=True)
    data, home = folder / "data", folder / "home"
    data.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    shutil.copyfile(template_database(venv), data / DATABASE)
    legacy_token = secrets.token_hex(20)
    env = {**_base_env(home, data), "SECRET_KEY": secrets.token_urlsafe(50)}  # signs the JWTs
    port = free_port()
    command = [str(venv / "bin" / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(port), "--data-dir", str(data), "--username", USERNAME, "--password", PASSWORD,
               "--user-token", legacy_token, "--enable-legacy-api-token", "--log-level", "WARNING"]
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = _wait_until_healthy(process, log_path)
            api_key = _personal_access_token(url, legacy_token)
            yield LabelStudioServer(url, api_key, legacy_token, USERNAME, PASSWORD, folder, process.pid)
        finally:
            _stop(process)


def _wait_until_healthy(process: subprocess.Popen[bytes], log_path: Path) -> str:
    """The URL the server really listens on (`label-studio start` moves to the next port if the one
    given was taken meanwhile: its log's "Starting development server at" line says), once /health is 200."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url = None
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"label-studio exited with {process.returncode}:\n{log_path.read_text()}")
        if url is None:
            found = re.search(r"Starting development server at (http://[\d.]+:\d+)/", log_path.read_text())
            url = found.group(1) if found else None
        if url is not None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"label-studio did not answer /health in {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()}")
        time.sleep(0.3)


def _personal_access_token(url: str, legacy_token: str) -> str:
    """The user's personal access token, created as the UI's "Create token" button does."""
    response = httpx.post(f"{url}/api/token/", headers={"Authorization": f"Token {legacy_token}"}, timeout=60)
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/token/ answered {response.status_code}: {response.text}")
    return str(response.json()["token"])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The server's whole process group, by id: SIGTERM, then SIGKILL."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)

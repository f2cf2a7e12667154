"""A server that is down, or a variable that names the wrong thing: the real command answers with
one line naming the variable and the fix, exit code 2, no traceback, and creates nothing.

Each command runs with a 60 s limit: without the pre-flight check, MLflow's REST client would
retry a refused connection for minutes, so a missing check fails here by timing out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows.preflight import (
    ServerUnreachableError,
    check_dask_scheduler,
    check_mlflow_reachable,
    check_prefect_reachable,
    hide_password,
)
from flows.runtime import ALLOCATOR_SETTINGS
from tests.conftest import write_config
from tests.mlflow_server import free_port

CONFIG = """
task: Flag SMS messages that are spam.
metric: {{name: accuracy, target: 0.5}}
data: {{kind: csv_text, path: {data}}}
model: {{family: hf_text, name: all-MiniLM-L6-v2, max_tokens: 16}}
registry: {{model_name: sms}}
workdir: {workdir}
"""


class NotFound(BaseHTTPRequestHandler):
    """A web server that is neither MLflow nor Prefect: every path is 404."""

    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_web_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def nothing_listening() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    data = tmp_path / "sms.csv"
    data.write_text("text,label\n" + "".join(f"message {i},{'spam' if i % 2 else 'ham'}\n" for i in range(40)))
    return write_config(tmp_path, CONFIG.format(data=data, workdir=tmp_path / "work"))


def transferflow(args: list[str], cwd: Path, **variables: str) -> tuple[int, list[str]]:
    """The command as a user runs it, with only the given server variables set."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    result = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            env={**env, **ALLOCATOR_SETTINGS, **variables}, capture_output=True, text=True,
                            timeout=60)
    return result.returncode, (result.stdout + result.stderr).strip().splitlines()


def assert_one_line_and_nothing_created(code: int, lines: list[str], folder: Path, *phrases: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(phrase in lines[0] for phrase in (*phrases, "Fix:")), lines[0]
    assert not (folder / "work").exists()
    assert not [p for p in folder.rglob("*") if p.name in ("mlflow.db", "mlruns", "mlartifacts", ".transferflow")]


def test_run_with_mlflow_server_down(tmp_path, config, nothing_listening):
    code, lines = transferflow(["run", str(config)], tmp_path, MLFLOW_TRACKING_URI=nothing_listening)
    assert_one_line_and_nothing_created(code, lines, tmp_path, f"MLFLOW_TRACKING_URI={nothing_listening} does "
                                                               "not answer (connection refused)", "mlflow server")


def test_run_with_prefect_server_down(tmp_path, config, nothing_listening):
    url = f"{nothing_listening}/api"
    code, lines = transferflow(["run", str(config)], tmp_path, PREFECT_API_URL=url)
    assert_one_line_and_nothing_created(code, lines, tmp_path, f"PREFECT_API_URL={url} does not answer",
                                        "prefect server start", "unset PREFECT_API_URL")


def test_validate_with_prefect_url_that_is_another_web_server(tmp_path, config, other_web_server):
    """The classic slip: the server's address without `/api`."""
    code, lines = transferflow(["validate", str(config)], tmp_path, PREFECT_API_URL=other_web_server)
    assert_one_line_and_nothing_created(code, lines, tmp_path, f"PREFECT_API_URL={other_web_server} answers, "
                                                               "but not as a Prefect API", "HTTP 404", "/api")


def test_predict_with_mlflow_server_down(tmp_path, nothing_listening):
    texts = tmp_path / "texts.csv"
    texts.write_text("text\nhello\n")
    code, lines = transferflow(["predict", "models:/sms@champion", str(texts)], tmp_path,
                               MLFLOW_TRACKING_URI=nothing_listening)
    assert_one_line_and_nothing_created(code, lines, tmp_path, "MLFLOW_TRACKING_URI", "does not answer")


def test_drift_with_mlflow_server_down(tmp_path, config, nothing_listening):
    batch = tmp_path / "incoming.csv"
    batch.write_text("text\n" + "".join(f"new message {i}\n" for i in range(20)))
    code, lines = transferflow(["drift", str(config), "--incoming", str(batch)], tmp_path,
                               MLFLOW_TRACKING_URI=nothing_listening)
    assert_one_line_and_nothing_created(code, lines, tmp_path, f"MLFLOW_TRACKING_URI={nothing_listening} does "
                                                               "not answer")


def test_predict_with_a_tracking_uri_without_scheme(tmp_path):
    texts = tmp_path / "texts.csv"
    texts.write_text("text\nhello\n")
    code, lines = transferflow(["predict", "models:/sms@champion", str(texts)], tmp_path,
                               MLFLOW_TRACKING_URI="localhost:5000")
    assert_one_line_and_nothing_created(code, lines, tmp_path, "MLFLOW_TRACKING_URI=localhost:5000",
                                        "no store for the scheme 'localhost'", "http://HOST:PORT")


@pytest.mark.parametrize("uri", ["", "sqlite:///somewhere/mlflow.db", "file:///tmp/mlruns", "/tmp/mlruns",
                                 "databricks"])
def test_local_stores_are_not_contacted(monkeypatch, uri):
    """Only servers and PostgreSQL databases are checked; MLflow opens local stores itself: nothing
    is requested and no socket connects (both recorded), and the check passes."""
    import socket

    import flows.preflight as preflight

    contacts = []
    monkeypatch.setattr(preflight, "_get", lambda url: contacts.append(url) or (200, "HTTP 200"))
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: contacts.append(address))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    check_mlflow_reachable()
    assert contacts == []


def test_an_http_store_is_contacted_once_at_its_health_endpoint(monkeypatch):
    """The counterpart that proves the recording works: an http store is asked GET /health."""
    import flows.preflight as preflight

    asked = []
    monkeypatch.setattr(preflight, "_get", lambda url: asked.append(url) or (200, "HTTP 200"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999/")
    check_mlflow_reachable()
    assert asked == ["http://127.0.0.1:5999/health"]


def test_an_unset_prefect_url_means_the_local_engine(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    check_prefect_reachable()


def test_mlflow_uri_that_is_another_web_server(monkeypatch, other_web_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other_web_server)
    with pytest.raises(ServerUnreachableError, match=r"answers, but not as an MLflow server \(GET /health: HTTP 404"):
        check_mlflow_reachable()


@pytest.mark.parametrize("url", ["127.0.0.1:4200/api", "ftp://127.0.0.1/api"])
def test_prefect_url_that_is_not_http(monkeypatch, url):
    monkeypatch.setenv("PREFECT_API_URL", url)
    with pytest.raises(ServerUnreachableError, match=f"PREFECT_API_URL={url}: not an http"):
        check_prefect_reachable()


@pytest.mark.parametrize("variable", ["MLFLOW_TRACKING_URI", "PREFECT_API_DATABASE_CONNECTION_URL"])
def test_an_unreachable_postgresql_database_is_one_line_without_its_password(monkeypatch, variable):
    """Nothing listens on the port: the login fails at once. (A wrong password against a real
    server: tests/integration/test_team_servers.py.)"""
    uri = f"postgresql+asyncpg://tf:s3cret@127.0.0.1:{free_port()}/prefect"
    monkeypatch.setenv(variable, uri)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    check = check_mlflow_reachable if variable == "MLFLOW_TRACKING_URI" else check_prefect_reachable
    with pytest.raises(ServerUnreachableError) as raised:
        check()
    message = str(raised.value)
    assert message.startswith(f"{variable}=postgresql+asyncpg://tf:***@127.0.0.1:") and "s3cret" not in message
    assert "refused or did not answer" in message and "Fix:" in message


def test_the_prefect_database_is_not_contacted_when_a_server_is_set(monkeypatch):
    """With PREFECT_API_URL set, the server owns its database: only its /health is asked."""
    import flows.preflight as preflight

    asked = []
    monkeypatch.setattr(preflight, "_get", lambda url: asked.append(url) or (200, "HTTP 200"))
    monkeypatch.setattr(preflight, "check_database_login", lambda *args: asked.append(args))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4299/api")
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://tf:x@127.0.0.1:1/prefect")
    check_prefect_reachable()
    assert asked == ["http://127.0.0.1:4299/api/health"]


@pytest.mark.parametrize(("uri", "shown"), [
    ("postgresql://tf:pa:ss@db:5432/mlflow", "postgresql://tf:***@db:5432/mlflow"),
    ("postgresql+psycopg://tf:p%40ss@db/mlflow?sslmode=require", "postgresql+psycopg://tf:***@db/mlflow?sslmode=require"),
    ("postgresql://tf@db/mlflow", "postgresql://tf@db/mlflow"),
])
def test_passwords_are_hidden(uri, shown):
    assert hide_password(uri) == shown


def test_a_dask_scheduler_that_does_not_answer_is_one_line_with_the_fix(tmp_path):
    """Through the real command: a config on Dask whose scheduler is down stops before anything starts."""
    data = tmp_path / "sms.csv"
    data.write_text("text,label\n" + "".join(f"message {i},{'spam' if i % 2 else 'ham'}\n" for i in range(40)))
    address = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, CONFIG.format(data=data, workdir=tmp_path / "work")
                          + f"runtime: {{task_runner: dask, dask: {{address: '{address}'}}}}\n")
    code, lines = transferflow(["run", str(config)], tmp_path)
    assert_one_line_and_nothing_created(code, lines, tmp_path, f"runtime.dask.address {address}: no Dask scheduler "
                                        "answers (connection refused)", "dask scheduler")


@pytest.mark.parametrize("address", ["127.0.0.1", "http://127.0.0.1:8786", "tcp://127.0.0.1:port"])
def test_a_dask_address_that_is_no_scheduler_address(address):
    with pytest.raises(ServerUnreachableError, match=f"runtime.dask.address {re.escape(address)}: .*Fix: start it"):
        check_dask_scheduler(address)


def test_a_listening_scheduler_port_passes():
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_dask_scheduler(f"tcp://127.0.0.1:{listening.getsockname()[1]}")

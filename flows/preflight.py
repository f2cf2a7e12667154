"""Pre-flight checks of the servers a command will talk to, before any heavy work starts.

Without them a wrong PREFECT_API_URL or MLFLOW_TRACKING_URI shows up minutes later: MLflow's REST
client retries a refused connection with exponential backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES),
and the failure ends in a traceback. Here one GET of the server's health endpoint, with a short
timeout, answers in a second with one line naming the variable and the fix. Only the standard
library is used, so the CLI stays quick to start.

A PostgreSQL URI the command itself connects to (MLFLOW_TRACKING_URI as a database, or
PREFECT_API_DATABASE_CONNECTION_URL for the Prefect engine or server this command starts) gets one
login attempt, through asyncpg (which Prefect ships), so a wrong password or an unreachable
database is one line before anything is written, not a SQLAlchemy traceback mid-run.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from importlib.metadata import entry_points
from urllib.parse import urlsplit, urlunsplit

from tasks.core.errors import TransferflowError

TIMEOUT_S = 5.0
# MLflow's own tracking-store schemes; plugins add theirs as `mlflow.tracking_store` entry points.
DATABASE_ENGINES = ("sqlite", "postgresql", "mysql", "mssql")
MLFLOW_SCHEMES = ("", "file", "databricks", "databricks-uc", "uc", "http", "https")
LOCAL_STORE = "unset it to use the SQLite store in the workdir"
PREFECT_DATABASE_VARIABLE = "PREFECT_API_DATABASE_CONNECTION_URL"


class ServerUnreachableError(TransferflowError):
    """A configured MLflow or Prefect server does not answer, or is not what the variable says."""


def check_servers(*, mlflow: bool = False, prefect: bool = False, dask: str | None = None) -> None:
    """The checks a command needs: `run` both, `validate` Prefect, `predict` MLflow; and the Dask
    scheduler at `dask` (runtime.dask.address) when the config names one."""
    if prefect:
        check_prefect_reachable()
    if mlflow:
        check_mlflow_reachable()
    if dask:
        check_dask_scheduler(dask)


def check_dask_scheduler(address: str) -> None:
    """One TCP connection to the scheduler (TIMEOUT_S): Dask's own client would wait 30 s and end in
    a traceback."""
    import socket

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    fix = ("Fix: start it (`dask scheduler --host HOST`), correct the address, or remove runtime.dask.address to run "
           "a local cluster of worker processes for this run")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as error:
        raise ServerUnreachableError(f"runtime.dask.address {address}: {error}. {fix}.") from None
    if not host or not port or parts.scheme not in ("tcp", "tls"):
        raise ServerUnreachableError(f"runtime.dask.address {address}: not a scheduler address such as "
                                     f"tcp://127.0.0.1:8786. {fix}.")
    try:
        socket.create_connection((host, port), timeout=TIMEOUT_S).close()
    except OSError as error:
        raise ServerUnreachableError(f"runtime.dask.address {address}: no Dask scheduler answers "
                                     f"({_describe(error)}). {fix}.") from None


def check_mlflow_reachable() -> None:
    """An http(s) MLFLOW_TRACKING_URI must answer GET /health; any other URI needs a scheme
    MLflow has a store for (a typo such as `localhost:5000` would fail deep inside the flow)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    scheme = urlsplit(uri).scheme.lower()
    if _is_postgresql(uri):
        check_database_login("MLFLOW_TRACKING_URI", uri, LOCAL_STORE)
        return
    if scheme not in ("http", "https"):
        if scheme.split("+")[0] not in DATABASE_ENGINES and scheme not in MLFLOW_SCHEMES + _plugin_schemes():
            raise ServerUnreachableError(
                f"MLFLOW_TRACKING_URI={uri}: MLflow has no store for the scheme '{scheme}'. Fix: use "
                f"http://HOST:PORT of an MLflow server or a database URI such as sqlite:///PATH/mlflow.db, "
                f"or {LOCAL_STORE}.")
        return
    status, reason = _get(f"{uri.rstrip('/')}/health")
    if status is None:
        raise ServerUnreachableError(
            f"MLFLOW_TRACKING_URI={uri} does not answer ({reason}). Fix: start that MLflow server (e.g. `mlflow "
            f"server --host 127.0.0.1 --port 5000`), correct the URI, or {LOCAL_STORE}.")
    if status not in (200, 401, 403):  # a login wall is MLflow's to handle, with its own message
        raise ServerUnreachableError(
            f"MLFLOW_TRACKING_URI={uri} answers, but not as an MLflow server (GET /health: {reason}). Fix: "
            f"set it to the MLflow server's base URL (e.g. http://127.0.0.1:5000), or {LOCAL_STORE}.")


def check_prefect_reachable() -> None:
    """A set PREFECT_API_URL must answer GET <url>/health; unset, Prefect starts a local engine."""
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        database = os.environ.get(PREFECT_DATABASE_VARIABLE, "")
        if _is_postgresql(database):  # the engine or server this command starts will use it
            check_database_login(PREFECT_DATABASE_VARIABLE, database, f"unset {PREFECT_DATABASE_VARIABLE} to use "
                                 "Prefect's SQLite file, or set PREFECT_API_URL to a running server")
        return
    fix = ("correct the URL (it ends in /api, e.g. http://127.0.0.1:4200/api), or unset PREFECT_API_URL to run "
           "on a temporary local engine")
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ServerUnreachableError(f"PREFECT_API_URL={url}: not an http(s) URL. Fix: {fix}.")
    status, reason = _get(f"{url.rstrip('/')}/health")
    if status is None:
        raise ServerUnreachableError(
            f"PREFECT_API_URL={url} does not answer ({reason}). Fix: start the server (`prefect server start "
            f"--host 127.0.0.1 --port 4200`), or {fix}.")
    if status != 200:
        raise ServerUnreachableError(
            f"PREFECT_API_URL={url} answers, but not as a Prefect API (GET /health: {reason}). Fix: {fix}.")


def check_database_login(variable: str, uri: str, alternative: str) -> None:
    """Log in to the PostgreSQL database at `uri` once (TIMEOUT_S); the message hides the password."""
    import asyncio

    import asyncpg  # ships with Prefect

    parts = urlsplit(uri)
    plain = urlunsplit(("postgresql", *parts[1:]))  # asyncpg takes libpq's URI, without SQLAlchemy's +driver

    async def login() -> None:
        connection = await asyncpg.connect(plain, timeout=TIMEOUT_S)
        await connection.close()

    try:
        asyncio.run(login())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as error:
        raise ServerUnreachableError(
            f"{variable}={hide_password(uri)}: the database refused or did not answer ({_describe(error)}). Fix: "
            f"check the user, password, host, port and database name in it (the server's pg_hba.conf must allow "
            f"this host), or {alternative}.") from None


def hide_password(uri: str) -> str:
    """`uri` with its password, if any, replaced by ***: messages and logs never show it."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user_info, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user_info.split(':', 1)[0]}:***@{host}"))


def _is_postgresql(uri: str) -> bool:
    return urlsplit(uri).scheme.lower().split("+")[0] in ("postgresql", "postgres")


def _get(url: str) -> tuple[int | None, str]:
    """(HTTP status, a few words) for one GET; (None, why) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.status, f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return error.code, f"HTTP {error.code}"
    except urllib.error.URLError as error:
        return None, _describe(error.reason)
    except TimeoutError:
        return None, f"no answer in {TIMEOUT_S:g} s"
    except (ValueError, http.client.HTTPException) as error:  # e.g. a port that is not a number
        return None, str(error) or type(error).__name__
    except OSError as error:  # e.g. the connection reset mid-answer
        return None, _describe(error)


def _describe(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return f"no answer in {TIMEOUT_S:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[0].lower() + reason.strerror[1:]
    return str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__


def _plugin_schemes() -> tuple[str, ...]:
    return tuple(point.name for point in entry_points(group="mlflow.tracking_store"))

"""A real PostgreSQL server for tests: Debian's binaries, a temporary data folder, 127.0.0.1 on a
free port, and a real password (`initdb -A scram-sha-256 --pwfile`: with `-A trust` any password is
accepted, so a wrong-password test would prove nothing).

`initdb` refuses to run as root, so as root the cluster belongs to the `postgres` user, and its
folder sits directly in the system's temporary folder (pytest's own is private to root). The server
is stopped by its postmaster PID when the `with` block ends, passed or failed, and the folder removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mlflow_server import free_port

USER = "tf"
PASSWORD = "tf-test-password"  # (a throwaway cluster on loopback, removed after the tests)
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PostgresServer:
    port: int
    folder: Path
    bin: Path

    def uri(self, database: str, driver: str = "", password: str = PASSWORD) -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> str:
        """One statement through `psql`, as the tests' independent view of what the servers stored."""
        result = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                                 "-d", database, "-At", "-c", sql], env={**os.environ, "PGPASSWORD": PASSWORD},
                                capture_output=True, text=True, timeout=60, check=True)
        return result.stdout


def postgres_bin() -> Path:
    """The newest installed major version's bin/ (never assume 15); a skip, or under CI a failure."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        reason = "PostgreSQL is not installed (`make test` installs Debian's postgresql package)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)
    return found[-1].parent


@contextmanager
def postgres_server(databases: tuple[str, ...], extensions: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    """Start a cluster with `databases` (and `extensions`, database -> extension) and yield it."""
    bin_dir = postgres_bin()
    as_root = os.geteuid() == 0
    user = {"user": "postgres", "group": "postgres"} if as_root else {}
    folder = Path(tempfile.mkdtemp(prefix="transferflow-postgres-"))
    try:
        if as_root:
            shutil.chown(folder, "postgres", "postgres")
        (folder / "pwfile").write_text(PASSWORD + "\n")
        if as_root:
            shutil.chown(folder / "pwfile", "postgres", "postgres")
        port = free_port()
        data = folder / "data"
        subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "-A", "scram-sha-256",
                        "--pwfile", str(folder / "pwfile"), "--no-sync"], check=True, capture_output=True,
                       timeout=120, **user)
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
                        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120, **user)
        try:
            server = PostgresServer(port, folder, bin_dir)
            for database in databases:
                server.psql("postgres", f"CREATE DATABASE {database}")
            for database, extension in (extensions or {}).items():
                server.psql(database, f"CREATE EXTENSION IF NOT EXISTS {extension}")
            yield server
        finally:
            _stop(data)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _stop(data: Path) -> None:
    """SIGINT to the postmaster's PID (PostgreSQL's fast shutdown), then SIGKILL if it lingers."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while pid_file.exists() and time.monotonic() < deadline:  # the postmaster removes it on exit
            time.sleep(0.2)
        if pid_file.exists():
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return

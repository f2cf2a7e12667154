"""Integration fixtures: one real `prefect server` for the session (127.0.0.1, a free port, its
own temporary PREFECT_HOME, stopped by its PID even when tests fail), and small slices of the
real shared datasets written into a temporary folder."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_api(tmp_path_factory):
    """The server `transferflow serve` would start, used by in-process flows (settings) and by
    the commands the tests run (environment). Schedules, triggers and concurrency limits need it.
    The runners (`transferflow serve`) and workers the tests start ask it for runs every second
    rather than every 10 s (Prefect's defaults), so a run started by an event or freed by a
    concurrency slot does not sit waiting for the next poll."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.local_server import local_prefect_server

    with (local_prefect_server(tmp_path_factory.mktemp("prefect-server-home")) as server,
          temporary_settings({PREFECT_API_URL: server.api_url}), pytest.MonkeyPatch.context() as patch):
        patch.setenv("PREFECT_API_URL", server.api_url)
        patch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "1")
        patch.setenv("PREFECT_WORKER_QUERY_SECONDS", "1")
        yield server


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """A real MLflow tracking server for the session (per test worker), stopped by PID whatever happens."""
    from tests.mlflow_server import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server for the session (per test worker, started only where a test asks):
    `.url`, `.api_key` (a personal access token) and `.legacy_token`; stopped by PID whatever happens."""
    from tests.labelstudio_server import label_studio_server

    with label_studio_server(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture(autouse=True)
def default_mlflow_store(monkeypatch):
    """Each test's MLflow store is the SQLite file in its own workdir."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


SMS_CONFIG: dict[str, dict | str] = {
    "task": "Flag SMS messages that are spam.",
    "metric": {"name": "accuracy", "target": 0.5},
    "model": {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 32},
    "finetune": {"max_stages": 0},
    "registry": {"model_name": "sms-spam"},
}


def sms_config(folder: Path, data: Path, workdir: Path, **overrides: dict | str) -> Path:
    """`folder/config.yaml` for the SMS spam slice at `data` (classes ham and spam): the one config
    the text integration tests share. Each override replaces a section's keys (e.g.
    `train={"head_epochs": 10}` or `metric={"name": "f1", "class": "spam", "target": 0.5}`)."""
    import yaml

    config: dict[str, dict | str] = {section: dict(value) if isinstance(value, dict) else value
                                     for section, value in SMS_CONFIG.items()}
    for section, value in overrides.items():
        current = config.get(section)
        config[section] = {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value
    config["data"] = {"kind": "csv_text", "path": str(data), "classes": ["ham", "spam"]}
    config["workdir"] = str(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def hymenoptera_slice(source: Path, destination: Path, per_class: int) -> Path:
    """The first `per_class` JPEGs of each class in train/ and val/, linked (not copied)."""
    for split in ("train", "val"):
        for label_dir in sorted((source / split).iterdir()):
            target = destination / split / label_dir.name
            target.mkdir(parents=True)
            for image in sorted(label_dir.glob("*.jpg"))[:per_class]:
                (target / image.name).symlink_to(image)
    return destination


def csv_slice(source: Path, destination: Path, per_label: dict[str, int], duplicate_rows: int = 0) -> Path:
    """The first rows of each label, plus a few exact duplicates (which the flow must drop)."""
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    picked = [row for label, n in per_label.items() for row in [r for r in rows if r["label"] == label][:n]]
    picked += picked[:duplicate_rows]
    with destination.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in picked)
    return destination


def run_transferflow(args: list[str], cwd: Path, **env_overrides: str) -> tuple[int, str]:
    """The `transferflow` command as a user runs it, against the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    from flows.runtime import ALLOCATOR_SETTINGS

    env = {**os.environ, **ALLOCATOR_SETTINGS, "PREFECT_API_URL": PREFECT_API_URL.value(), **env_overrides}
    result = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr

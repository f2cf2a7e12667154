"""Promotion is all or nothing: a failure while the card (7c) or the drift reference (7d) is stored
leaves the old champion in place, no new version behind, the parent run tagged `decision:
incomplete` with the reason, and a clear error as the command's last word (exit 2).

The faults are injected at the project's own functions: the card's in the real `transferflow run`
process (`python -c` patches it, then calls the CLI: the exit code), the drift reference's in the
flow run in process (the same checks, without a second process start), against the session's real Prefect server and a
real SQLite MLflow store in the workdir. The champion in place is a real registered version
(tests/registered_models.py: MiniLM with an untrained head), so both faults meet one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.conftest import csv_slice, sms_config
from tests.registered_models import TEXT_MODEL, open_store, register, save_checkpoint

pytestmark = pytest.mark.integration
MODEL = "sms-all-or-nothing"
FAULTS = {  # where a release can break after the version is registered and before the alias moves
    "7c model card": "import tasks.reports.model_card as module; module.render_model_card = fail",
}


def run_with_fault(config: Path, cwd: Path, fault: str) -> tuple[int, str]:
    from prefect.settings import PREFECT_API_URL

    from flows.runtime import ALLOCATOR_SETTINGS

    patch = FAULTS[fault]
    program = ("def fail(*args, **kwargs):\n    raise OSError('injected: the artifact store is down')\n"
               f"{patch}\nfrom flows.cli import main\nmain()\n")
    env = {**os.environ, **ALLOCATOR_SETTINGS, "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run([sys.executable, "-c", program, "run", str(config)], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


def last_line(output: str) -> str:
    """The command's own last word: a clear error, not a traceback (Prefect's log of the failed
    task above it keeps the fault's traceback for whoever debugs the artifact store)."""
    return [line for line in output.splitlines() if line.strip()][-1]


def newest_parent_run(client: MlflowClient):
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time DESC"])
    return next(run for run in runs if "mlflow.parentRunId" not in run.data.tags)


def test_a_failed_card_or_drift_reference_promotes_nothing_and_leaves_nothing_behind(tmp_path):
    from tests.conftest import shared_dataset

    data = csv_slice(shared_dataset("sms_spam") / "sms_spam.csv", tmp_path / "sms.csv", {"ham": 40, "spam": 20})
    config = sms_config(tmp_path, data, tmp_path / "work", registry={"model_name": MODEL},
                        gate={"max_regression": 1.0})  # a rerun on the same data always passes the gate
    (tmp_path / "work").mkdir()
    store = open_store(tmp_path / "work")
    register(store, save_checkpoint(tmp_path, TEXT_MODEL, 2), TEXT_MODEL, ["ham", "spam"], MODEL)
    client = store.client

    def versions() -> list[str]:
        return sorted(str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))

    def champion() -> str | None:
        return client.get_registered_model(MODEL).aliases.get("champion")

    code, output = run_with_fault(config, tmp_path, "7c model card")  # the command, for its exit code
    assert code == 2 and last_line(output).startswith("error: the release of"), output
    assert "version 2 was removed, alias 'champion' is unchanged" in output
    check_nothing_released(client, versions(), champion())

    import tasks.monitoring.drift as drift  # the flow in process, for the second fault: the same checks
    from flows.transfer_learning import transfer_learning
    from tasks.core.errors import ReleaseError

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("injected: the artifact store is down")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(drift, "log_reference", fail)
        with pytest.raises(ReleaseError, match="version 3 was removed, alias 'champion' is unchanged"):
            transfer_learning(str(config))
    check_nothing_released(client, versions(), champion())


def check_nothing_released(client: MlflowClient, versions: list[str], champion: str | None) -> None:
    assert versions == ["1"] and str(champion) == "1"  # the old champion stays, nothing new
    failed = newest_parent_run(client)
    assert failed.data.tags["decision"] == "incomplete" and failed.data.tags["gate_verdict"] == "promoted"
    assert "OSError: injected" in failed.data.tags["decision_reason"]

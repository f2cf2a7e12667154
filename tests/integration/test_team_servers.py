"""The flow against a team's servers, both on PostgreSQL, as docs/operations.md sets them up: a real
PostgreSQL with a password, `mlflow server` on `postgresql+psycopg://` with served artifacts (after
`mlflow db upgrade`), and `prefect server` on `postgresql+asyncpg://` with pg_trgm. Reached only
through MLFLOW_TRACKING_URI and PREFECT_API_URL:
- the version is registered with its evidence and the alias set, as seen over MLflow's HTTP API;
- the flow run is Completed, as seen over Prefect's HTTP API;
- the rows are in PostgreSQL (read with psql), the split history on the MLflow server;
- the artifacts live on the server, not in the workdir, and no local store appears anywhere;
- `transferflow predict` loads the champion from the server;
- a wrong password is one line naming the variable, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.integration.conftest import csv_slice, run_transferflow, sms_config
from tests.integration.evidence import predict_registered, text_labels, version_evidence, version_file
from tests.mlflow_server import MlflowServer, mlflow_server
from tests.postgres_server import PostgresServer, postgres_server

pytestmark = pytest.mark.integration
MODEL = "sms-on-server"
LOCAL_STORES = ("mlflow.db", "mlruns", "mlartifacts")


@dataclass(frozen=True)
class Team:
    database: PostgresServer
    mlflow: MlflowServer
    prefect_api_url: str


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Iterator[Team]:
    from flows.local_server import local_prefect_server

    folder = tmp_path_factory.mktemp("team-servers")
    with postgres_server(("mlflow", "prefect"), extensions={"prefect": "pg_trgm"}) as database:
        prefect_database = {"PREFECT_API_DATABASE_CONNECTION_URL": database.uri("prefect", "asyncpg")}
        with (mlflow_server(folder / "mlflow", database.uri("mlflow", "psycopg")) as mlflow,
              local_prefect_server(folder / "prefect-home", environment=prefect_database) as prefect):
            yield Team(database, mlflow, prefect.api_url)


@pytest.fixture(scope="module")
def tracking_server(team: Team) -> MlflowServer:
    """This file's MLflow server is the team's, on PostgreSQL (not the session's SQLite one)."""
    return team.mlflow


@pytest.fixture(scope="module")
def server_run(team: Team, tmp_path_factory):
    """One `transferflow run` and one `transferflow predict`, both pointed at the servers only by
    MLFLOW_TRACKING_URI and PREFECT_API_URL, run from a folder of their own (where MLflow's defaults
    would land)."""
    from tests.conftest import shared_dataset

    tracking_server = team.mlflow
    folder = tmp_path_factory.mktemp("server-run")
    data = csv_slice(shared_dataset("sms_spam") / "sms_spam.csv", folder / "sms.csv", {"ham": 80, "spam": 40})
    config = sms_config(folder, data, folder / "work", metric={"target": 0.6}, train={"head_epochs": 40},
                        registry={"model_name": MODEL})
    inputs = folder / "inputs.csv"
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "Ok, see you at home later"]
    pd.DataFrame({"text": texts}).to_csv(inputs, index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
        ran = run_transferflow(["run", str(config)], cwd=folder, PREFECT_API_URL=team.prefect_api_url)
        predicted = run_transferflow(["predict", f"models:/{MODEL}@champion", str(inputs), "--out",
                                      str(folder / "predictions.csv")], cwd=folder)
    return ran, predicted, folder, data, texts


def rest(server: MlflowServer, endpoint: str, **params: str) -> dict:
    answer = httpx.get(f"{server.url}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_run_succeeds_against_the_server(server_run):
    (code, output), _, _, _, _ = server_run
    assert code == 0, output
    assert f"promoted: {MODEL}@champion -> version 1" in output


def test_champion_alias_and_evidence_over_http(server_run, tracking_server):
    (code, output), _, _, _, _ = server_run
    assert code == 0, output
    version = rest(tracking_server, "registered-models/alias", name=MODEL, alias="champion")["model_version"]
    tags = {tag["key"]: tag["value"] for tag in version["tags"]}
    assert version["version"] == "1" and "champion" in version["aliases"]
    assert set(tags) == {"decision", "test_metric", "target", "base_model", "data_fingerprint"}
    assert tags["decision"] == "promoted" and tags["target"] == "accuracy >= 0.6" and float(tags["test_metric"]) >= 0.6
    client = MlflowClient(tracking_server.url)
    evidence = version_evidence(client, client.get_model_version(MODEL, "1"))  # the run's evidence.json, over http
    assert evidence["previous_champion"] == "none" and evidence["metric"] == "accuracy" and evidence["target"] == "0.6"
    assert all(len(evidence[key]) == 64 for key in ("data_fingerprint", "test_fingerprint", "split_manifest_sha256"))
    run = rest(tracking_server, "runs/get", run_id=version["run_id"])["run"]
    assert evidence["run_id"] == version["run_id"] and run["info"]["status"] == "FINISHED"
    run_tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
    assert run_tags["decision"] == "promoted" and run_tags["previous_champion"] == "none"
    versions = rest(tracking_server, "model-versions/search", filter=f"name = '{MODEL}'")["model_versions"]
    assert [v["version"] for v in versions] == ["1"]


def test_artifacts_are_on_the_server_and_nothing_is_stored_locally(server_run, tracking_server):
    """The run's artifact URI is the server's proxy (mlflow-artifacts:), the files sit in the
    server's artifacts folder, and neither the workdir nor the current folder holds a store."""
    (code, output), _, folder, _, _ = server_run
    assert code == 0, output
    client = MlflowClient(tracking_server.url)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert client.get_run(version.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(tracking_server.artifacts.rglob("MLmodel")), "no model files in the server's artifact store"
    with tempfile.TemporaryDirectory() as downloads:
        mlmodel = version_file(client, MODEL, version.version, "MLmodel", downloads).read_text()
    assert "python_function" in mlmodel and "input_modality: text" in mlmodel
    assert not [p for p in folder.rglob("*") if p.name in LOCAL_STORES], "a local MLflow store appeared"


def test_test_metric_recomputed_from_what_the_server_holds(server_run, tracking_server, monkeypatch):
    """The split manifest and the model both come back from the server; accuracy on the manifest's
    test ids, with labels from the CSV itself, matches the version's tag."""
    (code, output), _, _, data, _ = server_run
    assert code == 0, output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)  # mlflow-artifacts: URIs resolve through it
    client = MlflowClient(tracking_server.url)
    version = client.get_model_version_by_alias(MODEL, "champion")
    with tempfile.TemporaryDirectory() as downloads:
        [manifest] = [p for p in Path(client.download_artifacts(version.run_id, "split", downloads)).iterdir()
                      if p.is_file()]  # (split/before_drops/ holds the manifest before any policy drop)
        raw = manifest.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == version_evidence(client, version)["split_manifest_sha256"]
    test_ids = json.loads(raw)["splits"]["test"]
    truth = text_labels(data)
    predicted = predict_registered(client, MODEL, version.version, [truth[i][0] for i in test_ids])
    accuracy = sum(p == truth[i][1] for p, i in zip(predicted["label"], test_ids, strict=True)) / len(test_ids)
    assert float(version.tags["test_metric"]) == pytest.approx(accuracy, abs=1e-6)


def test_predict_loads_the_champion_from_the_server(server_run, tracking_server, monkeypatch):
    _, (code, output), folder, _, texts = server_run
    assert code == 0, output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    written = pd.read_csv(folder / "predictions.csv")
    direct = predict_registered(MlflowClient(tracking_server.url), MODEL, "1", texts)
    assert written["input"].tolist() == texts
    assert written["label"].tolist() == direct["label"].tolist()
    assert written["probability"].to_numpy() == pytest.approx(direct["probability"].to_numpy(), abs=1e-6)


def test_the_flow_run_is_completed_on_the_team_prefect_server(server_run, team):
    (code, output), _, _, _, _ = server_run
    assert code == 0, output
    answer = httpx.post(f"{team.prefect_api_url}/flow_runs/filter", json={"limit": 50}, timeout=30)
    assert answer.status_code == 200, answer.text
    runs = [(run["name"], run["state_type"], run["tags"]) for run in answer.json()]
    assert [state for _, state, _ in runs] == ["COMPLETED"], runs
    assert f"model:{MODEL}" in runs[0][2] and "decision:promoted" in runs[0][2]
    assert team.database.psql("prefect", "SELECT name, state_type FROM flow_run").split() == [
        f"{runs[0][0]}|COMPLETED"]


def test_runs_registry_and_split_history_are_rows_in_postgresql(server_run, team):
    """What the HTTP APIs showed is stored in PostgreSQL: read back with psql, independently of MLflow."""
    (code, output), _, _, _, _ = server_run
    assert code == 0, output
    psql = team.database.psql
    assert psql("mlflow", "SELECT name FROM registered_models").split() == [MODEL]
    assert psql("mlflow", "SELECT alias, version FROM registered_model_aliases").split() == ["champion|1"]
    experiments = set(psql("mlflow", "SELECT name FROM experiments").split())
    assert "transferflow-split-histories" in experiments
    history = rest(team.mlflow, "experiments/get-by-name", experiment_name="transferflow-split-histories")
    experiment_id = history["experiment"]["experiment_id"]
    anchors = httpx.post(f"{team.mlflow.url}/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment_id]},
                         timeout=30).json()["runs"]
    assert len(anchors) == 1
    generations = rest(team.mlflow, "artifacts/list", run_id=anchors[0]["info"]["run_id"], path="generations")
    assert [int(f["path"].split("/")[1].split("-")[0]) for f in generations["files"]] == [1]
    assert psql("mlflow", f"SELECT status FROM runs WHERE experiment_id = {experiment_id}").split() == ["FINISHED"]


@pytest.mark.parametrize("variable", ["MLFLOW_TRACKING_URI", "PREFECT_API_DATABASE_CONNECTION_URL"])
def test_a_wrong_database_password_is_one_line_and_nothing_is_written(team, tmp_path, variable):
    """A real server with scram-sha-256 refuses it: one line naming the variable (password hidden),
    exit 2, no workdir and no store."""
    data = tmp_path / "sms.csv"
    data.write_text("text,label\n" + "".join(f"message {i},{'spam' if i % 2 else 'ham'}\n" for i in range(40)))
    config = sms_config(tmp_path, data, tmp_path / "work")
    database = "mlflow" if variable == "MLFLOW_TRACKING_URI" else "prefect"
    wrong = team.database.uri(database, "psycopg" if database == "mlflow" else "asyncpg", password="wrong-password")
    code, output = run_transferflow(["run", str(config)], cwd=tmp_path, PREFECT_API_URL="", **{variable: wrong})
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1, output
    assert lines[0].startswith(f"error: {variable}=postgresql+") and ":***@127.0.0.1:" in lines[0], lines[0]
    assert "wrong-password" not in output and "password authentication failed" in lines[0] and "Fix:" in lines[0]
    assert not (tmp_path / "work").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name in (*LOCAL_STORES, ".transferflow")]

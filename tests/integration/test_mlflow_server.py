"""The flow against a real `mlflow server` (SQLite backend, artifacts served) on loopback, through
MLFLOW_TRACKING_URI: the version is registered with its evidence and the alias set, as seen over
HTTP; the artifacts live on the server, not in the workdir; `transferflow predict` loads the
champion from the server; and no local store appears anywhere."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.integration.conftest import csv_slice, run_transferflow, sms_config
from tests.integration.evidence import predict_registered, text_labels
from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.integration
MODEL = "sms-on-server"
LOCAL_STORES = ("mlflow.db", "mlruns", "mlartifacts")


@pytest.fixture(scope="module")
def server_run(tracking_server: MlflowServer, tmp_path_factory):
    """One `transferflow run` and one `transferflow predict`, both pointed at the server only by
    MLFLOW_TRACKING_URI, run from a folder of their own (where MLflow's defaults would land)."""
    from tests.conftest import shared_dataset

    folder = tmp_path_factory.mktemp("server-run")
    data = csv_slice(shared_dataset("sms_spam") / "sms_spam.csv", folder / "sms.csv", {"ham": 80, "spam": 40})
    config = sms_config(folder, data, folder / "work", metric={"target": 0.6}, train={"head_epochs": 40},
                        registry={"model_name": MODEL})
    inputs = folder / "inputs.csv"
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "Ok, see you at home later"]
    pd.DataFrame({"text": texts}).to_csv(inputs, index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
        ran = run_transferflow(["run", str(config)], cwd=folder)
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
    assert tags["decision"] == "promoted" and tags["champion_version"] == "none"
    assert tags["metric"] == "accuracy" and tags["target"] == "0.6" and float(tags["test_metric"]) >= 0.6
    assert all(len(tags[key]) == 64 for key in ("data_fingerprint", "test_fingerprint", "split_manifest_sha256"))
    run = rest(tracking_server, "runs/get", run_id=tags["run_id"])["run"]
    assert version["run_id"] == tags["run_id"] and run["info"]["status"] == "FINISHED"
    assert {tag["key"]: tag["value"] for tag in run["data"]["tags"]}["decision"] == "promoted"
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
        mlmodel = Path(client.download_artifacts(version.run_id, "model/MLmodel", downloads)).read_text()
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
    assert hashlib.sha256(raw).hexdigest() == version.tags["split_manifest_sha256"]
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

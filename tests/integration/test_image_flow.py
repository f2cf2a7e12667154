"""The whole flow on a slice of the ants-vs-bees photos: real Prefect, MLflow (SQLite) and GX.

Two runs on the same data: the first passes the gate (alias set), the second is deliberately
undertrained with a high target, so fine-tuning runs and the gate rejects (alias unchanged).
"""

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.transfer_learning import transfer_learning
from tasks.split import recorded_test_reads
from tests.conftest import write_config
from tests.integration.conftest import hymenoptera_slice, run_transferflow

pytestmark = pytest.mark.integration

CONFIG = """
task: Tell whether a photo shows ants or bees.
metric: {{name: accuracy, target: {target}}}
data: {{kind: image_folder, path: {data}}}
model: {{family: torchvision, name: mobilenet_v2, image_size: 64}}
train: {{batch_size: 16, head_epochs: {head_epochs}, head_learning_rate: {lr}, finetune_epochs: 1}}
registry: {{model_name: ants-vs-bees}}
workdir: {workdir}
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from tests.conftest import shared_dataset

    folder = tmp_path_factory.mktemp("image-flow")
    data = hymenoptera_slice(shared_dataset("hymenoptera"), folder / "data", per_class=20)
    workdir = folder / "work"
    (folder / "pass").mkdir()
    (folder / "fail").mkdir()
    passing = write_config(folder / "pass", CONFIG.format(target=0.6, data=data, head_epochs=60, lr=0.003,
                                                          workdir=workdir))
    failing = write_config(folder / "fail", CONFIG.format(target=0.95, data=data, head_epochs=1, lr=1e-6,
                                                          workdir=workdir))
    first = transfer_learning(str(passing))
    second = transfer_learning(str(failing))
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    return first, second, client


def child_runs(client, summary):
    experiment = client.get_experiment_by_name("ants-vs-bees").experiment_id
    runs = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{summary.run_id}'")
    return {run.info.run_name: run for run in runs}


def test_passing_run_promotes_with_evidence(two_runs):
    first, _, client = two_runs
    assert first.outcome.decision.passed
    assert [s.name for s in first.stages] == ["baseline"] and first.stages[0].meets_target
    version = client.get_model_version("ants-vs-bees", first.outcome.registration.version)
    assert version.tags["decision"] == "promoted"
    assert float(version.tags["test_metric"]) == pytest.approx(first.test.value, abs=1e-6)
    assert version.tags["target"] == "0.6" and version.tags["metric"] == "accuracy"
    assert version.tags["test_fingerprint"] == first.split.test_fingerprint
    assert version.tags["prior_test_evaluations"] == "0"
    assert len(version.tags["data_fingerprint"]) == 64


def test_failing_run_registers_but_does_not_move_the_alias(two_runs):
    first, second, client = two_runs
    assert not second.outcome.decision.passed
    assert second.test.value < 0.95
    version = client.get_model_version("ants-vs-bees", second.outcome.registration.version)
    assert version.tags["decision"] == "rejected" and version.tags["prior_test_evaluations"] == "1"
    champion = client.get_model_version_by_alias("ants-vs-bees", "champion")
    assert str(champion.version) == first.outcome.registration.version
    assert "evaluated 1 time(s) before" in second.outcome.decision.reason


def test_runs_nested_runs_metrics_and_artifacts(two_runs):
    first, second, client = two_runs
    assert set(child_runs(client, first)) == {"baseline"}
    children = child_runs(client, second)
    assert set(children) == {"baseline", "finetune-1"}
    history = client.get_metric_history(children["finetune-1"].info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1]
    assert client.get_metric_history(children["baseline"].info.run_id, "train_loss")
    parent = client.get_run(first.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith((first.spec.workdir / "mlartifacts").as_uri())
    assert parent.data.metrics["test_accuracy"] == pytest.approx(first.test.value)
    artifacts = {a.path for a in client.list_artifacts(first.run_id)} | {
        a.path for folder in ("plots", "quality", "split") for a in client.list_artifacts(first.run_id, folder)}
    assert {"model_card.md", "plots/test_confusion_matrix.png", "plots/learning_curves.png",
            "quality/label_quality.md"} <= artifacts
    assert any(path.startswith("split/") and path.endswith(".json") for path in artifacts)
    card = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/model_card.md")
    assert "PROMOTED" in card and first.split.test_fingerprint in card


def test_second_run_reuses_the_embedding_cache(two_runs):
    _, second, client = two_runs
    baseline = child_runs(client, second)["baseline"]
    assert baseline.data.params["embeddings_computed"] == "0"
    assert int(baseline.data.params["embeddings_reused"]) == second.split.sizes["train"] + second.split.sizes["val"]


def test_test_split_read_exactly_once_per_run(two_runs):
    first, second, _ = two_runs
    readers = [r["reader"] for r in recorded_test_reads(first.split.manifest_path)]
    assert len(readers) == 2
    assert sum(first.run_id in r for r in readers) == 1 and sum(second.run_id in r for r in readers) == 1


def test_champion_predicts_raw_images(two_runs, hymenoptera):
    _, _, client = two_runs
    mlflow.set_tracking_uri(client._tracking_client.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/ants-vs-bees@champion")
    images = [str(next((hymenoptera / "val" / label).glob("*.jpg"))) for label in ("ants", "bees")]
    predictions = model.predict(pd.DataFrame({"input": images}))
    assert set(predictions["label"]) <= {"ants", "bees"}
    assert (predictions[["p_ants", "p_bees"]].sum(axis=1) - 1).abs().max() < 1e-5


def test_predict_command_prints_label_and_probability(two_runs, hymenoptera, tmp_path):
    first, _, _ = two_runs
    image = next((hymenoptera / "val" / "bees").glob("*.jpg"))
    code, output = run_transferflow(["predict", "models:/ants-vs-bees@champion", str(image),
                                     "--workdir", str(first.spec.workdir)], cwd=tmp_path)
    assert code == 0, output
    row = next(line for line in output.splitlines() if image.name in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[1] in {"ants", "bees"} and 0.5 <= float(cells[2]) <= 1.0


def test_prefect_ui_artifacts_for_quality_split_and_gate(two_runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    first, second, client = two_runs
    flow_run_ids = {client.get_run(s.run_id).data.tags["prefect_flow_run_id"] for s in (first, second)}
    with get_client(sync_client=True) as prefect:
        artifacts = [a for a in prefect.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["label-quality", "split-sizes", "gate-decision"])))
            if str(a.flow_run_id) in flow_run_ids]
    by_key = {}
    for artifact in artifacts:
        by_key.setdefault(artifact.key, []).append(str(artifact.data))
    assert {key: len(items) for key, items in by_key.items()} == {
        "label-quality": 2, "split-sizes": 2, "gate-decision": 2}
    assert sorted("PROMOTED" in text for text in by_key["gate-decision"]) == [False, True]
    assert all("Label-quality report: PASSED" in text for text in by_key["label-quality"])

"""A base-model tournament through the real flow (Prefect, MLflow, GX) on a slice of the ants
vs bees photos, between the two wheel-shipped image models: the table, the choice, the artifacts,
checked against independent recomputations (parameter counts from the libraries themselves, the
winner's probe score against its separately trained baseline stage)."""

import json

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from flows.transfer_learning import transfer_learning
from tests.conftest import write_config
from tests.integration.conftest import hymenoptera_slice

pytestmark = pytest.mark.integration

CONFIG = """
task: Tell whether a photo shows ants or bees.
metric: {{name: accuracy, target: 0.6}}
data: {{kind: image_folder, path: {data}}}
model:
  candidates:
    - {{family: torchvision, name: mobilenet_v2, image_size: 64}}
    - {{family: timm, name: tf_efficientnet_lite0, image_size: 64}}
  {constraint}
train: {{batch_size: 16, head_epochs: 40}}
finetune: {{max_stages: 0}}
registry: {{model_name: {model_name}}}
workdir: {workdir}
"""


@pytest.fixture(scope="module")
def tournaments(tmp_path_factory):
    """One open tournament, and one where max_params (2.5M) drops EfficientNet-Lite0 (3.4M)."""
    from tests.conftest import shared_dataset

    folder = tmp_path_factory.mktemp("tournament")
    data = hymenoptera_slice(shared_dataset("hymenoptera"), folder / "data", per_class=20)
    workdir = folder / "work"
    summaries = {}
    for name, constraint in [("open", ""), ("small", "max_params: 2500000")]:
        (folder / name).mkdir()
        config = write_config(folder / name, CONFIG.format(data=data, workdir=workdir, constraint=constraint,
                                                           model_name=f"ants-{name}"))
        summaries[name] = transfer_learning(str(config))
    return summaries, MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def independent_parameter_counts() -> dict[str, int]:
    """Encoder parameters as the libraries count them: the classifier without its ImageNet head."""
    import timm
    import torchvision

    mobilenet = torchvision.models.mobilenet_v2().features
    efficientnet = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    return {"torchvision:mobilenet_v2": sum(p.numel() for p in mobilenet.parameters()),
            "timm:tf_efficientnet_lite0": sum(p.numel() for p in efficientnet.parameters())}


def logged_table(client, summary) -> list[dict]:
    parent = client.get_run(summary.run_id)
    return json.loads(mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/tournament/candidates.json"))


def test_the_table_holds_every_candidate_with_its_measurements(tournaments):
    summaries, client = tournaments
    rows = {row["model"]: row for row in logged_table(client, summaries["open"])}
    counts = independent_parameter_counts()
    assert set(rows) == set(counts) | {"pixels"}  # the classic candidate, added last (model.classic)
    assert rows["pixels"]["parameters"] == 0 and rows["pixels"]["dim"] == 32 * 32 * 3
    for model, row in rows.items():
        assert row["parameters"] == counts.get(model, 0) and row["dim"] == (1280 if model in counts else 3072)
        assert row["throughput"] > 0 and 0.0 <= row["val_value"] <= 1.0 and row["seconds"] > 0
    best = max(rows.values(), key=lambda r: (r["val_value"], r["throughput"]))
    assert best["status"] == "chosen" and sum(r["status"] == "chosen" for r in rows.values()) == 1


def test_the_chosen_model_is_tagged_trained_and_described(tournaments):
    """The winner's baseline stage is trained separately after the tournament, with the same probe
    (head, settings, seed, cached embeddings): its validation score equals the table's."""
    summaries, client = tournaments
    summary = summaries["open"]
    rows = {row["model"]: row for row in logged_table(client, summary)}
    chosen = next(model for model, row in rows.items() if row["status"] == "chosen")
    parent = client.get_run(summary.run_id)
    assert parent.data.tags["base_model"] == chosen
    assert f"{summary.spec.model.family}:{summary.spec.model.name}" == chosen
    baseline = summary.stages[0]
    assert baseline.name == "baseline" and baseline.val_value == pytest.approx(rows[chosen]["val_value"])
    artifacts = {a.path for a in client.list_artifacts(summary.run_id, "tournament")}
    assert artifacts == {"tournament/candidates.md", "tournament/candidates.json",
                         "tournament/metric_vs_throughput.png"}
    card = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/model_card.md")
    assert "### Tournament" in card and all(model in card for model in rows)
    assert f"Parameters: {rows[chosen]['parameters']:,}" in card and "Weights sha256:" in card


def test_max_params_drops_the_larger_candidate_before_embedding_with_it(tournaments):
    summaries, client = tournaments
    rows = {row["model"]: row for row in logged_table(client, summaries["small"])}
    dropped = rows["timm:tf_efficientnet_lite0"]
    assert dropped["status"].startswith("dropped:") and "max_params 2,500,000" in dropped["status"]
    assert dropped["throughput"] is None and dropped["val_value"] is None  # never embedded
    assert rows["torchvision:mobilenet_v2"]["status"] == "chosen"
    assert summaries["small"].spec.model.name == "mobilenet_v2"


def test_the_prefect_ui_shows_the_tournament_table(tournaments):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summaries, client = tournaments
    flow_run = client.get_run(summaries["open"].run_id).data.tags["prefect_flow_run_id"]
    with get_client(sync_client=True) as prefect:
        artifacts = [a for a in prefect.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["ants-open-tournament"]))) if str(a.flow_run_id) == flow_run]
    assert len(artifacts) == 1 and artifacts[0].type == "table"
    text = str(artifacts[0].data)
    assert "torchvision:mobilenet_v2" in text and "timm:tf_efficientnet_lite0" in text and "chosen" in text


def test_the_other_candidate_is_embedded_in_shards_before_its_probe_which_only_reads_the_cache(tournaments):
    """Step 3a's shards embed each eligible candidate's training and validation examples (never the
    test inputs); a candidate the constraints drop is never embedded."""
    summaries, client = tournaments
    summary = summaries["open"]
    params = client.get_run(summary.run_id).data.params
    train_val = summary.split.sizes["train"] + summary.split.sizes["val"]
    assert params["embed_examples_candidate_2"] == params["embed_computed_candidate_2"] == str(train_val)
    assert "embed_examples_candidate_3" not in params  # the classic candidate fits its features at its probe
    assert "embed_examples_candidate_2" not in client.get_run(summaries["small"].run_id).data.params


def test_the_classic_anchor_scores_what_raw_pixels_and_a_logistic_regression_score_on_validation(tournaments):
    """Recomputed with PIL, numpy and scikit-learn from the split manifest: trained on the training
    ids only, each C of the grid scored on the validation ids, the best kept; the tournament's
    classic candidate scored the same."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    from tasks.training.linear_head import C_GRID
    from tests.integration.evidence import image_labels, manifest_splits

    summaries, client = tournaments
    summary = summaries["open"]
    truth = image_labels(summary.spec.data.path)
    ids = manifest_splits(summary.split.manifest_path)

    def pixels(part):
        rows = [np.asarray(Image.open(truth[i][0]).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR),
                           dtype=np.float64).ravel() / 255 for i in ids[part]]
        return np.stack(rows), [truth[i][1] for i in ids[part]]

    (train_x, train_y), (val_x, val_y) = pixels("train"), pixels("val")
    mean, std = train_x.mean(0), train_x.std(0)
    scale = lambda x: (x - mean) / np.where(std > 0, std, 1.0)  # noqa: E731
    scores = [accuracy_score(val_y, LogisticRegression(C=C, max_iter=1000, random_state=0)
                             .fit(scale(train_x), train_y).predict(scale(val_x))) for C in C_GRID]
    logged = client.get_run(summary.run_id).data
    assert logged.metrics["classic_val_metric"] == pytest.approx(max(scores), abs=1e-6)
    assert logged.params["classic_anchor"] == "pixels"
    rows = {row["model"]: row for row in logged_table(client, summary)}
    assert rows["pixels"]["val_value"] == pytest.approx(max(scores), abs=1e-6)

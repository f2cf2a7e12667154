"""The whole flow on a slice of the ants-vs-bees photos: real Prefect, MLflow (SQLite) and GX.

Three runs on the same data (given train/ and val/ folders):
1. MobileNetV2 trained properly with a modest target: the baseline meets it, the gate promotes;
2. the same model deliberately undertrained with a high target and fine-tuning off: rejected,
   alias unchanged, every embedding reused from the cache;
3. timm EfficientNet-Lite0 undertrained with a high target, so gradual unfreezing runs its stages.
Claims are checked against an independent recomputation from the raw files and the registry.
"""

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score

from flows.transfer_learning import transfer_learning
from tasks.data.split import recorded_test_reads
from tests.conftest import write_config
from tests.integration.conftest import hymenoptera_slice, run_transferflow
from tests.integration.evidence import (
    image_labels,
    image_payload,
    manifest_splits,
    predict_registered,
    stage_decisions,
    version_evidence,
)

pytestmark = pytest.mark.integration

CONFIG = """
task: Tell whether a photo shows ants or bees.
metric: {{name: accuracy, target: {target}}}
data: {{kind: image_folder, path: {data}}}
model: {{family: {family}, name: {name}, image_size: 64}}
train: {{batch_size: 16, head_epochs: {head_epochs}, head_learning_rate: {lr}}}
finetune: {{max_stages: {stages}, epochs_per_stage: 2, lr_ratio: {ratio}}}
registry: {{model_name: ants-vs-bees}}
workdir: {workdir}
"""
MOBILENET = {"family": "torchvision", "name": "mobilenet_v2"}
EFFICIENTNET = {"family": "timm", "name": "tf_efficientnet_lite0"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.conftest import shared_dataset

    folder = tmp_path_factory.mktemp("image-flow")
    data = hymenoptera_slice(shared_dataset("hymenoptera"), folder / "data", per_class=20)
    workdir = folder / "work"
    settings = {
        "pass": dict(MOBILENET, target=0.6, head_epochs=60, lr=0.003, stages=2, ratio=0.1),
        "reject": dict(MOBILENET, target=0.95, head_epochs=1, lr=1e-6, stages=0, ratio=0.1),
        # A weak baseline (one head epoch) and a fine-tuning lr as high as the head's: the stages
        # gain over it, and the unreachable target keeps the loop going until max_stages.
        "finetune": dict(EFFICIENTNET, target=0.99, head_epochs=1, lr=1e-3, stages=2, ratio=1.0),
    }
    summaries = {}
    for name, values in settings.items():
        (folder / name).mkdir()
        config = write_config(folder / name, CONFIG.format(data=data, workdir=workdir, **values))
        summaries[name] = transfer_learning(str(config))
    return summaries, MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}"), data


def child_runs(client, summary):
    experiment = client.get_experiment_by_name("ants-vs-bees").experiment_id
    runs = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{summary.run_id}'")
    return {run.info.run_name: run for run in runs}


def test_given_train_and_val_folders_are_respected_and_test_is_carved_from_val(runs):
    summaries, _, data = runs
    truth = image_labels(data)
    splits = manifest_splits(summaries["pass"].split.manifest_path)
    folder_of = {example_id: path.relative_to(data).parts[0] for example_id, (path, _) in truth.items()}
    assert {folder_of[i] for i in splits["train"]} == {"train"}
    assert {folder_of[i] for i in splits["val"] + splits["test"]} == {"val"}
    assert len(splits["train"]) == 40 and len(splits["val"]) + len(splits["test"]) == 40
    assert any("carved from the given validation split" in note for note in summaries["pass"].split.notes)


def test_registered_models_reproduce_the_logged_test_metric(runs):
    """Predict the test examples' raw bytes with each registered version, recompute accuracy with
    sklearn against the folder labels, and compare with the version's evidence tag."""
    summaries, client, data = runs
    truth = image_labels(data)
    test_ids = manifest_splits(summaries["pass"].split.manifest_path)["test"]
    for summary in summaries.values():
        version = client.get_model_version("ants-vs-bees", summary.outcome.registration.version)
        predicted = predict_registered(client, "ants-vs-bees", version.version,
                                       [image_payload(truth[i][0]) for i in test_ids])
        recomputed = accuracy_score([truth[i][1] for i in test_ids], predicted["label"])
        assert float(version.tags["test_metric"]) == pytest.approx(recomputed, abs=1e-6)
        assert (predicted[["p_ants", "p_bees"]].sum(axis=1) - 1).abs().max() < 1e-5


def test_gate_moves_the_alias_only_on_a_pass(runs):
    summaries, client, _ = runs
    passed = client.get_model_version("ants-vs-bees", summaries["pass"].outcome.registration.version)
    assert passed.tags["decision"] == "promoted" and float(passed.tags["test_metric"]) >= 0.6
    assert set(passed.tags) == {"decision", "test_metric", "target", "base_model",
                                "data_fingerprint"}  # a handful at a glance; the rest in evidence.json
    assert passed.tags["target"] == "accuracy >= 0.6" and passed.tags["base_model"] == "torchvision:mobilenet_v2"
    evidence = version_evidence(client, passed)
    assert evidence["target"] == "0.6" and evidence["metric"] == "accuracy"
    assert evidence["test_fingerprint"] == summaries["pass"].split.test_fingerprint
    fingerprint = summaries["pass"].prepared.dataset.fingerprint
    assert passed.tags["data_fingerprint"] == evidence["data_fingerprint"] == fingerprint
    for name in ("reject", "finetune"):
        rejected = client.get_model_version("ants-vs-bees", summaries[name].outcome.registration.version)
        assert rejected.tags["decision"] == "rejected" and float(rejected.tags["test_metric"]) < float(
            version_evidence(client, rejected)["target"])
    assert client.get_model_version_by_alias("ants-vs-bees", "champion").version == passed.version


def test_each_challenger_is_compared_with_the_champion_on_the_same_test_split(runs):
    """All three runs share one test split: the champion's score there is its own logged test metric."""
    summaries, client, _ = runs
    first, *later = (client.get_model_version("ants-vs-bees", s.outcome.registration.version)
                     for s in summaries.values())
    assert version_evidence(client, first)["previous_champion"] == "none"
    for version in later:
        evidence = version_evidence(client, version)
        assert evidence["previous_champion"] == str(first.version)
        assert float(evidence["champion_test_metric"]) == pytest.approx(float(first.tags["test_metric"]))
    parent = client.get_run(summaries["reject"].run_id)
    assert parent.data.tags["previous_champion"] == str(first.version) and "champion_version" not in parent.data.tags
    assert first.description.startswith("# Model card:") and "Send column `input`" in first.description


def test_exposure_of_the_test_examples_grows_with_each_evaluation(runs):
    """Three evaluations of the same test split: counted per example from the manifest's test ids."""
    summaries, client, _ = runs
    n_test = len(manifest_splits(summaries["pass"].split.manifest_path)["test"])
    tags = [version_evidence(client, client.get_model_version("ants-vs-bees", s.outcome.registration.version))
            for s in summaries.values()]
    assert [(t["test_examples_fresh"], t["test_examples_seen_before"], t["test_max_prior_uses"]) for t in tags] == [
        (str(n_test), "0", "0"), ("0", str(n_test), "1"), ("0", str(n_test), "2")]
    assert f"all {n_test} test examples are fresh" in summaries["pass"].outcome.decision.reason
    assert (f"{n_test} of {n_test} test examples were used by 2 earlier evaluation(s), up to 2 time(s) each"
            in summaries["finetune"].outcome.decision.reason)


ACTIONS = {"unfreeze_next", "retry_regularized", "stop_overfit", "stop_no_gain", "stop_stalled", "class_weights_on",
           "lock_in", "stop_max_stages", "extend_stage", "classic_anchor", "beats_classic", "below_classic"}


def test_gradual_unfreezing_runs_stages_acts_on_decisions_and_logs_them(runs):
    summaries, client, _ = runs
    summary = summaries["finetune"]
    names = [s.name for s in summary.stages]
    tuned = [name for name in names if name.startswith("finetune-")]
    assert names[:2] == ["baseline", "finetune-1"] and len(tuned) >= 2, names
    children = child_runs(client, summary)
    assert set(children) == set(names)
    # One decision per fine-tuning stage, in order, each with its reason and numbers.
    decisions = stage_decisions(summary.decisions)
    assert [d["stage"] for d in decisions] == tuned
    assert all(d["action"] in ACTIONS and d["reason"] and "best_val_metric" in d["numbers"] for d in summary.decisions)
    parent = client.get_run(summary.run_id)
    logged = json.loads(mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/decisions.json"))
    assert logged == summary.decisions
    table = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/decisions.md")
    assert all(f"| {d['stage']} | `{d['action']}` |" in table for d in summary.decisions)
    card = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/model_card.md")
    assert all(f"**{d['action']}**" in card for d in decisions) and "finetune.max_stages" in card
    # Each stage is a nested run with per-epoch curves; its best epoch's value is the stage's.
    for stage in summary.stages[1:]:
        run = children[stage.name]
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(1, len(history) + 1)) and 1 <= len(history) <= 2
        best_epoch = int(run.data.params["best_epoch"])
        assert history[best_epoch - 1].value == pytest.approx(stage.val_value)
        assert max(m.value for m in history) == pytest.approx(stage.val_value)
    # Deeper stages unfreeze more groups, each from the best stage before it (by the logged metrics).
    depth = [int(children[n].data.params["unfrozen_groups"]) for n in tuned]
    assert depth == sorted(depth) and depth[0] == 1 and depth[-1] >= 2
    # Selection: the best validation value over all stages, ties to the earlier (recomputed from MLflow).
    values = [children[n].data.metrics["best_val_accuracy"] for n in names]
    assert summary.selected.name == names[values.index(max(values))]


def test_a_stage_trains_only_its_unfrozen_groups(runs):
    """The checkpoint of finetune-1 (last group unfrozen) against the pretrained EfficientNet: the
    stem (never unfrozen) and every BatchNorm's running statistics are the pretrained ones; the
    last group learned."""
    import torch

    from tasks.models.backbones import load_backbone

    summaries, _, _ = runs
    summary = summaries["finetune"]
    stage = next(s for s in summary.stages if s.name == "finetune-1")
    stored = torch.load(stage.checkpoint, map_location="cpu", weights_only=True)
    assert (stored["stage"], stored["unfrozen_groups"], stored["epoch"]) == ("finetune-1", 1, stage.best_epoch)
    assert stored["classes"] == ["ants", "bees"] and stored["model"]["name"] == "tf_efficientnet_lite0"
    # The last finished epoch is kept beside the best, with what a resumed run needs.
    last = torch.load(stage.checkpoint.with_name("finetune-1.last.pt"), map_location="cpu", weights_only=True)
    assert last["epoch"] == len(stage.history) and last["optimizer"]["state"] and last["scheduler"]
    assert set(last["rng"]) >= {"torch", "numpy", "python", "generators"}
    saved = stored["weights"]
    pretrained = load_backbone(summary.spec.model).module.state_dict()
    stats = [key for key in pretrained if key.endswith(("running_mean", "running_var"))]
    assert len(stats) > 20
    for key in ["conv_stem.weight", "bn1.weight", "blocks.0.0.conv_dw.weight", *stats]:
        assert torch.equal(saved[f"encoder.{key}"], pretrained[key]), key
    assert not torch.equal(saved["encoder.conv_head.weight"], pretrained["conv_head.weight"])


def test_a_baseline_that_meets_the_target_runs_no_stage_and_says_why(runs):
    summaries, _, _ = runs
    summary = summaries["pass"]
    assert [s.name for s in summary.stages] == ["baseline"]
    decisions = stage_decisions(summary.decisions)
    assert [(d["stage"], d["action"]) for d in decisions] == [("baseline", "lock_in")]
    assert "meets the target on validation" in decisions[0]["reason"]
    assert "no fine-tuning stage runs" in decisions[0]["reason"]


def test_parent_runs_nested_runs_metrics_and_artifacts(runs):
    summaries, client, _ = runs
    first = summaries["pass"]
    assert set(child_runs(client, first)) == {"baseline"}
    assert client.get_metric_history(child_runs(client, first)["baseline"].info.run_id, "train_loss")
    parent = client.get_run(first.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith((first.spec.workdir / "mlartifacts").as_uri())
    assert parent.data.metrics["test_accuracy"] == pytest.approx(first.test.value)
    artifacts = {a.path for a in client.list_artifacts(first.run_id)} | {
        a.path for folder in ("plots", "quality", "split") for a in client.list_artifacts(first.run_id, folder)}
    assert {"model_card.md", "plots/test_confusion_matrix.png", "plots/learning_curves.png",
            "plots/per_class_validation.png", "decisions.json", "decisions.md", "quality/label_quality.md",
            "quality/report.md", "quality/label_issues.csv", "quality/leakage_pairs.csv", "quality/gx_results.json",
            "quality/data_docs"} <= artifacts
    assert "index.html" in {Path(a.path).name for a in client.list_artifacts(first.run_id, "quality/data_docs")}
    report = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/quality/report.md")
    assert report.startswith("# Data report: PASS") and "## Leakage across splits" in report
    assert any(path.startswith("split/") and path.endswith(".json") for path in artifacts)
    card = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/model_card.md")
    assert "PROMOTED" in card and first.split.test_fingerprint in card


def test_second_run_of_the_same_model_reuses_the_embedding_cache(runs):
    summaries, client, _ = runs
    second = summaries["reject"]
    baseline = child_runs(client, second)["baseline"]
    assert baseline.data.params["embeddings_computed"] == "0"
    assert int(baseline.data.params["embeddings_reused"]) == second.split.sizes["train"] + second.split.sizes["val"]
    # Another base model shares nothing: its run computed its own (in step 3a, every split, which
    # the label audit, the leakage check and the baseline then read); the first model's run did the
    # same for MobileNetV2.
    for name in ("pass", "finetune"):
        parent = client.get_run(summaries[name].run_id).data.params
        assert int(parent["embed_computed"]) == sum(summaries[name].split.sizes.values())
        assert parent["label_audit_embeddings_computed"] == "0"
    assert client.get_run(second.run_id).data.params["embed_computed"] == "0"


def test_test_split_read_exactly_once_per_run(runs):
    summaries, _, _ = runs
    readers = [r["reader"] for r in recorded_test_reads(summaries["pass"].split.manifest_path, "evaluation")]
    assert len(readers) == 3
    assert all(sum(s.run_id in r for r in readers) == 1 for s in summaries.values())
    # Step 3a (embedding them) and the leakage check read the test inputs too, each read logged under
    # the leakage check's purpose, not as an evaluation: once each per run.
    leakage = [r["reader"] for r in recorded_test_reads(summaries["pass"].split.manifest_path, "leakage check")]
    assert sorted(reader.split(":")[0] for reader in leakage) == ["check_leakage"] * 3 + ["embed_examples"] * 3


def test_predict_command_answers_like_the_registered_champion(runs, tmp_path):
    summaries, client, data = runs
    truth = image_labels(data)
    test_ids = manifest_splits(summaries["pass"].split.manifest_path)["test"][:4]
    images = [truth[i][0] for i in test_ids]
    champion = client.get_model_version_by_alias("ants-vs-bees", "champion").version
    expected = predict_registered(client, "ants-vs-bees", champion, [image_payload(p) for p in images])
    code, output = run_transferflow(["predict", "models:/ants-vs-bees@champion", *map(str, images),
                                     "--workdir", str(summaries["pass"].spec.workdir)], cwd=tmp_path)
    assert code == 0, output
    for image, label, probability in zip(images, expected["label"], expected["probability"], strict=True):
        row = next(line for line in output.splitlines() if image.name in line)
        cells = [cell.strip() for cell in row.strip("│ ").split("│")]
        assert cells[1] == label and float(cells[2]) == pytest.approx(probability, abs=1e-3)


def flow_runs_of(summaries, client):
    from prefect.client.orchestration import get_client

    ids = [client.get_run(s.run_id).data.tags["prefect_flow_run_id"] for s in summaries.values()]
    with get_client(sync_client=True) as prefect:
        return ids, [prefect.read_flow_run(flow_run_id) for flow_run_id in ids]


def test_prefect_ui_artifacts_are_keyed_per_model(runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summaries, client, _ = runs
    flow_run_ids, _ = flow_runs_of(summaries, client)
    keys = ["ants-vs-bees-label-quality", "ants-vs-bees-split-sizes", "ants-vs-bees-gate-decision",
            "ants-vs-bees-data-report"]
    with get_client(sync_client=True) as prefect:
        artifacts = [a for a in prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
                     if str(a.flow_run_id) in flow_run_ids]
    by_key: dict[str, list[str]] = {}
    for artifact in artifacts:
        by_key.setdefault(artifact.key, []).append(str(artifact.data))
    assert {key: len(items) for key, items in by_key.items()} == dict.fromkeys(keys, 3)
    assert sorted("PROMOTED" in text for text in by_key["ants-vs-bees-gate-decision"]) == [False, False, True]
    assert all("Label-quality report: PASSED" in text for text in by_key["ants-vs-bees-label-quality"])
    assert all(text.startswith("# Data report: PASS") for text in by_key["ants-vs-bees-data-report"])


def test_flow_runs_are_named_and_tagged_after_the_model_trigger_and_decision(runs):
    summaries, client, _ = runs
    _, flow_runs = flow_runs_of(summaries, client)
    assert all(run.name.startswith("ants-vs-bees-manual-") for run in flow_runs)
    assert [sorted(t for t in run.tags if ":" in t) for run in flow_runs] == [
        ["decision:promoted", "model:ants-vs-bees", "trigger:manual"],
        ["decision:rejected", "model:ants-vs-bees", "trigger:manual"],
        ["decision:rejected", "model:ants-vs-bees", "trigger:manual"]]


def test_the_gate_emits_an_event_per_decision_on_the_models_resource(runs):
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    summaries, _, _ = runs
    versions = {s.outcome.registration.version: s.outcome.decision.verdict for s in summaries.values()}
    event_filter = EventFilter(event=EventNameFilter(prefix=["transferflow.model."]),
                               resource=EventResourceFilter(id=["transferflow.model.ants-vs-bees"]))
    deadline = time.monotonic() + 30  # events reach the server asynchronously
    while True:
        with get_client(sync_client=True) as prefect:
            events = prefect.read_events(filter=event_filter, limit=50).events
        seen = {e.payload["version"]: e.event.removeprefix("transferflow.model.") for e in events}
        if {v: seen.get(v) for v in versions} == versions or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {v: seen.get(v) for v in versions} == versions


def test_the_version_history_artifact_lists_every_version_with_its_evidence(runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summaries, client, _ = runs
    with get_client(sync_client=True) as prefect:
        [latest] = prefect.read_latest_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["ants-vs-bees-versions"])))
    rows = [line for line in str(latest.data).splitlines() if line.startswith("| ") and line[2].isdigit()]
    versions = [client.get_model_version("ants-vs-bees", s.outcome.registration.version) for s in summaries.values()]
    assert len(rows) == 3
    for row, version in zip(rows, reversed(versions), strict=True):  # newest first
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0].split()[0] == str(version.version) and cells[-1] == version.tags["decision"]
        evidence = version_evidence(client, version)
        assert cells[2] == f"{evidence['n_train']} / {evidence['n_val']} / {evidence['n_test']}"
        assert cells[3] == f"accuracy {float(version.tags['test_metric']):.4f}"
    assert "(**champion**)" in rows[-1] and "champion" not in rows[0].split("|")[1]


@pytest.fixture(scope="module")
def scheduled_rerun(runs):
    """A scheduled retrain on exactly the champion's training data, and how many test reads the
    access log held before it."""
    summaries, _, _ = runs
    config = summaries["pass"].spec.workdir.parent / "pass" / "config.yaml"
    reads_before = len(recorded_test_reads(summaries["pass"].split.manifest_path))
    return transfer_learning(str(config), trigger="schedule"), reads_before


def test_a_scheduled_retrain_on_unchanged_data_trains_and_reads_nothing(runs, scheduled_rerun):
    from tasks.steps.refs import UnchangedData

    summaries, client, _ = runs
    scheduled_rerun, reads_before_rerun = scheduled_rerun
    assert isinstance(scheduled_rerun, UnchangedData)
    champion = client.get_model_version_by_alias("ants-vs-bees", "champion").version
    assert scheduled_rerun.champion_version == str(champion) and "nothing new to learn from" in scheduled_rerun.reason
    assert len(client.search_model_versions("name = 'ants-vs-bees'")) == 3  # nothing registered
    assert len(recorded_test_reads(summaries["pass"].split.manifest_path, "evaluation")) == 3  # no evaluation
    # found from the data's fingerprint before the audit: not even the leakage check read the test inputs
    assert len(recorded_test_reads(summaries["pass"].split.manifest_path)) == reads_before_rerun
    parent = client.get_run(scheduled_rerun.run_id)
    assert parent.data.tags["decision"] == "nothing-new" and parent.info.status == "FINISHED"
    assert not client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{scheduled_rerun.run_id}'")  # no stage ran


def test_a_drift_triggered_retrain_on_unchanged_data_points_at_the_batch_waiting_for_labels(runs):
    summaries, _, _ = runs
    workdir = summaries["pass"].spec.workdir
    kept = workdir / "incoming" / "ants-vs-bees"
    for stamp in ("20261127T090000000000Z", "20261127T100000000000Z"):  # as the drift check names them
        (kept / stamp).mkdir(parents=True)
    config = workdir.parent / "pass" / "config.yaml"

    rerun = transfer_learning(str(config), trigger="drift")

    assert "nothing new to learn from" in rerun.reason
    assert f"The drifted batch waits for labels in {kept / '20261127T100000000000Z'}" in rerun.reason

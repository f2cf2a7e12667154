"""Drift end to end: a real flow promotes an SMS spam model (storing its drift reference), then
`transferflow drift --json` checks an in-domain batch (no drift) and a banking batch (drift: batch
kept with a manifest, report in MLflow and Prefect, event emitted). Numbers are recomputed
independently; bad input answers with one line, exit 2, and creates nothing."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from scipy.spatial.distance import cdist

from flows.drift import drift_check
from flows.transfer_learning import transfer_learning
from tests.conftest import shared_dataset, small_image, write_config
from tests.integration.conftest import csv_slice, run_transferflow, sms_config
from tests.integration.evidence import manifest_splits, predict_registered, text_labels

pytestmark = pytest.mark.integration

MODEL = "spam-watch"
IMAGE_CONFIG = """
task: Tell ants from bees.
metric: {{name: accuracy, target: 0.9}}
data: {{kind: image_folder, path: {data}, min_examples_per_class: 3}}
model: {{family: torchvision, name: mobilenet_v2, image_size: 32}}
registry: {{model_name: ants-watch}}
workdir: {workdir}
"""


def write_texts(path: Path, texts: list[str], column: str = "text") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([column])
        writer.writerows([t] for t in texts)
    return path


def drift_json(config: Path, incoming: Path, cwd: Path) -> dict:
    """`transferflow drift --json` as a user runs it: stdout must hold exactly one JSON object."""
    from prefect.settings import PREFECT_API_URL

    from flows.runtime import ALLOCATOR_SETTINGS

    env = {**os.environ, **ALLOCATOR_SETTINGS, "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run([sys.executable, "-m", "flows.cli", "drift", str(config), "--incoming", str(incoming),
                             "--json"], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """One promoted model, then two drift checks."""
    began = time.monotonic()
    folder = tmp_path_factory.mktemp("drift-flow")
    source = shared_dataset("sms_spam") / "sms_spam.csv"
    data = csv_slice(source, folder / "sms.csv", {"ham": 140, "spam": 60})
    config = sms_config(folder, data, folder / "work", metric={"name": "f1", "class": "spam", "target": 0.5},
                        gate={"min_fresh_test": 3}, drift={"permutations": 199}, registry={"model_name": MODEL})
    summary = transfer_learning(str(config))
    assert summary.outcome.decision.passed, summary.outcome.decision.reason
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    unseen = {label: [r["text"] for r in rows if r["label"] == label] for label in ("ham", "spam")}
    # Same source and the training slice's class mix (70% ham), rows the slice does not hold.
    in_domain = write_texts(folder / "in-domain.csv", unseen["ham"][140:210] + unseen["spam"][60:90])
    with (shared_dataset("banking77") / "test.csv").open(newline="", encoding="utf-8") as handle:
        banking = [r["text"] for r in csv.DictReader(handle)][:100]
    shifted = write_texts(folder / "banking.csv", banking)
    started = time.monotonic()
    # In process for the in-domain batch (the backbone is already loaded), through the command for the other.
    reports = {"in_domain": drift_check(str(config), str(in_domain)).as_json()}
    checked_in_process = time.monotonic()
    reports["shifted"] = drift_json(config, shifted, folder)
    reports["shifted again"] = drift_json(config, shifted, folder)  # the next scheduled check, same batch
    print(f"flow {started - began:.0f} s, in-process check {checked_in_process - started:.0f} s, "
          f"command {time.monotonic() - checked_in_process:.0f} s", file=sys.stderr)
    return summary, reports, MlflowClient(f"sqlite:///{folder / 'work' / 'mlflow.db'}"), folder, config


def test_the_promoted_version_stores_a_reference_of_examples_it_never_trained_on(checked):
    """Every validation example, then test inputs (read after the gate, logged as such), never a
    training example; the class mix stored is what the registered model predicts on them,
    recomputed through its pyfunc."""
    from tasks.data.split import recorded_test_reads

    summary, _, client, folder, _ = checked
    version = client.get_model_version_by_alias(MODEL, "champion")
    local = Path(client.download_artifacts(version.run_id, "drift_reference", str(folder / "reference")))
    facts = json.loads((local / "reference.json").read_text())
    embeddings = np.load(local / "embeddings.npz")["embeddings"]
    splits = manifest_splits(summary.split.manifest_path)
    ids = set(facts["example_ids"])
    assert not ids & set(splits["train"]) and set(splits["val"]) <= ids <= set(splits["val"]) | set(splits["test"])
    assert facts["sources"] == {"validation": len(splits["val"]), "test": len(ids) - len(splits["val"])}
    assert embeddings.shape == (len(ids), 384) and facts["n"] == len(ids)
    purposes = [r["purpose"] for r in recorded_test_reads(summary.split.manifest_path)]
    assert purposes[purposes.index("evaluation"):] == ["evaluation", "drift reference"]  # after the gate, logged
    truth = text_labels(folder / "sms.csv")
    predicted = predict_registered(client, MODEL, version.version, [truth[i][0] for i in facts["example_ids"]])
    shares = predicted["label"].value_counts(normalize=True)
    assert facts["class_mix"] == pytest.approx({c: float(shares.get(c, 0.0)) for c in ("ham", "spam")})
    assert client.get_run(version.run_id).data.tags["drift_reference"].startswith("drift_reference/")
    assert "drift_reference" not in version.tags  # the version row keeps its five tags


def test_an_in_domain_batch_is_not_flagged_and_nothing_is_stored(checked):
    _, reports, _, folder, _ = checked
    report = reports["in_domain"]
    assert report["drift"] is False and report["p_value"] >= 0.05 and report["n"] == 100
    stored = [p for p in (folder / "work" / "incoming" / MODEL).iterdir()]
    assert report["stored_batch"] is None and stored == [Path(reports["shifted"]["stored_batch"])]


def test_a_batch_from_another_domain_is_flagged_with_a_recomputed_score(checked):
    """The score is recomputed with numpy from the stored reference and the champion backbone's
    embeddings of the batch; the p-value is at its floor 1/(permutations + 1)."""
    from tasks.models.features import embed_inputs
    from tasks.registry.champion import restore_registered

    _, reports, client, folder, _ = checked
    report = reports["shifted"]
    assert report["drift"] is True and report["n"] == 100 and report["p_value"] == pytest.approx(1 / 200)
    version = client.get_model_version_by_alias(MODEL, "champion")
    reference = np.load(Path(client.download_artifacts(version.run_id, "drift_reference/embeddings.npz",
                                                       str(folder / "recompute"))))["embeddings"]
    classifier, _ = restore_registered(client, version.run_id)
    texts = [r["text"] for r in csv.DictReader((folder / "banking.csv").open(encoding="utf-8"))]
    incoming = embed_inputs(classifier.backbone, texts, 32).astype(np.float64)
    pooled = np.concatenate([reference.astype(np.float64), incoming])
    distances = cdist(pooled, pooled, "sqeuclidean")
    upper = distances[np.triu_indices(len(pooled), 1)]
    kernel = np.exp(-distances / (2 * np.sort(upper)[(len(upper) - 1) // 2]))
    np.fill_diagonal(kernel, 0.0)
    n, m = len(reference), len(incoming)
    score = (kernel[:n, :n].sum() / (n * (n - 1)) + kernel[n:, n:].sum() / (m * (m - 1))
             - 2 * kernel[:n, n:].sum() / (n * m))
    assert report["score"] == pytest.approx(score, rel=1e-4)


def test_a_drifted_batch_is_kept_with_a_manifest_ready_for_labeling(checked):
    _, reports, _, folder, _ = checked
    stored = Path(reports["shifted"]["stored_batch"])
    assert stored.parent == folder / "work" / "incoming" / MODEL
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["n"] == 100 and manifest["files"] == ["texts.csv"] and manifest["p_value"] < 0.05
    kept = list(csv.DictReader((stored / "texts.csv").open(encoding="utf-8")))
    original = [r["text"] for r in csv.DictReader((folder / "banking.csv").open(encoding="utf-8"))]
    assert [r["text"] for r in kept] == original and {r["label"] for r in kept} == {""}


def test_each_check_is_an_mlflow_run_and_a_prefect_artifact(checked):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, reports, client, _, _ = checked
    for name in ("in_domain", "shifted"):
        report = reports[name]
        run = client.get_run(report["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.metrics["p_value"] == pytest.approx(report["p_value"])
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"drift_report.md", "drift_report.png", "drift_report.json"} <= names
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{MODEL}-drift"])))
    texts = sorted(str(a.data).split("\n")[0] for a in artifacts)
    assert len(texts) == 2 and "**DRIFT**" in texts[0] and "**no drift**" in texts[1]


def test_a_batch_checked_again_keeps_its_first_verdict_and_is_not_copied_or_evented_again(checked):
    _, reports, client, folder, _ = checked
    first, again = reports["shifted"], reports["shifted again"]
    assert again["already_checked"] == first["mlflow_run_id"] and again["drift"] is True
    assert again["p_value"] == first["p_value"] and again["stored_batch"] == first["stored_batch"]
    assert len(list((folder / "work" / "incoming" / MODEL).iterdir())) == 1  # copied once
    experiment = client.get_experiment_by_name(f"{MODEL}-drift").experiment_id
    assert len(client.search_runs([experiment])) == 2  # the repeat logged no third check


def test_drift_emits_an_event_on_the_models_resource(checked):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    _, reports, _, _, config = checked
    event_filter = EventFilter(event=EventNameFilter(name=["transferflow.drift.detected"]),
                               resource=EventResourceFilter(id=[f"transferflow.model.{MODEL}"]))
    deadline = time.monotonic() + 30  # events reach the server asynchronously
    while True:
        with get_client(sync_client=True) as prefect:
            events = prefect.read_events(filter=event_filter, limit=10).events
        if events or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(events) == 1  # the in-domain check and the repeated one emitted nothing
    payload = events[0].payload
    assert payload["config_path"] == str(config.resolve()) and payload["n"] == 100
    assert payload["stored_batch"] == reports["shifted"]["stored_batch"]


def one_line_error(code: int, output: str, *fragments: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in output, output
    assert all(f in lines[0] for f in fragments), lines[0]


def image_config(tmp_path: Path) -> Path:
    for label in ("ants", "bees"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(4):
            small_image((16, 16), (i * 40, len(label), 3)).save(tmp_path / "data" / label / f"{i}.png")
    return write_config(tmp_path, IMAGE_CONFIG.format(data=tmp_path / "data", workdir=tmp_path / "work"))


def test_bad_batches_and_a_model_without_champion_answer_in_one_line(tmp_path):
    config = image_config(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(*run_transferflow(["drift", str(config), "--incoming", str(empty)], cwd=tmp_path),
                   "empty: no image files in this folder", "Fix: pass a folder of image files")
    batch = tmp_path / "batch"
    batch.mkdir()
    for i in range(12):
        Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(batch / f"{i}.png")
    (batch / "torn.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    one_line_error(*run_transferflow(["drift", str(config), "--incoming", str(batch)], cwd=tmp_path),
                   "torn.jpg: not an image file PIL can read", "Fix: remove or replace")
    (batch / "torn.jpg").unlink()
    one_line_error(*run_transferflow(["drift", str(config), "--incoming", str(batch)], cwd=tmp_path),
                   "model 'ants-watch' has no version with alias 'champion' yet", "Fix: run `transferflow run")
    assert not (tmp_path / "work").exists() and not list(tmp_path.rglob("mlflow.db"))


def test_a_csv_without_the_text_column_answers_in_one_line_and_logs_nothing(checked, tmp_path):
    _, _, client, _, config = checked
    experiment = client.get_experiment_by_name(f"{MODEL}-drift").experiment_id
    before = len(client.search_runs([experiment]))
    texts = write_texts(tmp_path / "texts.csv", ["hello there"] * 12, column="message")
    one_line_error(*run_transferflow(["drift", str(config), "--incoming", str(texts)], cwd=tmp_path),
                   "no column 'text'", "Fix: pass --column NAME")
    assert len(client.search_runs([experiment])) == before
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1


def insect_like(folder: Path, label: str, count: int, start: int = 0) -> None:
    """Images of one class: warm (red-dominant) or cool (blue-dominant) textures, each distinct. Every
    run of 30 consecutive `i` draws the same spread of colours (its own textures): in-domain."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        shade, other = 180 + (i % 30) * 2, 40 + i * 7 % 50
        colour = (shade, other, 30 + i // 30) if label == "warm" else (30 + i // 30, other, shade)
        small_image((24, 24), colour).save(folder / f"{label}-{i}.png")


def test_an_image_champion_is_checked_end_to_end(tmp_path):
    """The image path through the real flows: promote a MobileNetV2 champion (its reference: images
    it never trained on), then check an in-domain batch (no drift, nothing kept) and a batch of
    grey stripes (drift: kept under unlabeled/, byte for byte)."""
    for label in ("warm", "cool"):
        insect_like(tmp_path / "data" / label, label, 30)
    config = write_config(tmp_path, f"""
task: Tell warm textures from cool ones.
metric: {{name: accuracy, target: 0.6}}
data: {{kind: image_folder, path: {tmp_path / "data"}, min_examples_per_class: 3}}
model: {{family: torchvision, name: mobilenet_v2, image_size: 32}}
finetune: {{max_stages: 0}}
gate: {{min_fresh_test: 3}}
drift: {{permutations: 199}}
registry: {{model_name: textures-watch}}
workdir: {tmp_path / "work"}
""")
    summary = transfer_learning(str(config))
    assert summary.outcome.decision.passed, summary.outcome.decision.reason
    for label in ("warm", "cool"):
        insect_like(tmp_path / "in-domain", label, 30, start=30)
    stripes = tmp_path / "stripes"
    stripes.mkdir()
    for i in range(30):
        pixels = np.zeros((24, 24, 3), dtype=np.uint8)
        pixels[:, (i % 3)::3] = 200 + i
        Image.fromarray(pixels).save(stripes / f"{i}.png")
    quiet = drift_check(str(config), str(tmp_path / "in-domain"))
    flagged = drift_check(str(config), str(stripes))
    assert not quiet.drift and quiet.stored_batch is None and quiet.n == 60, quiet.summary()
    assert flagged.drift and flagged.p_value == pytest.approx(1 / 200), flagged.summary()
    kept = Path(flagged.stored_batch or "")
    assert sorted(p.name for p in (kept / "unlabeled").iterdir()) == sorted(p.name for p in stripes.iterdir())
    assert all((kept / "unlabeled" / p.name).read_bytes() == p.read_bytes() for p in stripes.iterdir())
    splits = manifest_splits(summary.split.manifest_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    version = client.get_model_version_by_alias("textures-watch", "champion")
    facts = json.loads(Path(client.download_artifacts(version.run_id, "drift_reference/reference.json",
                                                      str(tmp_path / "reference"))).read_text())
    assert set(facts["example_ids"]) == set(splits["val"]) | set(splits["test"])  # fewer than reference_size
    assert flagged.reference_n == len(facts["example_ids"])

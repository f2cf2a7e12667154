"""Review queues (`transferflow label export / pull --from`): the kept batch and the suspects as a CSV
or a folder a reviewer fills in, read back into the labels store; and the blind rule, which keeps the
champion's prediction away from every example that is or may become a test example."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from flows.cli import app
from tasks.config.loading import load_spec
from tasks.core.hashing import sha256_file, sha256_text
from tasks.data.labels_store import read_records
from tasks.data.readers import load_examples
from tasks.data.split import split_history_folder
from tasks.data.split_history import FolderHistoryStore, History
from tasks.labeling.loop import recorded_splits
from tasks.labeling.queues import Queue, QueueItem, incoming_queue, suspects_queue, with_predictions
from tasks.steps.data import load_data
from tests.conftest import small_image, write_config
from tests.unit.data.test_labels_store import CONFIG, make_spec


def test_only_train_and_validation_items_ever_carry_the_champions_prediction():
    items = tuple(QueueItem(f"id-{split or 'none'}", "x", "a", split=split) for split in ("train", "val", "test", ""))
    predictions = {item.example_id: ("b", 0.9) for item in items}
    shown = with_predictions(Queue("suspects", "text", "r", items), predictions)
    assert {item.split: item.prediction for item in shown.items} == {"train": "b", "val": "b", "test": "", "": ""}
    assert [item.blind for item in shown.items] == [False, False, True, True]


def test_suspects_take_their_split_from_the_history_so_a_test_suspect_is_blind_to_the_audits_suggestion(tmp_path):
    spec = make_spec(tmp_path)
    in_test, in_train = sha256_text("a card question, number 1"), sha256_text("a card question, number 2")
    store = FolderHistoryStore(split_history_folder(spec.workdir, "bank"))
    store.folder.mkdir(parents=True)
    assert store.write(History.new().next({in_test: "test", in_train: "train"}))
    assert recorded_splits(spec) == {in_test: "test", in_train: "train"}
    report = spec.workdir / "reports" / "bank" / "0123456789abcdef"
    report.mkdir(parents=True)
    pd.DataFrame([{"example_id": i, "suggested_label": "refund", "score": 0.01} for i in (in_test, in_train)]) \
        .to_csv(report / "label_issues.csv", index=False)
    queue = suspects_queue(load_examples(spec.data), spec.data, spec.workdir / "reports" / "bank",
                           recorded_splits(spec))
    assert [(item.example_id, item.blind) for item in queue.items] == [(in_test, True), (in_train, False)]
    assert [(item.current_label, item.shown_suggestion) for item in queue.items] == [("card", ("", None)),
                                                                                      ("card", ("refund", 0.01))]


def kept_text_batch(spec, texts: list[str]) -> Path:
    """A batch as `transferflow drift` keeps it (tasks/steps/monitor.py keep_incoming_batch)."""
    folder = spec.workdir / "incoming" / "bank" / "20261203T000000000000Z"
    folder.mkdir(parents=True)
    pd.DataFrame({"text": texts, "label": ""}).to_csv(folder / "texts.csv", index=False)
    (folder / "manifest.json").write_text(json.dumps({"modality": "text", "files": ["texts.csv"]}))
    return folder


def test_an_exported_incoming_batch_comes_back_as_new_training_examples(tmp_path):
    spec = make_spec(tmp_path)
    new = ["can I pay my bill in two parts", "my card was swallowed"]
    kept_text_batch(spec, new)
    queue_csv = tmp_path / "incoming.csv"
    config = tmp_path / "config.yaml"
    result = CliRunner().invoke(app, ["label", "export", str(config), "--what", "incoming", "--out", str(queue_csv)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(queue_csv, dtype=str, keep_default_na=False)
    assert rows["input"].tolist() == new and set(rows["current_label"]) == {""} and set(rows["prediction"]) == {""}
    rows["label"] = ["billing", ""]  # the second one not answered yet
    rows.to_csv(queue_csv, index=False)
    before = load_data.fn(spec).fingerprint
    result = CliRunner().invoke(app, ["label", "pull", str(config), "--from", str(queue_csv)])
    assert result.exit_code == 0 and "1 new, 1 skipped" in result.output, result.output
    assert "transferflow.labels.added" in result.output  # sent, or (no Prefect server) said why not
    (record,) = read_records(spec.data.labels_folder)
    assert (record.kind, record.example_id, record.input, record.new_label) == ("new", sha256_text(new[0]), new[0],
                                                                               "billing")
    loaded = load_data.fn(spec)
    assert loaded.fingerprint != before
    table = pd.read_parquet(loaded.table_path)
    assert table.loc[table["example_id"] == sha256_text(new[0]), "label"].tolist() == ["billing"]


def test_an_image_queue_exports_as_a_folder_a_reviewer_can_browse_and_pulls_back(tmp_path):
    for label, colour in (("ants", (200, 40, 40)), ("bees", (40, 40, 200))):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(6):
            small_image((48 + i, 48), colour).save(tmp_path / "images" / label / f"{i}.png")
    config = write_config(tmp_path, CONFIG.replace("kind: csv_text, path: data.csv{extra}", "kind: image_folder, "
                                                   "path: images").replace("hf_text, name: all-MiniLM-L6-v2",
                                                                           "torchvision, name: mobilenet_v2").format())
    spec = load_spec(config)
    batch = spec.workdir / "incoming" / "bank" / "20261203T000000000000Z"
    (batch / "unlabeled").mkdir(parents=True)
    small_image((60, 60), (40, 200, 40)).save(batch / "unlabeled" / "new.png")
    (batch / "manifest.json").write_text(json.dumps({"modality": "image", "files": ["unlabeled/new.png"]}))
    assert [item.example_id for item in incoming_queue(batch, spec.data).items] == [
        sha256_file(batch / "unlabeled" / "new.png")]
    out = tmp_path / "to-review"
    result = CliRunner().invoke(app, ["label", "export", str(config), "--what", "incoming", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "queue.csv", dtype=str, keep_default_na=False)
    (copied,) = (out / "files").iterdir()
    assert rows["input"].tolist() == [f"files/{copied.name}"]
    assert copied.read_bytes() == (batch / "unlabeled" / "new.png").read_bytes()
    rows["label"] = "bees"
    rows.to_csv(out / "queue.csv", index=False)
    result = CliRunner().invoke(app, ["label", "pull", str(config), "--from", str(out / "queue.csv")])
    assert result.exit_code == 0 and "1 new" in result.output, result.output
    table = pd.read_parquet(load_data.fn(spec).table_path)
    added = table[table["example_id"] == rows.loc[0, "id"]]
    assert added["label"].tolist() == ["bees"]
    assert Path(added["input"].item()).parent == spec.data.labels_folder / "files"


def test_push_without_a_server_configured_says_which_variables_to_set(tmp_path, monkeypatch):
    make_spec(tmp_path)
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    result = CliRunner().invoke(app, ["label", "push", str(tmp_path / "config.yaml")])
    assert result.exit_code == 2
    assert "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must both be set" in result.output


def test_push_to_a_server_that_does_not_answer_exits_2_naming_it(tmp_path, monkeypatch):
    from tests.mlflow_server import free_port

    make_spec(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-key")
    result = CliRunner().invoke(app, ["label", "status", str(tmp_path / "config.yaml")])
    assert result.exit_code == 2 and f"LABEL_STUDIO_URL={url}: Label Studio does not answer" in result.output


def test_a_cross_check_sample_comes_back_as_second_opinions_that_the_cross_check_measures(tmp_path):
    from sklearn.metrics import cohen_kappa_score

    from tasks.data.labels_store import second_opinions
    from tests.unit.data.test_labels_store import texts

    texts().to_csv(tmp_path / "data.csv", index=False)
    config = write_config(tmp_path, CONFIG.format(extra=", cross_check: {min_kappa: 0.95}, "
                                                        "cross_check_policy: report"))
    spec = load_spec(config)
    assert load_data.fn(spec).cross_check is None  # no second labels yet: nothing to measure, no failure
    queue_csv = tmp_path / "cross-check.csv"
    result = CliRunner().invoke(app, ["label", "export", str(config), "--what", "cross-check", "--limit", "12",
                                      "--out", str(queue_csv)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(queue_csv, dtype=str, keep_default_na=False)
    assert len(rows) == 12 and set(rows["queue"]) == {"cross-check"} and set(rows["current_label"]) == {""}
    first = dict(zip(*(texts()[c] for c in ("text", "label")), strict=True))
    # The second labeller agrees except on three billing/refund questions, which they swap.
    rows["label"] = [{"billing": "refund", "refund": "billing"}.get(first[text], first[text]) if i < 3 else first[text]
                     for i, text in enumerate(rows["input"])]
    rows.to_csv(queue_csv, index=False)
    result = CliRunner().invoke(app, ["label", "pull", str(config), "--from", str(queue_csv)])
    assert result.exit_code == 0 and "12 second opinion(s)" in result.output, result.output
    assert "transferflow.labels.added" not in result.output  # no label changed: no retrain is asked for
    assert len(second_opinions(spec.data.labels_folder)) == 12
    dataset = load_data.fn(spec)
    table = pd.read_parquet(dataset.table_path)
    assert all(first[text] == label for text, label in zip(table["input"], table["label"], strict=True))
    swapped = [text for text, label in zip(rows["input"], rows["label"], strict=True) if first[text] != label]
    assert swapped and len(table) == len(first) - len(swapped)  # opinions change no label; disagreements held out
    expected = cohen_kappa_score([first[t] for t in rows["input"]], rows["label"], labels=sorted(set(first.values())))
    assert dataset.cross_check.overlap == 12 and abs(dataset.cross_check.kappa - expected) < 1e-9
    # The next sample leaves out what the second labeller answered.
    again = tmp_path / "again.csv"
    CliRunner().invoke(app, ["label", "export", str(config), "--what", "cross-check", "--out", str(again)])
    assert not set(pd.read_csv(again)["id"]) & set(rows["id"])

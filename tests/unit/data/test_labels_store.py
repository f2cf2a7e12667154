"""The labels store (`transferflow label pull`, `label revert`): reviewed labels kept as append-only
records beside the data and applied when the data loads, all-or-nothing on a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.config.loading import load_spec
from tasks.config.spec import Spec
from tasks.core.errors import DataError
from tasks.core.hashing import sha256_text
from tasks.data.labels_store import read_records, revert_pull
from tasks.data.readers import load_examples
from tasks.labeling.answers_file import pull_from_file
from tasks.steps.data import labels_store_section, load_data
from tasks.steps.split import split_before_training
from tests.conftest import write_config

CLASSES = ["billing", "card", "refund", "transfer"]
PER_CLASS = 20
CONFIG = """
task: Route banking questions.
metric: {{name: accuracy, target: 0.9}}
data: {{kind: csv_text, path: data.csv{extra}}}
model: {{family: hf_text, name: all-MiniLM-L6-v2}}
registry: {{model_name: bank}}
"""


def texts(splits: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame([(f"a {label} question, number {i}", label) for label in CLASSES for i in range(PER_CLASS)],
                         columns=["text", "label"])
    if splits:  # given splits: the last 5 of each class are test
        frame["split"] = ["test" if i >= PER_CLASS - 5 else "train" for _ in CLASSES for i in range(PER_CLASS)]
    return frame


def make_spec(tmp_path: Path, splits: bool = False) -> Spec:
    texts(splits).to_csv(tmp_path / "data.csv", index=False)
    return load_spec(write_config(tmp_path, CONFIG.format(extra=", split_column: split" if splits else "")))


def answers(tmp_path: Path, rows: list[dict[str, str]], name: str = "answers.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows, columns=["id", "input", "label"]).to_csv(path, index=False)
    return path


def pull(spec: Spec, path: Path):
    return pull_from_file(load_examples(spec.data), spec.data, path, who="tester")


def label_of(spec: Spec, text: str) -> str:
    table = pd.read_parquet(load_data.fn(spec).table_path)
    return str(table.loc[table["example_id"] == sha256_text(text), "label"].item())


def store_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


def test_the_store_lies_beside_the_csv_never_inside_the_data(tmp_path):
    spec = make_spec(tmp_path)
    assert spec.data.labels_folder == tmp_path / "data.labels"
    text = "a billing question, number 0"
    data_before = (tmp_path / "data.csv").read_bytes()
    result = pull(spec, answers(tmp_path, [{"id": sha256_text(text), "label": "refund"}]))
    assert (tmp_path / "data.csv").read_bytes() == data_before
    assert [p.name for p in (tmp_path / "data.labels").iterdir()] == [f"{result.pull}.jsonl"]


def test_a_correction_changes_the_loaded_label_and_the_fingerprint_and_a_revert_restores_both(tmp_path):
    spec = make_spec(tmp_path)
    text = "a billing question, number 3"
    before = load_data.fn(spec).fingerprint
    result = pull(spec, answers(tmp_path, [{"id": sha256_text(text), "label": "refund"},
                                           {"id": sha256_text("a card question, number 1"), "label": "card"},
                                           {"id": sha256_text("a card question, number 2"), "label": ""}]))
    assert (result.corrected, result.confirmed, result.new, result.skipped) == (1, 1, 0, 1)
    (record,) = read_records(spec.data.labels_folder)
    assert (record.old_label, record.new_label, record.kind, record.who) == ("billing", "refund", "correction",
                                                                             "tester")
    corrected = load_data.fn(spec)
    assert label_of(spec, text) == "refund" and corrected.fingerprint != before
    assert corrected.labels_corrected == 1 and corrected.labels_added == 0
    assert revert_pull(spec.data, result.pull) == 1
    restored = load_data.fn(spec)
    assert label_of(spec, text) == "billing" and restored.fingerprint == before
    assert len(list(spec.data.labels_folder.glob("*.jsonl"))) == 2  # the revert is a new file, not an edit


def test_a_pull_that_contradicts_another_reviewers_applied_label_is_refused_and_the_applied_one_stands(tmp_path):
    spec = make_spec(tmp_path)
    text = "a billing question, number 3"
    first = pull(spec, answers(tmp_path, [{"id": sha256_text(text), "label": "refund"}]))
    before = store_bytes(spec.data.labels_folder)
    with pytest.raises(DataError, match=f"the applied label stands.*label revert --pull {first.pull}") as error:
        pull(spec, answers(tmp_path, [{"id": sha256_text(text), "label": "card"}], "second.csv"))
    assert "row 2: says 'card', but tester set 'refund'" in str(error.value)
    assert store_bytes(spec.data.labels_folder) == before and label_of(spec, text) == "refund"
    # Confirming the applied label is no conflict; after the revert, the other answer applies.
    assert pull(spec, answers(tmp_path, [{"id": sha256_text(text), "label": "refund"}], "third.csv")).confirmed == 1
    revert_pull(spec.data, first.pull, who="tester")
    assert pull(spec, answers(tmp_path, [{"id": sha256_text(text), "label": "card"}], "second.csv")).corrected == 1
    assert label_of(spec, text) == "card"


def test_the_same_row_answered_again_is_an_edit_and_the_edit_wins(tmp_path):
    spec = make_spec(tmp_path)
    text = "a billing question, number 3"
    pull(spec, answers(tmp_path, [{"id": sha256_text(text), "label": "refund"}]))
    pull(spec, answers(tmp_path, [{"id": sha256_text(text), "label": "card"}]))  # same file, same row, edited
    assert label_of(spec, text) == "card"


@pytest.mark.parametrize("bad_row, named", [
    ({"id": sha256_text("a card question, number 1"), "label": "loans"}, "label 'loans' is not a class"),
    ({"id": "0" * 64, "label": "card"}, "names no example of the data"),
])
def test_a_half_bad_file_applies_nothing(tmp_path, bad_row, named):
    spec = make_spec(tmp_path)
    pull(spec, answers(tmp_path, [{"id": sha256_text("a billing question, number 3"), "label": "refund"}], "a.csv"))
    before = store_bytes(spec.data.labels_folder)
    good = {"id": sha256_text("a billing question, number 4"), "label": "refund"}
    with pytest.raises(DataError, match=named) as error:
        pull(spec, answers(tmp_path, [good, bad_row]))
    assert "row 3" in str(error.value) and "nothing applied" in str(error.value)
    assert store_bytes(spec.data.labels_folder) == before
    assert label_of(spec, "a billing question, number 4") == "billing"


def test_an_empty_file_is_refused(tmp_path):
    spec = make_spec(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("id,input,label\n")
    with pytest.raises(DataError, match="no rows"):
        pull(spec, empty)
    assert not spec.data.labels_folder.exists()


def test_a_corrected_test_example_stays_in_test(tmp_path):
    spec = make_spec(tmp_path)
    first = split_before_training.fn(spec, load_data.fn(spec))
    test_id = json.loads(first.manifest_path.read_text())["splits"]["test"][0]
    table = pd.read_parquet(load_data.fn(spec).table_path)
    old = str(table.loc[table["example_id"] == test_id, "label"].item())
    new = next(c for c in CLASSES if c != old)
    pull(spec, answers(tmp_path, [{"id": test_id, "label": new}]))
    dataset = load_data.fn(spec)
    again = split_before_training.fn(spec, dataset)
    assert test_id in json.loads(again.manifest_path.read_text())["splits"]["test"]
    table = pd.read_parquet(dataset.table_path)
    assert table.loc[table["example_id"] == test_id, "label"].item() == new and dataset.labels_corrected == 1


def test_new_texts_are_added_and_go_to_training_under_given_splits(tmp_path):
    spec = make_spec(tmp_path, splits=True)
    before = load_data.fn(spec)
    new = [f"a brand new refund question {i}" for i in range(3)]
    result = pull(spec, answers(tmp_path, [{"input": text, "label": "refund"} for text in new]))
    assert result.new == 3
    dataset = load_data.fn(spec)
    assert dataset.labels_added == 3 and dataset.fingerprint != before.fingerprint
    split = split_before_training.fn(spec, dataset)
    train = set(json.loads(split.manifest_path.read_text())["splits"]["train"])
    assert {sha256_text(text) for text in new} <= train


def test_the_report_counts_corrected_and_added_labels(tmp_path):
    spec = make_spec(tmp_path)
    assert labels_store_section(spec, load_data.fn(spec)) is None
    pull(spec, answers(tmp_path, [{"id": sha256_text("a billing question, number 3"), "label": "refund"},
                                  {"input": "a brand new card question", "label": "card"}]))
    section = labels_store_section(spec, load_data.fn(spec))
    assert section is not None and "1 label(s) corrected and 1 example(s) added" in section.summary


def test_label_pull_through_the_cli_prints_counts_and_exits_2_on_a_bad_file(tmp_path):
    spec = make_spec(tmp_path)
    config = tmp_path / "config.yaml"
    good = answers(tmp_path, [{"id": sha256_text("a billing question, number 3"), "label": "refund"},
                              {"input": "a brand new card question", "label": "card"}])
    result = CliRunner().invoke(app, ["label", "pull", str(config), "--from", str(good)])
    assert result.exit_code == 0, result.output
    assert "1 corrected, 0 confirmed unchanged, 1 new, 0 skipped" in result.output
    before = store_bytes(spec.data.labels_folder)
    bad = answers(tmp_path, [{"id": sha256_text("a card question, number 1"), "label": "loans"}], "bad.csv")
    result = CliRunner().invoke(app, ["label", "pull", str(config), "--from", str(bad)])
    assert result.exit_code == 2 and store_bytes(spec.data.labels_folder) == before



def test_a_new_file_is_copied_into_the_store_beside_the_data_folder_and_loaded(tmp_path):
    from tests.conftest import small_image

    for label, colour in (("ants", (200, 40, 40)), ("bees", (40, 40, 200))):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(12):
            small_image((48 + i, 48), colour).save(tmp_path / "images" / label / f"{i}.png")
    small_image((70, 70), (40, 200, 40)).save(tmp_path / "new.png")
    spec = load_spec(write_config(tmp_path, CONFIG.replace("kind: csv_text, path: data.csv{extra}",
                                                           "kind: image_folder, path: images")
                                  .replace("hf_text, name: all-MiniLM-L6-v2", "torchvision, name: mobilenet_v2")
                                  .format()))
    assert spec.data.labels_folder == tmp_path / "images.labels"
    path = tmp_path / "answers.csv"
    pd.DataFrame([{"id": "", "path": "new.png", "label": "bees"}]).to_csv(path, index=False)
    assert pull(spec, path).new == 1
    (copied,) = (tmp_path / "images.labels" / "files").iterdir()
    table = pd.read_parquet(load_data.fn(spec).table_path)
    added = table[table["input"] == str(copied)]
    assert list(added["label"]) == ["bees"] and len(table) == 25


def test_export_writes_the_suspects_queue_that_pull_reads_back(tmp_path):
    spec = make_spec(tmp_path)
    config = tmp_path / "config.yaml"
    disputed = sha256_text("a billing question, number 3")
    report = spec.workdir / "reports" / "bank" / "0123456789abcdef"
    report.mkdir(parents=True)
    pd.DataFrame([{"example_id": disputed, "given_label": "billing", "suggested_label": "refund", "score": 0.01,
                   "source": "data.csv:row 5"}]).to_csv(report / "label_issues.csv", index=False)
    queue = tmp_path / "queue.csv"
    result = CliRunner().invoke(app, ["label", "export", str(config), "--out", str(queue)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(queue, dtype=str, keep_default_na=False)
    assert list(rows.columns) == ["queue", "id", "input", "current_label", "suggestion", "score", "prediction", "label"]
    assert rows.loc[0, ["id", "input", "current_label", "suggestion", "label"]].tolist() == [
        disputed, "a billing question, number 3", "billing", "", ""]  # not yet split: blind, no suggestion shown
    rows.loc[0, "label"] = "refund"
    rows.to_csv(queue, index=False)
    result = CliRunner().invoke(app, ["label", "pull", str(config), "--from", str(queue)])
    assert result.exit_code == 0 and "1 corrected" in result.output, result.output
    assert label_of(spec, "a billing question, number 3") == "refund"

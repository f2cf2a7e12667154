"""Cross-check: a second person's labels for a sample, compared with the data's at step 2.

Kappa is Cohen's (checked against the formula written out here), a labeller who confuses two classes
stops the run naming them (or warns under `report`), the disagreements are listed exactly and held
out of the data (never reaching the split), each key column (path, text, id) finds its examples, and
a row naming no example or no class is refused naming the file and the row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.prepare import prepare
from tasks.audit.cross_check import CrossCheck, cross_check
from tasks.audit.odd_inputs import take_out
from tasks.config.loading import load_spec
from tasks.config.spec import Spec, data_spec
from tasks.core.errors import DataError
from tasks.core.hashing import sha256_text
from tasks.data.readers import load_examples
from tasks.reports.cross_check_report import confusion_figure, cross_check_report
from tasks.reports.data_report import DataReport, report_folder
from tasks.steps.data import cross_check_section, load_data
from tasks.steps.split import split_before_training
from tests.conftest import small_image, write_config
from tests.sounds import tone, write

CLASSES = ["billing", "card", "refund", "transfer"]
PER_CLASS = 20
CONFIG = """
task: Route banking questions.
metric: {{name: accuracy, target: 0.9}}
data: {{kind: csv_text, path: data.csv, cross_check: {{labels: second.csv}}{extra}}}
model: {{family: hf_text, name: all-MiniLM-L6-v2}}
registry: {{model_name: bank}}
"""


def texts() -> pd.DataFrame:
    return pd.DataFrame([(f"a {label} question, number {i}", label) for label in CLASSES for i in range(PER_CLASS)],
                        columns=["text", "label"])


def swapped_two_classes(frame: pd.DataFrame) -> pd.DataFrame:
    """Labeller 2 calls 8 billing questions refund and 7 refund questions billing; all else agrees."""
    second = frame.copy()
    billing, refund = second.index[second["label"] == "billing"][:8], second.index[second["label"] == "refund"][:7]
    second.loc[billing, "label"], second.loc[refund, "label"] = "refund", "billing"
    return second


def texts_spec(tmp_path: Path, second: pd.DataFrame, extra: str = "") -> Spec:
    texts().to_csv(tmp_path / "data.csv", index=False)
    second.to_csv(tmp_path / "second.csv", index=False)
    return load_spec(write_config(tmp_path, CONFIG.format(extra=extra)))


def planted_rows(frame: pd.DataFrame, second: pd.DataFrame) -> set[str]:
    """Where a person finds each planted disagreement: data.csv and its row (the header is row 1)."""
    return {f"data.csv:row {i + 2}" for i in frame.index[frame["label"] != second["label"]]}


def test_kappa_is_cohens_observed_agreement_corrected_for_chance(tmp_path):
    rng = np.random.default_rng(0)
    frame = texts()
    second = frame.assign(label=np.where(rng.random(len(frame)) < 0.3, rng.choice(CLASSES, len(frame)), frame["label"]))
    check = load_data.fn(texts_spec(tmp_path, second)).cross_check
    y1, y2 = frame["label"].to_numpy(), second["label"].to_numpy()
    p_o = np.mean(y1 == y2)
    p_e = sum(np.mean(y1 == c) * np.mean(y2 == c) for c in CLASSES)
    assert check is not None and check.overlap == len(frame)
    assert check.kappa == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-12)
    for i, c in enumerate(CLASSES):  # the matrix is [data's label][second label]; agreement 2 n_cc / (n_c. + n_.c)
        assert list(check.matrix[i]) == [int(np.sum((y1 == c) & (y2 == d))) for d in CLASSES]
        both = np.sum((y1 == c) & (y2 == c))
        assert check.agreement()[c] == pytest.approx(2 * both / (np.sum(y1 == c) + np.sum(y2 == c)))


def test_a_labeller_who_confuses_two_classes_stops_the_run_before_training_naming_them(tmp_path):
    spec = texts_spec(tmp_path, swapped_two_classes(texts()))
    with pytest.raises(DataError) as stopped:
        prepare(spec, None)
    message = str(stopped.value)
    assert "kappa 0.750" in message and "below data.cross_check.min_kappa 0.8" in message
    assert "they disagree most on 'billing' vs 'refund' (15 examples)" in message
    assert "cross_check_policy: report" in message and "Data report:" in message   # the fix, and the report
    assert not (spec.workdir / "splits").exists()                                    # stopped before the split
    report = next((spec.workdir / "reports" / "bank").iterdir()) / "report.md"
    assert report.read_text().startswith("# Data report: FAIL") and "'billing' vs 'refund'" in report.read_text()


def test_the_most_confused_pair_sums_both_directions():
    # a->b 3 and b->a 3 (6 in all) outweigh c->d 5, the largest single cell.
    matrix = ((10, 3, 0, 0), (3, 10, 0, 0), (0, 0, 10, 5), (0, 0, 0, 10))
    check = CrossCheck("second.csv", ("a", "b", "c", "d"), matrix, 0.5, 0.8, ())
    assert check.confused_pairs()[:2] == [("a", "b", 6), ("c", "d", 5)]
    assert "they disagree most on 'a' vs 'b' (6 examples)" in check.shortfall()


def test_under_report_a_low_kappa_is_a_warning_and_the_data_still_passes(tmp_path):
    spec = texts_spec(tmp_path, swapped_two_classes(texts()), extra=", cross_check_policy: report")
    dataset = load_data.fn(spec)
    section = cross_check_section(spec, dataset, tmp_path / "report", None)
    assert section is not None and section.outcome == "warn"
    assert "'billing' vs 'refund'" in section.summary and "training goes on" in section.summary
    report = DataReport(str(spec.data.path), dataset.fingerprint, {c: PER_CLASS for c in CLASSES}, None, (section,))
    assert report.passed and report.verdict() == "PASS with warnings (cross-check): ready to train"


def test_disagreements_csv_lists_exactly_the_planted_disagreements(tmp_path):
    frame, second = texts(), swapped_two_classes(texts())
    spec = texts_spec(tmp_path, second)
    dataset = load_data.fn(spec)
    folder = report_folder(spec.workdir, "bank", dataset.fingerprint)
    section = cross_check_section(spec, dataset, folder, None)
    listed = pd.read_csv(folder / "disagreements.csv")
    assert set(listed["source"]) == planted_rows(frame, second) and len(listed) == 15
    assert set(zip(listed["label"], listed["second_label"], strict=True)) == {("billing", "refund"),
                                                                               ("refund", "billing")}
    assert listed["held_out"].all() and section is not None and "15 example(s) labelled differently, held out" \
        in section.summary
    matrix = pd.read_csv(folder / "cross_check_confusion.csv", index_col=0)
    assert matrix.loc["billing", "refund"] == 8 and matrix.loc["refund", "billing"] == 7
    assert matrix.to_numpy().sum() == 80 and matrix.to_numpy().trace() == 80 - 15


def test_the_confusion_png_beside_the_csv_draws_the_planted_counts_and_is_logged_with_it(tmp_path, monkeypatch):
    """The annotators' matrix drawn in the report folder and logged to the MLflow run under quality/
    with the CSV; the figure's cells (and the CSV's) are scikit-learn's confusion matrix of the
    planted labels, recomputed here from the two label columns."""
    from PIL import Image
    from sklearn.metrics import confusion_matrix

    from tasks.registry.tracking import client_for, experiment_id, start_run, tracking_uri
    from tasks.steps import data
    from tasks.steps.refs import TrackingRef

    frame, second = texts(), swapped_two_classes(texts())
    planted = confusion_matrix(frame["label"], second["label"], labels=CLASSES)  # rows: the data's label
    spec = texts_spec(tmp_path, second)
    dataset = load_data.fn(spec)
    assert dataset.cross_check is not None
    folder = report_folder(spec.workdir, "bank", dataset.fingerprint)
    section = cross_check_section(spec, dataset, folder, None)
    assert section is not None and {"cross_check_confusion.csv", "cross_check_confusion.png"} <= set(section.files)
    with Image.open(folder / "cross_check_confusion.png") as image:
        assert image.format == "PNG" and min(image.size) >= 400
        image.verify()
    assert pd.read_csv(folder / "cross_check_confusion.csv", index_col=0).to_numpy().tolist() == planted.tolist()

    [axes] = confusion_figure(dataset.cross_check).axes
    assert axes.images[0].get_array().tolist() == planted.tolist()
    drawn = {(round(text.get_position()[1]), round(text.get_position()[0])): int(text.get_text())
             for text in axes.texts if text.get_gid() == "count"}  # (row, column): the count written there
    assert drawn == {cell: int(count) for cell, count in np.ndenumerate(planted)}
    assert [label.get_text() for label in axes.get_xticklabels()] == CLASSES
    assert (axes.get_ylabel(), axes.get_xlabel()) == ("data label", "second label")

    client = client_for(spec.workdir)
    experiment = experiment_id(client, "tests", spec.workdir)
    tracking = TrackingRef(start_run(client, experiment, "parent"), experiment, tracking_uri(spec.workdir))
    monkeypatch.setattr(data, "publish_markdown", lambda *args: None)  # the Prefect UI's copy: not this test's
    data.finish_data_report(spec, dataset, {c: PER_CLASS for c in CLASSES}, [section], tracking, folder)
    logged = {artifact.path for artifact in client.list_artifacts(tracking.run_id, "quality")}
    assert {"quality/cross_check_confusion.csv", "quality/cross_check_confusion.png"} <= logged


def test_the_disagreements_are_held_out_and_never_reach_the_split(tmp_path):
    frame, second = texts(), swapped_two_classes(texts())
    disputed = {sha256_text(t) for t in frame["text"][frame["label"] != second["label"]]}
    spec = texts_spec(tmp_path, second, extra=", cross_check_policy: report")
    dataset = load_data.fn(spec)
    table = pd.read_parquet(dataset.table_path)
    assert len(table) == 80 - 15 and not disputed & set(table["example_id"])
    split = split_before_training.fn(spec, dataset)
    assigned = {i for ids in json.loads(split.manifest_path.read_text())["splits"].values() for i in ids}
    assert len(assigned) == 65 and not disputed & assigned


def test_keep_first_keeps_the_datas_label_and_still_lists_them(tmp_path):
    frame, second = texts(), swapped_two_classes(texts())
    spec = texts_spec(tmp_path, second, extra=", cross_check_policy: report, cross_check_disagreements: keep_first")
    dataset = load_data.fn(spec)
    table = pd.read_parquet(dataset.table_path)
    assert len(table) == 80 and list(table["label"]) == list(frame["label"])
    assert cross_check_section(spec, dataset, tmp_path / "report", None) is not None
    listed = pd.read_csv(tmp_path / "report" / "disagreements.csv")
    assert set(listed["source"]) == planted_rows(frame, second) and not listed["held_out"].any()


def loaded_check(data: dict) -> CrossCheck | None:
    spec = data_spec(data)
    loaded = load_examples(spec)
    classes = loaded.declared_classes or tuple(sorted(loaded.table["label"].dropna().unique()))
    return cross_check(loaded.table, take_out(loaded, spec).table, spec, classes)


def test_a_path_key_names_a_file_relative_to_the_image_folder(tmp_path):
    for label, colour in (("ants", 10), ("bees", 200)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            small_image((16, 16), (i * 60, colour, 40)).save(tmp_path / "data" / label / f"{i}.png")
    pd.DataFrame({"path": ["ants/0.png", "./bees/1.png", "bees/2.png"], "label": ["ants", "ants", "bees"]}).to_csv(
        tmp_path / "second.csv", index=False)
    check = loaded_check({"kind": "image_folder", "path": tmp_path / "data",
                          "cross_check": {"labels": tmp_path / "second.csv"}})
    assert check is not None and check.overlap == 3
    assert [(d.source, d.label, d.second_label) for d in check.disagreements] == [("bees/1.png", "bees", "ants")]


def test_a_path_key_of_a_csv_of_sound_files_is_relative_to_the_csvs_folder(tmp_path):
    sounds = tmp_path / "clips"
    rows = [(write(sounds / "wav" / f"{label}{i}.wav", tone(200 + 90 * i + 500 * (label == "yes"))), label)
            for label in ("no", "yes") for i in range(2)]
    pd.DataFrame({"path": [str(Path(p).relative_to(sounds)) for p, _ in rows], "label": [label for _, label in rows]}) \
        .to_csv(sounds / "clips.csv", index=False)
    pd.DataFrame({"path": ["wav/no0.wav", "wav/yes1.wav"], "label": ["yes", "yes"]}).to_csv(
        tmp_path / "second.csv", index=False)
    check = loaded_check({"kind": "csv_audio", "path": sounds / "clips.csv",
                          "cross_check": {"labels": tmp_path / "second.csv"}})
    assert check is not None and check.overlap == 2
    assert [(d.source, d.second_label) for d in check.disagreements] == [("clips.csv:row 2", "yes")]


def test_an_id_key_names_the_example_by_its_content_hash(tmp_path):
    texts().to_csv(tmp_path / "data.csv", index=False)
    frame = texts().iloc[[0, 20]]
    pd.DataFrame({"id": [sha256_text(t) for t in frame["text"]], "label": ["billing", "transfer"]}).to_csv(
        tmp_path / "second.csv", index=False)
    check = loaded_check({"kind": "csv_text", "path": tmp_path / "data.csv",
                          "cross_check": {"labels": tmp_path / "second.csv"}})
    assert check is not None and check.overlap == 2
    assert [(d.source, d.label, d.second_label) for d in check.disagreements] == [("data.csv:row 22", "card",
                                                                                    "transfer")]


@pytest.mark.parametrize(("rows", "expected"), [
    ({"text": ["a card question, number 1", "no such question"], "label": ["card", "card"]},
     r"second\.csv: 1 row\(s\) of data.cross_check.labels name no example of the data .*: row 3: text 'no such "
     r"question'\. Fix: correct the text \(the text exactly as the data holds it\), or remove the rows"),
    ({"text": ["a card question, number 1", "a card question, number 2"], "label": ["loans", None]},
     r"second\.csv: 2 row\(s\) .* not a class of the data: row 2: 'loans'; row 3: no label\. Fix: write one of "
     r"billing, card, refund, transfer, or remove the rows"),
    ({"text": ["a card question, number 1", "a card question, number 1"], "label": ["card", "refund"]},
     r"second\.csv: 1 row\(s\) .* give one example two different labels: rows 2, 3: 'card', 'refund'\. Fix: keep one"),
    ({"path": ["a.txt"], "label": ["card"]},
     r"second\.csv: data.cross_check.labels needs a `label` column and exactly one key column, `text` or `id` for "
     r"data.kind 'csv_text'; it has columns \['path', 'label'\]"),
], ids=["unknown key", "unknown class", "two labels", "key of another kind"])
def test_a_row_naming_no_example_or_no_class_is_refused_naming_the_file_and_row(tmp_path, rows, expected):
    spec = texts_spec(tmp_path, pd.DataFrame(rows))
    with pytest.raises(DataError, match=expected):
        load_data.fn(spec)


def test_with_select_classes_rows_of_classes_left_out_are_counted_not_refused(tmp_path):
    second = texts()
    spec = texts_spec(tmp_path, second, extra=", select_classes: [billing, card]")
    check = load_data.fn(spec).cross_check
    assert check is not None and check.overlap == 40 and check.not_compared == 40 and check.kappa == 1.0
    assert "40 second label(s) name examples taken out at step 2a or not selected" in \
        cross_check_report(check, spec.data, tmp_path / "report").summary

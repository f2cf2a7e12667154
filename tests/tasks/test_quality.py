"""The label-quality audit runs the real Great Expectations suite on small, hand-made data."""

from pathlib import Path

import pandas as pd

from tasks.data import LoadedData, load_examples
from tasks.odd_inputs import take_out
from tasks.quality import audit_labels
from tasks.spec import MetricSpec, data_spec
from tests.conftest import small_image

ACCURACY = MetricSpec(name="accuracy", target=0.9)


def images(root: Path, counts: dict[str, int]) -> None:
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            small_image((8, 8), (i, sum(map(ord, label)) % 256, 7)).save(root / label / f"{i}.png")


def failed(report) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if not c.passed}


def audit(spec, metric: MetricSpec):
    """Steps 2a (the odd-inputs and conflicting-labels policies) and 2b, as the flow runs them."""
    loaded = load_examples(spec)
    kept = take_out(loaded, spec)
    return audit_labels(LoadedData(kept.table, loaded.declared_classes, loaded.skipped_files), spec, metric,
                        tuple(q.describe() for q in kept.odd), tuple(q.describe() for q in kept.conflicts))


def audit_folder(root: Path, metric: MetricSpec = ACCURACY, **data):
    return audit(data_spec({"kind": "image_folder", "path": root, "min_examples_per_class": 3, **data}), metric)


def audit_csv(tmp_path: Path, rows: list[tuple], metric: MetricSpec = ACCURACY, **data):
    path = tmp_path / "data.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return audit(data_spec({"kind": "csv_text", "path": path, "min_examples_per_class": 2, **data}), metric)


def test_clean_folder_passes(tmp_path):
    images(tmp_path, {"ants": 4, "bees": 4})
    report = audit_folder(tmp_path)
    assert report.passed and not failed(report) and report.class_counts == {"ants": 4, "bees": 4}


def test_a_corrupt_image_is_quarantined_and_named_or_stops_the_run_under_fail(tmp_path):
    images(tmp_path, {"ants": 4, "bees": 4})
    (tmp_path / "bees" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    report = audit_folder(tmp_path)
    assert report.passed and report.class_counts == {"ants": 4, "bees": 4}  # trained without it
    assert "bees/broken.jpg (bees): undecodable image" in failed(report)["no odd inputs (policy: drop)"]
    strict = audit_folder(tmp_path, odd_inputs="fail")
    assert not strict.passed and "bees/broken.jpg" in failed(strict)["image files decode"]
    assert "1 found: bees/broken.jpg (bees): undecodable image" in failed(strict)["no odd inputs (policy: fail)"]


def test_empty_class_folder_fails_the_minimum_count(tmp_path):
    images(tmp_path, {"ants": 4, "bees": 4})
    (tmp_path / "wasps").mkdir()
    report = audit_folder(tmp_path)
    assert not report.passed
    assert "'wasps' (0)" in failed(report)["every class has >= 3 distinct examples"]
    assert "| wasps | 0 |" in report.markdown()


def test_minimum_count_is_of_distinct_examples_as_the_split_sees_them(tmp_path):
    # Class a: 12 rows but only 4 distinct texts (each 3 times); the split keeps 4 examples of a.
    rows = [(f"a text {i % 4}", "a") for i in range(12)] + [(f"b text {i}", "b") for i in range(10)]
    report = audit_csv(tmp_path, rows, min_examples_per_class=10)
    assert report.class_counts == {"a": 4, "b": 10} and report.n_examples == 22
    assert failed(report)["every class has >= 10 distinct examples"] == "1 offending: 'a' (4)"


def test_files_outside_class_folders_are_skipped_and_unsupported_ones_inside_quarantined(tmp_path):
    images(tmp_path, {"ants": 4, "bees": 4})
    (tmp_path / "ants" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("about the data")
    report = audit_folder(tmp_path)
    assert "Skipped 1 file(s) outside the class folders: README.md" in report.markdown()
    assert "ants/notes.txt (ants): unsupported format (.txt;" in failed(report)["no odd inputs (policy: drop)"]


def test_conflicting_labels_fail_by_default_and_every_copy_is_dropped_under_drop(tmp_path):
    rows = [("free prize now", "spam"), ("free prize now", "ham"), ("see you", "ham"), ("hi", "ham"),
            ("win cash", "spam"), ("call me", "ham"), ("prize", "spam")]
    report = audit_csv(tmp_path, rows)
    assert not report.passed and "no example has two different labels" in failed(report)
    dropped = audit_csv(tmp_path, rows, conflicting_labels="drop")
    assert dropped.passed and dropped.class_counts == {"ham": 3, "spam": 2} and dropped.n_examples == 5
    detail = failed(dropped)["no example under two labels (policy: drop)"]
    assert detail.startswith("2 copies dropped: ") and "data.csv:row 2 (spam): the same content also appears " \
        "under ham" in detail and "data.csv:row 3 (ham)" in detail


def test_duplicates_warn_when_dropped_and_fail_when_forbidden(tmp_path):
    rows = [("hi", "ham"), ("hi", "ham"), ("see you", "ham"), ("win cash", "spam"), ("prize", "spam")]
    dropped = audit_csv(tmp_path, rows)
    assert dropped.passed and [w.name for w in dropped.warnings] == ["no exact duplicates (policy: drop)"]
    forbidden = audit_csv(tmp_path, rows, duplicates="fail")
    assert not forbidden.passed and "data.csv:row 2" in failed(forbidden)["no exact duplicates (policy: fail)"]


def test_missing_labels_undeclared_labels_and_empty_texts(tmp_path):
    rows = [("hi", None), ("see you", "ham"), ("ok", "ham"), ("  ", "spam"), ("win", "spam"), ("x", "spma")]
    report = audit_csv(tmp_path, rows, classes=["ham", "spam"])
    problems = failed(report)
    assert "data.csv:row 2" in problems["labels are present"]
    assert "data.csv:row 7" in problems["labels are in the declared set"]
    assert "data.csv:row 5 (spam): empty text (whitespace only)" in problems["no odd inputs (policy: drop)"]


def test_metric_class_must_be_a_label(tmp_path):
    rows = [("hi", "ham"), ("see you", "ham"), ("win", "spam"), ("prize", "spam")]
    report = audit_csv(tmp_path, rows, MetricSpec(name="recall", **{"class": "Spam"}, target=0.9))
    assert not report.passed and "metric class 'Spam' is a label" in failed(report)


def test_imbalance_is_a_warning_not_a_stop(tmp_path):
    images(tmp_path, {"ants": 40, "bees": 3})
    report = audit_folder(tmp_path)
    assert report.passed and [w.name for w in report.warnings] == ["imbalance ratio <= 10"]


def test_real_sms_spam_duplicates_are_reported(sms_spam):
    spec = data_spec({"kind": "csv_text", "path": sms_spam})
    report = audit_labels(load_examples(spec), spec, ACCURACY)
    # Distinct texts per label (4827 ham and 747 spam rows), counted independently with csv + a set.
    assert report.passed and report.class_counts == {"ham": 4518, "spam": 653}
    assert report.warnings[0].detail.startswith("684 offending")

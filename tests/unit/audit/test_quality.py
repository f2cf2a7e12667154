"""The label-quality audit runs the real Great Expectations suite on small, hand-made data."""

import json
import re
import socket
import tempfile
from pathlib import Path

import pandas as pd

from tasks.audit.odd_inputs import take_out
from tasks.audit.quality import audit_labels
from tasks.config.spec import MetricSpec, data_spec
from tasks.data.readers import load_examples
from tasks.data.table import LoadedData
from tasks.reports.data_docs import write_data_docs
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


# Duplicates forbidden, one missing label (NaN in pandas): the examples suite fails on both.
DUPLICATED = [("hi", "ham"), ("hi", "ham"), ("see you", "ham"), ("win cash", "spam"), ("prize", "spam"),
              ("no label", None)]


def gx_expectations(gx_results: dict) -> dict[str, dict]:
    """Check name (the expectation's description) -> that expectation's validation result."""
    return {r["expectation_config"]["description"]: r for result in gx_results.values() for r in result["results"]}


def page_text(path: Path) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", path.read_text()).split())


def test_gx_results_are_plain_json_and_say_what_the_checks_say(tmp_path):
    report = audit_csv(tmp_path, DUPLICATED, duplicates="fail")
    gx_results = json.loads(json.dumps(report.gx_results, allow_nan=False))  # strict JSON, no custom encoder
    assert list(gx_results) == ["examples", "labels_per_example", "class_counts"]
    assert [r["suite_name"] for r in gx_results.values()] == [
        "transferflow_examples", "transferflow_labels_per_example", "transferflow_class_counts"]
    expectations = gx_expectations(gx_results)
    policy_checks = {"no odd inputs (policy: drop)"}  # step 2a's, not GX's
    assert {c.name for c in report.checks} - policy_checks == set(expectations)
    for check in report.checks:
        if check.name not in policy_checks:
            result = expectations[check.name]
            assert result["success"] is check.passed, check.name
            assert result["expectation_config"]["severity"] == {"error": "critical"}.get(check.severity, "warning")
    duplicates = expectations["no exact duplicates (policy: fail)"]
    assert duplicates["success"] is False and duplicates["result"]["unexpected_count"] == 2
    assert [row["source"] for row in duplicates["result"]["unexpected_index_list"]] == \
        ["data.csv:row 2", "data.csv:row 3"]
    missing = expectations["labels are present"]
    assert missing["success"] is False and missing["result"]["unexpected_index_list"] == [
        {"label": None, "source": "data.csv:row 7"}]
    assert gx_results["examples"]["success"] is False and gx_results["class_counts"]["success"] is True
    run_ids = {json.dumps(r["meta"]["run_id"]) for r in gx_results.values()}
    assert len(run_ids) == 1  # the three suites are one audit run


def test_data_docs_render_the_validations_into_the_given_folder_only(tmp_path, monkeypatch):
    cwd, temp, docs = tmp_path / "cwd", tmp_path / "temp", tmp_path / "out" / "docs"
    cwd.mkdir(), temp.mkdir()
    monkeypatch.chdir(cwd)  # a file-backed GX context would create gx/ here
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # GX's default ephemeral docs site would build here
    connections: list = []

    def no_network(*args, **kwargs):
        connections.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)

    index = write_data_docs(audit_csv(tmp_path, DUPLICATED, duplicates="fail"), docs)

    assert index == docs.resolve() / "index.html" and index.is_file()
    assert not list(cwd.iterdir()) and not list(temp.iterdir()) and not connections
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "data.csv", "out", "temp"]
    pages = {p.stem: p for p in (docs / "validations").rglob("*.html")}
    assert sorted(pages) == ["class_counts", "examples", "labels_per_example"]
    for name, page in pages.items():
        assert page.relative_to(docs).as_posix() in index.read_text()  # the index links every validation
        assert f"transferflow_{name}" in page_text(page)
    examples = page_text(pages["examples"])
    assert "Status: Failed" in examples and "no exact duplicates (policy: fail)" in examples
    assert "data.csv:row 2, data.csv:row 3" in examples and "data.csv:row 7" in examples
    assert "Status: Succeeded" in page_text(pages["class_counts"])
    assert sorted(p.stem for p in (docs / "expectations").glob("*.html")) == [
        "transferflow_class_counts", "transferflow_examples", "transferflow_labels_per_example"]
    for page in docs.rglob("*.html"):  # every file a page refers to is there (unused static ones are not)
        for ref in re.findall(r'(?:href|src)="([^":#?]+)"', page.read_text()):
            # GX 1.24 writes validation pages' favicon link one folder short: look static files up by name.
            target = docs / "static" / ref.split("static/", 1)[1] if "static/" in ref else page.parent / ref
            assert target.exists(), (page, ref)
    assert [p.name for p in (docs / "static").rglob("*") if p.is_file()] == ["favicon.ico"]


def test_a_label_written_as_html_is_shown_as_text_in_data_docs_never_run_as_markup(tmp_path):
    evil = "<img src=x onerror=alert(1)>"
    rows = [("hi", "ham"), ("see you", "ham"), ("win cash", "spam"), ("prize", "spam"), ("a", evil), ("b", evil)]
    report = audit_csv(tmp_path, rows, classes=["ham", "spam"])
    assert evil in json.dumps(report.gx_results)           # the results keep the raw value
    write_data_docs(report, tmp_path / "docs")
    pages = "".join(p.read_text() for p in (tmp_path / "docs").rglob("*.html"))
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages   # shown, once escaped
    assert "<img src=x" not in pages and "&amp;lt;" not in pages


def test_data_docs_render_from_the_json_file_as_from_the_report(tmp_path):
    report = audit_csv(tmp_path, DUPLICATED, duplicates="fail")
    (tmp_path / "gx_results.json").write_text(json.dumps(report.gx_results))
    write_data_docs(report, tmp_path / "from_report")
    write_data_docs(json.loads((tmp_path / "gx_results.json").read_text()), tmp_path / "from_json")
    from_report, from_json = ({p.relative_to(folder): page_text(p) for p in folder.rglob("*.html")}
                              for folder in (tmp_path / "from_report", tmp_path / "from_json"))
    assert from_report.keys() == from_json.keys()
    key = next(k for k in from_report if k.name == "examples.html")
    # Same page but for GX's own render timestamps.
    strip = re.compile(r"\d{8}T\d{6}\.\d+Z")
    assert strip.sub("", from_report[key]) == strip.sub("", from_json[key])

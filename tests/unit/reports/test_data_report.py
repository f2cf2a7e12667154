"""The data report: one verdict line at the top that a failing check or a stopping policy turns
to FAIL, class counts with shares, and a word when the metric's class is rare."""

from __future__ import annotations

from tasks.reports.data_report import DataReport, Section, markdown_table, rare_class_hint, report_folder, write_report

COUNTS = {"ham": 900, "spam": 100}


def report(*sections: Section, stopped: str | None = None, metric_class: str | None = "spam") -> DataReport:
    return DataReport("data.csv", "f" * 64, COUNTS, metric_class, sections, stopped)


def test_the_verdict_is_the_first_line_and_any_failing_check_fails_it(tmp_path):
    ok = Section("Leakage across splits", "ok", "0 pairs.")
    warned = Section("Disputed labels (label audit)", "warn", "3 disputed.")
    failed = Section("Label-quality suite (Great Expectations)", "fail", "1 error-level check(s) failed: nulls")
    assert report(ok).verdict() == "PASS: ready to train"
    assert report(ok, warned).verdict() == "PASS with warnings (disputed labels): ready to train"
    assert report(ok, warned, failed).verdict().startswith("FAIL: 1 error-level check(s) failed: nulls")
    stopped = report(ok, stopped="data.csv: 4 near-copy pair(s) (data.leakage: fail)\nmore lines")
    expected = "FAIL: data.csv: 4 near-copy pair(s) (data.leakage: fail) (nothing was trained)"
    assert not stopped.passed and stopped.verdict() == expected
    path = write_report(report(ok, warned, failed), tmp_path / "reports" / "x")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# Data report: FAIL") and path.name == "report.md"
    assert lines.index("## Label-quality suite (Great Expectations): FAIL") > \
        lines.index("## Leakage across splits: OK")


def test_class_counts_shares_and_imbalance_are_in_the_report():
    text = report().markdown()
    assert "| ham | 900 | 90.0% |" in text and "| spam (metric) | 100 | 10.0% |" in text
    assert "Imbalance ratio (largest / smallest class): 9.0." in text


def test_a_report_stopped_before_the_class_counts_says_so():
    stopped = DataReport("data.csv", "f" * 64, {}, "spam", (), stopped="data.csv: cannot read")
    assert "Class counts: not available" in stopped.markdown() and "Rare metric class" not in stopped.markdown()


def test_a_rare_metric_class_is_named_with_the_class_weighted_loss():
    hint = rare_class_hint(COUNTS, "spam")
    assert hint is not None and "10.0%" in hint and "50%" in hint and "class-weighted loss" in hint
    assert "Rare metric class" in report().markdown()
    # Not rare: at least half an even share (3 classes: 1/6 of the examples), or no class metric.
    assert rare_class_hint({"a": 40, "b": 40, "c": 17}, "c") is None
    assert rare_class_hint({"a": 40, "b": 40, "c": 15}, "c") is not None
    assert rare_class_hint(COUNTS, None) is None and "Rare metric class" not in report(metric_class=None).markdown()


def test_two_models_on_one_data_keep_their_own_report_folder_and_one_model_keeps_one(tmp_path):
    fingerprint = "ab" * 32
    ants, wasps = report_folder(tmp_path, "ants", fingerprint), report_folder(tmp_path, "wasps", fingerprint)
    assert ants != wasps and ants == report_folder(tmp_path, "ants", fingerprint)
    assert ants.parent.parent == wasps.parent.parent == tmp_path / "reports" and ants.name == fingerprint[:16]


def test_markdown_tables_escape_cells_and_say_how_many_rows_are_left_out():
    rows = [{"text": f"a|b\nc {i}", "score": 0.123456} for i in range(12)]
    table = markdown_table(rows, limit=10)
    assert "| a\\|b c 0 | 0.123 |" in table and "(top 10 of 12; all 12 in the CSV)" in table
    assert table.count("\n| a") == 10


def test_table_cells_show_3_significant_digits_and_never_scientific_notation_or_false_zeros():
    table = markdown_table([{"score": value} for value in (3.855e-16, 0.00004, 0.96523, 1234.5, 0.0)])
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["<0.001", "<0.001", "0.965", "1,234",
                                                                               "0"]


def test_the_prefect_copy_of_the_report_names_its_files_by_full_path_and_report_md_links_them(tmp_path):
    report = DataReport("data", "f" * 64, {"a": 2}, None, (Section("Audit", "ok", "fine", "", ("label_issues.csv",)),))
    assert "Files: [label_issues.csv](label_issues.csv)" in report.markdown()  # beside report.md the link works
    shown = report.markdown(tmp_path)
    assert f"Files in `{tmp_path}`: `label_issues.csv`" in shown and "](" not in shown


def test_two_runs_swapping_in_their_data_docs_at_once_both_succeed(tmp_path):
    """Two runs on the same data share a report folder: each swaps its whole site in, one at a
    time, and the folder ends up holding one whole site."""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.steps.data import _replace_folder

    def build(run: int):
        def write(fresh):
            fresh.mkdir()
            for page in range(20):
                (fresh / f"{page}.html").write_text(f"run {run}")
            return fresh / "0.html"
        return write

    target = tmp_path / "data_docs"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda run: _replace_folder(target, build(run)), range(40)))
    assert all(path == target / "0.html" for path in results)
    texts = {page.read_text() for page in target.iterdir()}
    assert len(texts) == 1 and len(list(target.iterdir())) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == [".data_docs.lock", "data_docs"]

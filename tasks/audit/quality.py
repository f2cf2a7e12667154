"""Label-quality audit: a real Great Expectations suite over three views of the data.

- examples: every row (labels present and declared, inputs readable, ids unique);
- labels per example: no example (same content) carries two different labels;
- class counts: every declared class has enough distinct examples (exact duplicates are one
  example, as the split sees them), the metric's class exists, and the imbalance ratio is
  reported (a warning, never a stop).
Errors stop the flow before any training; warnings are reported and the flow goes on.

Each expectation carries its check's name (GX `description`) and severity (error: GX "critical"),
so the GX validation results (`QualityReport.gx_results`, plain JSON) and the Data Docs rendered
from them (tasks/reports/data_docs.py) read as the report does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd

from tasks.config.spec import DataSpec, MetricSpec
from tasks.data.table import LoadedData, skipped_summary

Severity = Literal["error", "warning"]
SHOWN_OFFENDERS = 5
GX_SEVERITY = {"error": "critical", "warning": "warning"}
RUN_NAME = "transferflow-label-audit"


@dataclass(frozen=True)
class Check:
    """One expectation's outcome, in words a person can act on."""

    name: str
    severity: Severity
    passed: bool
    detail: str


@dataclass(frozen=True)
class QualityReport:
    checks: tuple[Check, ...]
    class_counts: dict[str, int]
    n_examples: int
    skipped_files: tuple[str, ...]
    # Frame name (examples, labels_per_example, class_counts) -> that suite's GX validation result,
    # `ExpectationSuiteValidationResult.to_json_dict()`: `json.dumps` takes it as it is, and
    # tasks/data_docs.write_data_docs renders it (or the same dict read back from its JSON file).
    gx_results: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.severity == "error")

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.severity == "warning" and not c.passed]

    def markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED: training will not start"
        lines = [f"# Label-quality report: {verdict}", "",
                 f"{self.n_examples} examples, {len(self.class_counts)} classes.", "", self.checks_table()]
        lines += ["", "| class | distinct examples |", "| --- | ---: |"]
        lines += [f"| {label} | {count} |" for label, count in self.class_counts.items()]
        if self.skipped_files:
            lines += ["", skipped_summary(self.skipped_files)]
        return "\n".join(lines)

    def checks_table(self) -> str:
        """Every check as a markdown table row: name, severity, ok / FAIL / warn, detail."""
        lines = ["| check | severity | result | detail |", "| --- | --- | --- | --- |"]
        for check in self.checks:
            result = "ok" if check.passed else ("FAIL" if check.severity == "error" else "warn")
            lines.append(f"| {check.name} | {check.severity} | {result} | {check.detail or ''} |")
        return "\n".join(lines)

    def failure_summary(self) -> str:
        failed = [c for c in self.checks if c.severity == "error" and not c.passed]
        return "\n".join(f"  - {c.name}: {c.detail}" for c in failed)


def audit_labels(loaded: LoadedData, data: DataSpec, metric: MetricSpec, odd_inputs: tuple[str, ...] = (),
                 conflicts_dropped: tuple[str, ...] = ()) -> QualityReport:
    """Run the suite on the loaded table and turn GX results into a report. `odd_inputs` and
    `conflicts_dropped` (from step 2a, "source (label): reason") are reported as their policies say."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.metadata_types import FailureSeverity

    odd_sources = {line.split(" (", 1)[0] for line in odd_inputs}
    table = loaded.table.assign(readable=~loaded.table["source"].isin(odd_sources))
    labels_per_example = table.groupby("example_id", as_index=False).agg(
        distinct_labels=("label", "nunique"), source=("source", "first"))
    classes = list(loaded.declared_classes or sorted(table["label"].dropna().unique()))
    # Count what the split will split: exact duplicates are dropped (or fail) before it.
    counts = table.drop_duplicates("example_id")["label"].value_counts().reindex(classes, fill_value=0)
    class_counts = pd.DataFrame({"label": counts.index, "count": counts.to_numpy()})

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("labeled_data")
    run_id = RunIdentifier(run_name=RUN_NAME, run_time=datetime.now(UTC))  # one audit: one GX run
    checks: list[Check] = []
    gx_results: dict[str, dict[str, Any]] = {}
    for frame_name, frame, expectations in [
        ("examples", table, _example_expectations(gx, data, loaded.declared_classes)),
        ("labels_per_example", labels_per_example, [
            ("no example has two different labels", "error",
             gx.expectations.ExpectColumnValuesToBeBetween(column="distinct_labels", max_value=1)),
        ]),
        ("class_counts", class_counts, _count_expectations(gx, data, metric, int(counts.max()))),
    ]:
        batch = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe("all") \
            .get_batch(batch_parameters={"dataframe": frame})
        suite = gx.ExpectationSuite(name=f"transferflow_{frame_name}")
        for name, severity, expectation in expectations:
            expectation.description, expectation.severity = name, FailureSeverity(GX_SEVERITY[severity])
            suite.add_expectation(expectation)
        index_column = "label" if frame_name == "class_counts" else "source"
        result = batch.validate(suite, result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": [index_column]})
        result.meta["run_id"] = run_id  # as a ValidationDefinition's run records it; Data Docs show it
        gx_results[frame_name] = result.to_json_dict()
        checks += [_to_check(name, severity, bool(res.success), res.result, index_column)
                   for (name, severity, _), res in zip(expectations, result.results, strict=True)]
    checks += _policy_checks(data, odd_inputs, conflicts_dropped)
    return QualityReport(tuple(checks), {str(k): int(v) for k, v in counts.items()},
                         len(table), loaded.skipped_files, gx_results)


def _policy_checks(data: DataSpec, odd_inputs: tuple[str, ...], conflicts_dropped: tuple[str, ...]) -> list[Check]:
    """What step 2a took out before this suite ran: reported (drop) or stopping the run (fail)."""
    severity: Severity = "error" if data.odd_inputs == "fail" else "warning"
    action = "found" if data.odd_inputs == "fail" else "quarantined"
    checks = [Check(f"no odd inputs (policy: {data.odd_inputs})", severity, not odd_inputs,
                    _listed(odd_inputs, action))]
    if data.conflicting_labels == "drop":
        checks.append(Check("no example under two labels (policy: drop)", "warning", not conflicts_dropped,
                            _listed(conflicts_dropped, "copies dropped")))
    return checks


def _listed(lines: tuple[str, ...], what: str) -> str:
    """"N what: the first few; ..." (the whole list is the run's quality/taken_out.csv)."""
    if not lines:
        return ""
    more = f" (+{len(lines) - SHOWN_OFFENDERS} more)" if len(lines) > SHOWN_OFFENDERS else ""
    return f"{len(lines)} {what}: " + "; ".join(lines[:SHOWN_OFFENDERS]) + more


def _example_expectations(gx: Any, data: DataSpec, declared: tuple[str, ...] | None) -> list:
    duplicate_severity: Severity = "error" if data.duplicates == "fail" else "warning"
    expectations = [
        ("labels are present", "error", gx.expectations.ExpectColumnValuesToNotBeNull(column="label")),
        (data.READABLE, "error", gx.expectations.ExpectColumnValuesToBeInSet(column="readable", value_set=[True])),
        (f"no exact duplicates (policy: {data.duplicates})", duplicate_severity,
         gx.expectations.ExpectColumnValuesToBeUnique(column="example_id")),
    ]
    if declared:
        expectations.insert(1, ("labels are in the declared set", "error",
                                gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=list(declared))))
    return expectations


def _count_expectations(gx: Any, data: DataSpec, metric: MetricSpec, largest: int) -> list:
    expectations = [
        ("at least two classes", "error", gx.expectations.ExpectTableRowCountToBeBetween(min_value=2)),
        (f"every class has >= {data.min_examples_per_class} distinct examples", "error",
         gx.expectations.ExpectColumnValuesToBeBetween(column="count", min_value=data.min_examples_per_class)),
        (f"imbalance ratio <= {data.max_imbalance_ratio:g}", "warning",
         gx.expectations.ExpectColumnValuesToBeBetween(column="count", min_value=largest / data.max_imbalance_ratio)),
    ]
    if metric.class_name:
        expectations.append((f"metric class '{metric.class_name}' is a label", "error",
                             gx.expectations.ExpectColumnDistinctValuesToContainSet(
                                 column="label", value_set=[metric.class_name])))
    return expectations


def _to_check(name: str, severity: Severity, success: bool, result: dict, index_column: str) -> Check:
    if success:
        return Check(name, severity, True, "")
    offenders = result.get("unexpected_index_list") or []
    if offenders:
        shown = ", ".join(_describe(o, index_column) for o in offenders[:SHOWN_OFFENDERS])
        more = f" (+{len(offenders) - SHOWN_OFFENDERS} more)" if len(offenders) > SHOWN_OFFENDERS else ""
        return Check(name, severity, False, f"{len(offenders)} offending: {shown}{more}")
    return Check(name, severity, False, f"observed {result.get('observed_value')}")


def _describe(offender: dict, index_column: str) -> str:
    if index_column == "label":
        return f"'{offender.get('label')}' ({offender.get('count')})"
    return str(offender.get("source"))

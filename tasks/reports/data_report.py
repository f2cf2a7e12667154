"""One data-quality report per run, with one verdict at the top: what every data check found, in
the order the flow ran them, as files a person opens (`report.md` first) in
`<workdir>/reports/<model>/<data fingerprint>/`, beside the lists each check wrote (label_issues.csv,
leakage_pairs.csv, the Great Expectations result and its Data Docs). The training flow logs the
folder to its MLflow run and shows the report in the Prefect UI; `transferflow validate` prints
its verdict and path. A failing policy still writes the report (what was found up to the stop)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tasks.core.atomic import write_text_atomic
from tasks.core.numbers import significant

Outcome = Literal["ok", "warn", "fail"]
REPORT_FILE = "report.md"
RARE_SHARE = 0.5   # a metric class below half an even share of the examples is called rare
SHOWN_ROWS = 10
CELL_WIDTH = 80


def report_folder(workdir: Path, model_name: str, fingerprint: str) -> Path:
    """One folder per registry model and data: two configs on the same data keep their own reports
    (their policies may differ); two runs of one model on one data share it."""
    return workdir / "reports" / model_name / fingerprint[:16]


@dataclass(frozen=True)
class Section:
    """One check: a one-line summary (the verdict quotes a failing one), details in markdown, and
    the files it wrote in the report folder."""

    title: str
    outcome: Outcome
    summary: str
    body: str = ""
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataReport:
    data_path: str
    fingerprint: str
    class_counts: dict[str, int]
    metric_class: str | None
    sections: tuple[Section, ...] = ()
    stopped: str | None = None      # the policy that stopped the run, when one did

    @property
    def passed(self) -> bool:
        return self.stopped is None and all(s.outcome != "fail" for s in self.sections)

    def verdict(self) -> str:
        if not self.passed:
            failing = [s for s in self.sections if s.outcome == "fail"]
            reason = failing[0].summary if failing else (self.stopped or "")
            return f"FAIL: {reason.splitlines()[0]} (nothing was trained)"
        warned = [s.title.split(" (")[0].lower() for s in self.sections if s.outcome == "warn"]
        return "PASS" + (f" with warnings ({', '.join(warned)})" if warned else "") + ": ready to train"

    def markdown(self, folder: Path | None = None) -> str:
        """The report. Its files are links, which work where report.md lies; with `folder` (the
        Prefect UI's copy, where a relative link opens a blank page) they are named in full instead."""
        lines = [f"# Data report: {self.verdict()}", "",
                 f"Data `{self.data_path}`, fingerprint `{self.fingerprint[:16]}`.", ""]
        lines += class_balance(self.class_counts, self.metric_class)
        if self.stopped:
            lines += ["", "## Stopped", "", self.stopped]
        for section in self.sections:
            lines += ["", f"## {section.title}: {section.outcome.upper()}", "", section.summary]
            if section.body:
                lines += ["", section.body]
            if section.files:
                lines += ["", (f"Files in `{folder}`: " + ", ".join(f"`{name}`" for name in section.files)
                               if folder else "Files: " + ", ".join(f"[{name}]({name})" for name in section.files))]
        return "\n".join(lines) + "\n"


def class_balance(counts: dict[str, int], metric_class: str | None) -> list[str]:
    """Class counts with shares, the imbalance ratio, and a word when the metric's class is rare."""
    if not counts:
        return ["Class counts: not available (the label-quality check did not finish)."]
    total = sum(counts.values())
    lines = ["| class | examples | share |", "| --- | ---: | ---: |"]
    lines += [f"| {label}{' (metric)' if label == metric_class else ''} | {count} | {count / total:.1%} |"
              for label, count in counts.items()]
    smallest = min(counts.values(), default=0)
    ratio = f"{max(counts.values()) / smallest:.1f}" if smallest else "infinite (an empty class)"
    lines += ["", f"Imbalance ratio (largest / smallest class): {ratio}."]
    hint = rare_class_hint(counts, metric_class)
    return lines + ([f"\n**Rare metric class.** {hint}"] if hint else [])


def rare_class_hint(counts: dict[str, int], metric_class: str | None) -> str | None:
    """When the contract is about a rare class: say so, and what the flow does about it."""
    if metric_class is None or metric_class not in counts:
        return None
    share, even = counts[metric_class] / (sum(counts.values()) or 1), 1 / len(counts)
    if share >= RARE_SHARE * even:
        return None
    return (f"The metric's class '{metric_class}' is {share:.1%} of the examples (an even share would be "
            f"{even:.0%}). A plain loss lets the common classes dominate: when '{metric_class}' lags on "
            "validation, fine-tuning switches on a class-weighted loss (inverse class frequency; decision "
            "`class_weights_on` in the decision log); `finetune.class_weights: on` uses it from the frozen "
            "baseline onward. More labeled examples of it help most.")


def markdown_table(rows: list[dict[str, object]], limit: int = SHOWN_ROWS) -> str:
    """The first `limit` rows as a markdown table (cells with | and newlines made safe, cut at
    CELL_WIDTH characters, floats at 3 significant digits)."""
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows[:limit]:
        cells = [_cell(row[column]) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    more = f"\n\n(top {limit} of {len(rows)}; all {len(rows)} in the CSV)" if len(rows) > limit else ""
    return "\n".join(lines) + more


def _cell(value: object, width: int = CELL_WIDTH) -> str:
    text = significant(value) if isinstance(value, float) else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[:width - 3] + "..."


def write_report(report: DataReport, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(folder / REPORT_FILE, report.markdown())

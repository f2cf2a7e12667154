"""The cross-check's part of the data report: the agreement, per class, the annotators' confusion
matrix, and the disagreements, with the files a person opens (`disagreements.csv`, every example the
two labellers label differently; `cross_check_confusion.csv`, the whole matrix, and
`cross_check_confusion.png`, the same matrix drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tasks.audit.cross_check import CrossCheck
from tasks.config.data_kinds import DataKindOptions
from tasks.core.atomic import write_text_atomic
from tasks.reports.data_report import Outcome, Section, markdown_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Cross-check (two labellers)"
DISAGREEMENTS_FILE = "disagreements.csv"
CONFUSION_FILE = "cross_check_confusion.csv"
CONFUSION_FIGURE = "cross_check_confusion.png"
AXES = ("data label", "second label")  # the matrix's rows and columns
SHOWN_MATRIX_CLASSES = 8  # a wider matrix is unreadable in markdown: the most confused pairs instead


def cross_check_report(check: CrossCheck, data: DataKindOptions, folder: Path) -> Section:
    """The section, its outcome by `data.cross_check_policy`: a kappa below the minimum fails (the
    run stops before training) or warns; disagreements alone warn."""
    from tasks.reports.plots import save_figure  # matplotlib, imported only where a cross-check is drawn

    folder.mkdir(parents=True, exist_ok=True)
    held_out = data.cross_check_disagreements == "drop"
    rows = pd.DataFrame([{"example_id": d.example_id, "source": d.source, "label": d.label,
                          "second_label": d.second_label, "second_labels_row": d.row, "held_out": held_out}
                         for d in check.disagreements],
                        columns=["example_id", "source", "label", "second_label", "second_labels_row", "held_out"])
    write_text_atomic(folder / DISAGREEMENTS_FILE, rows.to_csv(index=False))
    write_text_atomic(folder / CONFUSION_FILE, confusion_frame(check).to_csv())
    save_figure(confusion_figure(check), folder / CONFUSION_FIGURE)
    outcome: Outcome = ("fail" if not check.passed and data.cross_check_policy == "fail"
                        else "warn" if not check.passed or check.disagreements else "ok")
    return Section(TITLE, outcome, _summary(check, data), _body(check, rows),
                   (DISAGREEMENTS_FILE, CONFUSION_FILE, CONFUSION_FIGURE))


def confusion_frame(check: CrossCheck) -> pd.DataFrame:
    """The annotators' confusion matrix with its classes (rows: the data's label, columns: the
    second label): what the CSV holds and the figure draws."""
    return pd.DataFrame(check.matrix, index=pd.Index(check.classes, name=" \\ ".join(AXES)),
                        columns=list(check.classes))


def confusion_figure(check: CrossCheck) -> Figure:
    """The matrix of `confusion_frame` drawn, its count on each cell."""
    from tasks.reports.plots import counts_matrix_figure

    return counts_matrix_figure(confusion_frame(check).to_numpy(), list(check.classes),
                                f"Annotators' confusion matrix ({check.overlap} examples both labelled)",
                                rows=AXES[0], columns=AXES[1])


def _summary(check: CrossCheck, data: DataKindOptions) -> str:
    if check.passed:
        first = (f"Cohen's kappa {check.kappa:.3f} on {check.overlap} examples both labelled "
                 f"(data.cross_check.min_kappa {check.min_kappa:g}).")
    elif data.cross_check_policy == "fail":
        first = (f"{check.shortfall()}: the labels are not yet consistent enough to train on (cross_check_policy: "
                 "fail). Fix: settle those classes in the guideline and relabel the disagreements (quality/"
                 f"{DISAGREEMENTS_FILE}), or set data.cross_check_policy: report.")
    else:
        first = f"{check.shortfall()} (cross_check_policy: report: training goes on)."
    what = ("held out of the data until the labels agree" if data.cross_check_disagreements == "drop"
            else "kept with the data's label")
    disagreed = f" {len(check.disagreements)} example(s) labelled differently, {what} " \
                f"(cross_check_disagreements: {data.cross_check_disagreements})." if check.disagreements else ""
    skipped = f" {check.not_compared} second label(s) name examples taken out at step 2a or not selected: " \
              "not compared." if check.not_compared else ""
    return first + disagreed + skipped


def _body(check: CrossCheck, disagreements: pd.DataFrame) -> str:
    agreement = [{"class": label, "specific agreement": value} for label, value in check.agreement().items()]
    parts = ["Per-class agreement (2 x both said it / (data said it + second labeller said it)):", "",
             markdown_table(agreement, limit=len(agreement))]
    if len(check.classes) <= SHOWN_MATRIX_CLASSES:
        cells = [{"data label \\ second label": label, **dict(zip(check.classes, row, strict=True))}
                 for label, row in zip(check.classes, check.matrix, strict=True)]
        parts += ["", "Annotators' confusion matrix (rows: the data's label; columns: the second label):", "",
                  markdown_table(cells, limit=len(cells))]
    else:
        pairs = [{"classes": f"{a} / {b}", "swapped": n} for a, b, n in check.confused_pairs()]
        whole = f"the whole matrix: {CONFUSION_FILE}, {CONFUSION_FIGURE}"
        parts += ["", f"Most swapped classes (both directions; {whole}):", "", markdown_table(pairs) or "None."]
    if not disagreements.empty:
        parts += ["", "Disagreements:", "",
                  markdown_table(disagreements[["source", "label", "second_label"]].to_dict("records"))]
    return "\n".join(parts)

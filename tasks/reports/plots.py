"""The pictures a reviewer looks at first: the confusion matrix, the learning curves across
stages (with the decision taken after each), and the per-class validation scores.

Every artist a reader relies on carries a `gid` (e.g. "stage-boundary", "decision", "contract"),
so tests and callers can find what a figure shows without depending on drawing order.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from tasks.config.spec import PER_CLASS_METRICS, class_metric_key
from tasks.training.fit import EpochRecord

# A stage longer than this many epochs is drawn squeezed into this many x units; shorter stages get
# one unit per epoch. The baseline head often runs 60 cheap epochs while a fine-tuning stage runs 3:
# at one unit per epoch the stages a reader is deciding about would get a twentieth of the width.
# Squeezing (rather than showing only the last N epochs) keeps the whole curve, and with it the best
# epoch, which early stopping with a patience of 10 puts outside any short tail.
STAGE_WIDTH_CAP = 12

SERIES_COLORS = {"precision": "tab:blue", "recall": "tab:orange", "f1": "tab:green"}


def confusion_matrix_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], title: str) -> Figure:
    """The predictions' confusion matrix (`y_true`, `y_pred`: class indices into `classes`)."""
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    return counts_matrix_figure(matrix, classes, title, rows="true", columns="predicted")


def counts_matrix_figure(matrix: np.ndarray, classes: list[str], title: str, rows: str, columns: str) -> Figure:
    """A class-by-class matrix of counts (`rows` and `columns` name the two axes), shaded, each
    cell's count written on it (gid "count")."""
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel(columns)
    axes.set_ylabel(rows)
    axes.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(col, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black", fontsize=8, gid="count")
    return figure


@dataclass(frozen=True)
class StageSpan:
    """Where one stage sits on the shared x axis: its epochs' positions and its edges."""

    name: str
    epochs: list[int]
    x: np.ndarray
    start: float  # left edge (a boundary, or the axis start)
    end: float  # right edge (a boundary, or the axis end)

    @property
    def compressed(self) -> bool:
        return len(self.epochs) > STAGE_WIDTH_CAP


def stage_spans(stages: list[tuple[str, list[EpochRecord]]]) -> list[StageSpan]:
    """Lay the stages end to end: each epoch one unit, a stage longer than `STAGE_WIDTH_CAP` squeezed
    into that many units. Edges sit half a unit outside a stage's first and last point, so boundaries fall between."""
    spans, offset, cap = [], 0.0, STAGE_WIDTH_CAP
    for name, history in stages:
        epochs = [record.epoch for record in history]
        width = min(len(epochs), cap) if epochs else 1
        if len(epochs) > cap:
            x = offset + 1 + np.arange(len(epochs)) * (cap - 1) / (len(epochs) - 1)
        else:
            x = offset + 1 + np.arange(len(epochs), dtype=float)
        spans.append(StageSpan(name, epochs, x, offset + 0.5, offset + width + 0.5))
        offset += width
    return spans


def learning_curves_figure(stages: list[tuple[str, list[EpochRecord]]], decisions: dict[str, str], metric_key: str,
                           baseline_value: float, target: float | None = None,
                           best_epochs: dict[str, int] | None = None) -> Figure:
    """Losses (top) and the validation metric (bottom) on one x axis that runs through the stages in
    order, so a reader sees what each stage added and why the next one was (or was not) tried."""
    spans = stage_spans(stages)
    total = spans[-1].end if spans else 1.5
    # Wide enough that a 3-epoch fine-tuning stage stays legible; capped so the PNG stays reasonable.
    width = float(np.clip(3.0 + 0.3 * total, 8.0, 18.0))
    figure, (loss_axes, metric_axes) = plt.subplots(2, 1, sharex=True, figsize=(width, 6.5),
                                                    gridspec_kw={"height_ratios": [1, 1.2]})
    for index, (span, (_, history)) in enumerate(zip(spans, stages, strict=True)):
        first = index == 0  # one legend entry per series, not one per stage
        # Each stage is its own line: a stage restarts from the previous one's best checkpoint,
        # not from its last epoch, so joining the stages would draw a trajectory that never happened.
        loss_axes.plot(span.x, [r.train_loss for r in history], color="tab:blue", marker="o", markersize=3,
                       label="train loss" if first else "_nolegend_", gid="train-loss")
        loss_axes.plot(span.x, [r.val_loss for r in history], color="tab:red", marker="x", markersize=4,
                       linestyle="--", label="validation loss" if first else "_nolegend_", gid="val-loss")
        metric_axes.plot(span.x, [r.val_metric for r in history], color="tab:green", marker="o", markersize=3,
                         label=f"validation {metric_key}" if first else "_nolegend_", gid="val-metric")
    for span in spans[:-1]:
        for axes in (loss_axes, metric_axes):
            axes.axvline(span.end, color="grey", linestyle=":", linewidth=1, gid="stage-boundary")
    _label_stages(loss_axes, spans, width)
    _write_decisions(metric_axes, spans, decisions)
    metric_axes.axhline(baseline_value, color="grey", linestyle="-.", linewidth=1, gid="baseline",
                        label=f"baseline (validation) {baseline_value:.3f}")
    if target is not None:
        metric_axes.axhline(target, color="black", linestyle="--", linewidth=1, gid="target",
                            label=f"target {target:g}")
    _mark_best_epochs(metric_axes, spans, stages, best_epochs or {})
    loss_axes.set_ylabel("loss")
    metric_axes.set_ylabel(f"validation {metric_key}")
    metric_axes.set_xlim(0.5, total)
    _epoch_ticks(metric_axes, spans)
    metric_axes.set_xlabel(_x_label(spans))
    for axes in (loss_axes, metric_axes):
        if axes.get_legend_handles_labels()[0]:  # no stage at all: nothing to name
            axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return figure


def _label_stages(axes: Axes, spans: list[StageSpan], figure_width: float) -> None:
    """Stage names above the top panel, centred on their stage; tilted when a name is wider than
    its stage (a 3-epoch "finetune-2-retry" next to its neighbours)."""
    at_top = mtransforms.blended_transform_factory(axes.transData, axes.transAxes)
    inches_per_unit = 0.75 * figure_width / max(spans[-1].end - 0.5, 1.0) if spans else 1.0
    for span in spans:
        narrow = 0.07 * len(span.name) > (span.end - span.start) * inches_per_unit
        x = span.start + 0.2 if narrow else (span.start + span.end) / 2  # a tilted name starts over its stage
        axes.text(x, 1.02, span.name, transform=at_top, fontsize=8, va="bottom",
                  ha="left" if narrow else "center", rotation=30 if narrow else 0, rotation_mode="anchor",
                  gid="stage-name")


def _write_decisions(axes: Axes, spans: list[StageSpan], decisions: dict[str, str]) -> None:
    """The decision after a stage, written up its right-hand boundary (the axis edge for the last
    stage): vertical text never collides with the next boundary however short the stage. It starts
    at the bottom, where the curves rarely are at a boundary: the lowest scores are the baseline's
    first epochs, at the far left, while the fine-tuning stages improve on the baseline."""
    on_line = mtransforms.blended_transform_factory(axes.transData, axes.transAxes)
    for span in spans:
        action = decisions.get(span.name)
        if action:
            axes.text(span.end - 0.08, 0.03, f"decision: {action}", transform=on_line, rotation=90, ha="right",
                      va="bottom",
                      fontsize=8, color="dimgrey", gid="decision",
                      bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})


def _mark_best_epochs(axes: Axes, spans: list[StageSpan], stages: list[tuple[str, list[EpochRecord]]],
                      best_epochs: dict[str, int]) -> None:
    """A star on each stage's kept epoch; an epoch missing from the history is skipped, not fatal:
    a plot must never fail the run it illustrates."""
    labelled = False
    for span, (_, history) in zip(spans, stages, strict=True):
        epoch = best_epochs.get(span.name)
        if epoch is None or epoch not in span.epochs:
            continue
        index = span.epochs.index(epoch)
        axes.plot([span.x[index]], [history[index].val_metric], linestyle="none", marker="*", markersize=13,
                  color="gold", markeredgecolor="black", zorder=5, gid="best-epoch",
                  label="best epoch of the stage" if not labelled else "_nolegend_")
        labelled = True


def _epoch_ticks(axes: Axes, spans: list[StageSpan]) -> None:
    """Ticks show the epoch number within its stage (each stage restarts at 1): the first, the last
    and about six in between, every epoch for short stages."""
    positions: list[float] = []
    labels: list[str] = []
    for span in spans:
        step = max(1, int(np.ceil(len(span.epochs) / 6)))
        for index, epoch in enumerate(span.epochs):
            if index in (0, len(span.epochs) - 1) or epoch % step == 0:
                positions.append(float(span.x[index]))
                labels.append(str(epoch))
    axes.set_xticks(positions, labels, fontsize=7)


def _x_label(spans: list[StageSpan]) -> str:
    squeezed = [f"{span.name}'s {len(span.epochs)} epochs drawn in {STAGE_WIDTH_CAP} units"
                for span in spans if span.compressed]
    return "epoch across stages (ticks: epoch within the stage" + "".join(f"; {text}" for text in squeezed) + ")"


def per_class_figure(val_scores: dict[str, float], classes: list[str], metric_key: str, target: float | None,
                     title: str) -> Figure:
    """Precision, recall and F1 of every class on validation as horizontal bars (class names stay
    readable and the figure grows downwards, up to ~80 classes), the contract's own bar outlined."""
    n = len(classes)
    figure, axes = plt.subplots(figsize=(8.0, 1.6 + 0.3 * max(n, 1)))
    height = 0.8 / len(PER_CLASS_METRICS)
    where = {class_metric_key(name, label): (name, row) for row, label in enumerate(classes)
             for name in PER_CLASS_METRICS}
    contract = where.get(metric_key)
    for offset, name in enumerate(PER_CLASS_METRICS):
        widths = [val_scores.get(class_metric_key(name, label), np.nan) for label in classes]
        ys = np.arange(n) + (offset - 1) * height
        bars = axes.barh(ys, widths, height=height, color=SERIES_COLORS[name], label=name, gid=f"bars-{name}")
        for row, bar in enumerate(bars):
            bar.set_gid(f"{name}:{classes[row]}")
            if contract == (name, row):
                bar.set_gid("contract")
                bar.set_edgecolor("black")
                bar.set_linewidth(2.0)
                bar.set_hatch("//")
                bar.set_label(f"{metric_key} achieved (the contract's score)")
    axes.set_yticks(np.arange(n), classes, fontsize=8 if n <= 30 else 7)
    if contract is None:
        _aggregate_reference(axes, val_scores, metric_key, target)
    else:
        axes.get_yticklabels()[contract[1]].set_fontweight("bold")
        # A band behind the contract's class: among 80 classes an outline alone is hard to find.
        axes.axhspan(contract[1] - 0.5, contract[1] + 0.5, color="gold", alpha=0.2, zorder=0, gid="contract-row")
        if target is not None:  # a per-class contract: every bar of that kind can be read against it
            axes.axvline(target, color="black", linestyle="--", linewidth=1, gid="target",
                         label=f"contract: {metric_key} >= {target:g}")
    axes.set_ylim(n - 0.5, -0.5)  # first class on top, as in the class list
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("validation score")
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return figure


def _aggregate_reference(axes: Axes, val_scores: dict[str, float], metric_key: str, target: float | None) -> None:
    """An all-class contract has no bar of its own: its achieved value on validation is a solid
    line, and the contract (its target) a dashed one, each labelled as what it is. The legend says
    the target bounds the score over all classes, not each class's bar."""
    value = val_scores.get(metric_key)
    if value is not None:
        axes.axvline(value, color="black", linestyle="-", linewidth=1.2, gid="achieved",
                     label=f"achieved: {metric_key} {value:.3f} (all classes)")
    if target is not None:
        axes.axvline(target, color="tab:red", linestyle="--", linewidth=1.2, gid="contract",
                     label=f"contract: {metric_key} >= {target:g} (all classes, not each)")


def tournament_figure(results: list[Any], metric_key: str, target: float) -> Any:
    """The base-model tournament: each candidate's validation metric (bars, the target as a line)
    beside its embedding throughput on this machine; dropped candidates hatched, the chosen one
    outlined. `results` are tasks.decisions.tournament.CandidateResult rows."""
    names = [r.model.split(" (")[0] for r in results]
    x = np.arange(len(results))
    figure, (metric_axes, speed_axes) = plt.subplots(1, 2, figsize=(max(7.0, 1.6 * len(results) + 3), 4))
    for axes, values, label in ((metric_axes, [r.val_value or 0.0 for r in results], f"validation {metric_key}"),
                                (speed_axes, [r.throughput or 0.0 for r in results], "inputs/s (this machine)")):
        bars = axes.bar(x, values, color=["tab:green" if r.status == "chosen" else "tab:blue" for r in results],
                        gid="candidate")
        for bar, result in zip(bars, results, strict=True):
            if result.status.startswith("dropped"):
                bar.set_hatch("//")
                bar.set_alpha(0.4)
            if result.status == "chosen":
                bar.set_edgecolor("black")
                bar.set_linewidth(2)
        axes.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        axes.set_ylabel(label)
    metric_axes.axhline(target, color="tab:red", linestyle="--", linewidth=1, gid="target", label=f"target {target:g}")
    metric_axes.set_ylim(0, 1.02)
    metric_axes.legend(loc="lower right", fontsize=8)
    figure.suptitle("Base-model tournament: probe head on validation (hatched: dropped by a constraint)")
    figure.tight_layout()
    return figure


def suspects_figure(rows: Any) -> Any:
    """A contact sheet of disputed images: each with its given and suggested label and score.
    `rows` has columns input (image path), given_label, suggested_label, score."""
    from PIL import Image

    count = len(rows)
    columns = min(4, max(count, 1))
    lines = (count + columns - 1) // columns
    figure, grid = plt.subplots(lines, columns, figsize=(3 * columns, 3.2 * lines), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, row in zip(grid.flat, rows.itertuples(), strict=False):
        with Image.open(row.input) as image:
            image.thumbnail((256, 256))
            axes.imshow(image.convert("RGB"))
        axes.set_title(f"{row.given_label} -> {row.suggested_label}\np(given) {row.score:.2f}", fontsize=8,
                       gid="suspect")
    figure.suptitle("Labels the data disputes (given -> suggested), most doubtful first")
    figure.tight_layout()
    return figure


def figure_png_bytes(figure: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, e.g. for a base64 data URI in a Prefect markdown artifact; the
    caller still owns (and closes) the figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def leakage_figure(rows: Any) -> Any:
    """Each near-copy pair found across splits side by side: the held-out image, then its copy in
    a less held-out split, with the cosine similarity. `rows` has columns held_out_input,
    held_out_split, other_input, other_split, similarity."""
    from PIL import Image

    count = max(len(rows), 1)
    figure, grid = plt.subplots(count, 2, figsize=(5.5, 2.8 * count), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for (left, right), row in zip(grid, rows.itertuples(), strict=False):
        for axes, path, split in ((left, row.held_out_input, row.held_out_split),
                                  (right, row.other_input, row.other_split)):
            with Image.open(path) as image:
                image.thumbnail((256, 256))
                axes.imshow(image.convert("RGB"))
            axes.set_title(f"{split}: {Path(path).name}", fontsize=7)
        left.text(1.05, 0.5, f"cos {row.similarity:.3f}", transform=left.transAxes, fontsize=8, gid="pair")
    figure.suptitle("Near-copies across splits (held-out copy left, the one dropped under `drop` right)")
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write the figure as a PNG atomically (the report links it) and close it."""
    from tasks.core.atomic import write_bytes_atomic

    try:
        return write_bytes_atomic(path, figure_png_bytes(figure))
    finally:
        plt.close(figure)

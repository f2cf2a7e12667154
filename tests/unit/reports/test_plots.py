"""The figures show what they claim: read back from the artists (found by their `gid`), not pixels."""

from __future__ import annotations

from itertools import pairwise

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from tasks.config.spec import class_metric_key
from tasks.reports.plots import STAGE_WIDTH_CAP, figure_png_bytes, learning_curves_figure, per_class_figure
from tasks.training.fit import EpochRecord

CLASSES = ["ham", "spam", "top-up failed!"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def history(n: int, start: float, step: float) -> list[EpochRecord]:
    """`n` epochs whose values are distinct per stage, so a point can be traced to its record."""
    return [EpochRecord(epoch, train_loss=1.0 - 0.05 * epoch, val_loss=1.1 - 0.04 * epoch, val_scores={},
                        val_metric=start + step * epoch) for epoch in range(1, n + 1)]


STAGES = [("baseline", history(5, 0.50, 0.01)), ("finetune-1", history(3, 0.60, 0.02)),
          ("finetune-2", history(4, 0.62, -0.01)), ("finetune-2-retry", history(2, 0.66, 0.01))]
DECISIONS = {"finetune-1": "unfreeze_next", "finetune-2": "retry_regularized", "finetune-2-retry": "lock_in"}


def panels(figure: Figure) -> tuple[Axes, Axes]:
    loss_axes, metric_axes = figure.axes
    return loss_axes, metric_axes


def lines(axes: Axes, gid: str) -> list[Line2D]:
    return [line for line in axes.get_lines() if line.get_gid() == gid]


def texts(axes: Axes, gid: str) -> list[Text]:
    return [text for text in axes.texts if text.get_gid() == gid]


def curves() -> Figure:
    return learning_curves_figure(STAGES, DECISIONS, "recall_spam", baseline_value=0.55, target=0.7,
                                  best_epochs={"baseline": 5, "finetune-1": 3, "finetune-2": 1, "finetune-2-retry": 2})


def test_each_stage_is_drawn_after_the_previous_one_with_its_own_values():
    loss_axes, metric_axes = panels(curves())
    assert loss_axes.get_shared_x_axes().joined(loss_axes, metric_axes)
    metric_lines = lines(metric_axes, "val-metric")
    assert len(metric_lines) == len(STAGES)  # one line per stage: stages are not joined
    for line, (_, records) in zip(metric_lines, STAGES, strict=True):
        assert list(line.get_ydata()) == pytest.approx([r.val_metric for r in records])
    for earlier, later in pairwise(metric_lines):
        assert min(later.get_xdata()) > max(earlier.get_xdata())
    for gid, field in (("train-loss", "train_loss"), ("val-loss", "val_loss")):
        drawn = lines(loss_axes, gid)
        assert [list(line.get_ydata()) for line in drawn] == [
            pytest.approx([getattr(r, field) for r in records]) for _, records in STAGES]
        assert [list(line.get_xdata()) for line in drawn] == [list(line.get_xdata()) for line in metric_lines]


def test_one_dotted_boundary_between_consecutive_stages_in_both_panels():
    figure = curves()
    metric_lines = lines(panels(figure)[1], "val-metric")
    for axes in panels(figure):
        boundaries = lines(axes, "stage-boundary")
        assert len(boundaries) == len(STAGES) - 1
        for boundary, earlier, later in zip(boundaries, metric_lines, metric_lines[1:], strict=False):
            x = boundary.get_xdata()[0]
            assert boundary.get_xdata()[1] == x  # vertical
            assert boundary.get_linestyle() == ":"
            assert max(earlier.get_xdata()) < x < min(later.get_xdata())


def test_single_stage_has_no_boundary():
    figure = learning_curves_figure(STAGES[:1], {}, "macro_f1", baseline_value=0.55)
    assert all(not lines(axes, "stage-boundary") for axes in panels(figure))


def test_stage_names_sit_above_their_stage_in_order():
    loss_axes, metric_axes = panels(curves())
    names = texts(loss_axes, "stage-name")
    assert [t.get_text() for t in names] == [name for name, _ in STAGES]
    boundaries = [line.get_xdata()[0] for line in lines(metric_axes, "stage-boundary")]
    edges = [-np.inf, *boundaries, np.inf]
    for index, text in enumerate(names):
        assert edges[index] < text.get_position()[0] < edges[index + 1]
        assert text.get_position()[1] > 1.0  # axes coordinates: above the top panel


def test_each_decision_is_written_at_the_boundary_after_its_stage():
    _, metric_axes = panels(curves())
    written = texts(metric_axes, "decision")
    assert len(written) == len(DECISIONS)  # the baseline has no decision here, so nothing is written for it
    boundaries = [line.get_xdata()[0] for line in lines(metric_axes, "stage-boundary")]
    last_x = [max(line.get_xdata()) for line in lines(metric_axes, "val-metric")]
    right_edges = [*boundaries, metric_axes.get_xlim()[1]]
    for (name, action), text in zip(DECISIONS.items(), written, strict=True):
        stage = [n for n, _ in STAGES].index(name)
        assert action in text.get_text()
        assert last_x[stage] < text.get_position()[0] <= right_edges[stage]


def test_baseline_and_target_reference_lines():
    _, metric_axes = panels(curves())
    (baseline,) = lines(metric_axes, "baseline")
    assert list(baseline.get_ydata()) == [0.55, 0.55]
    (target,) = lines(metric_axes, "target")
    assert list(target.get_ydata()) == [0.7, 0.7]
    assert target.get_linestyle() == "--"
    without = learning_curves_figure(STAGES, DECISIONS, "recall_spam", baseline_value=0.55)
    assert not lines(panels(without)[1], "target")


def test_best_epochs_are_starred_on_their_own_point():
    best = {"baseline": 5, "finetune-1": 3, "finetune-2": 1, "finetune-2-retry": 2}
    _, metric_axes = panels(curves())
    stars = lines(metric_axes, "best-epoch")
    assert len(stars) == len(STAGES)
    for star, line, (name, records) in zip(stars, lines(metric_axes, "val-metric"), STAGES, strict=True):
        assert star.get_marker() == "*"
        index = best[name] - 1
        assert star.get_xdata()[0] == pytest.approx(line.get_xdata()[index])
        assert star.get_ydata()[0] == pytest.approx(records[index].val_metric)


def test_no_best_epochs_and_unknown_best_epoch_draw_no_star():
    figure = learning_curves_figure(STAGES, DECISIONS, "recall_spam", 0.55)
    assert not lines(panels(figure)[1], "best-epoch")
    figure = learning_curves_figure(STAGES, DECISIONS, "recall_spam", 0.55, best_epochs={"finetune-1": 99})
    assert not lines(panels(figure)[1], "best-epoch")


def test_a_long_baseline_is_squeezed_but_complete_and_fine_tuning_keeps_one_unit_per_epoch():
    stages = [("baseline", history(60, 0.5, 0.001)), ("finetune-1", history(3, 0.6, 0.01))]
    figure = learning_curves_figure(stages, {}, "macro_f1", 0.55, best_epochs={"baseline": 50})
    _, metric_axes = panels(figure)
    baseline, finetune = lines(metric_axes, "val-metric")
    assert len(baseline.get_xdata()) == 60  # every epoch is still drawn
    assert np.ptp(baseline.get_xdata()) <= STAGE_WIDTH_CAP - 1
    assert list(np.diff(finetune.get_xdata())) == [1.0, 1.0]
    assert np.ptp(finetune.get_xdata()) / np.ptp(metric_axes.get_xlim()) > 0.1  # not squashed by the baseline
    assert "60 epochs" in metric_axes.get_xlabel()
    (star,) = lines(metric_axes, "best-epoch")
    assert star.get_ydata()[0] == pytest.approx(stages[0][1][49].val_metric)
    labels = [tick.get_text() for tick in metric_axes.get_xticklabels()]
    assert labels[0] == "1" and "60" in labels  # ticks give the epoch within its stage


def scores_for(classes: list[str]) -> dict[str, float]:
    values = {class_metric_key(name, label): round(0.1 + 0.01 * row + offset, 3)
              for row, label in enumerate(classes)
              for offset, name in ((0.0, "precision"), (0.3, "recall"), (0.6, "f1"))}
    return {**values, "macro_f1": 0.75}


def bars(axes: Axes) -> list[Rectangle]:
    return [patch for patch in axes.patches if isinstance(patch, Rectangle) and patch.get_gid() != "contract-row"]


def test_per_class_bars_show_each_score_in_class_order():
    scores = scores_for(CLASSES)
    axes = per_class_figure(scores, CLASSES, "recall_spam", 0.8, "validation").axes[0]
    drawn = sorted(bars(axes), key=lambda b: b.get_y())  # top to bottom once the axis is inverted
    expected = [scores[class_metric_key(name, label)] for label in CLASSES for name in ("precision", "recall", "f1")]
    assert [b.get_width() for b in drawn] == pytest.approx(expected)
    # first class on top: rows run downwards in the class list's order
    assert axes.get_ylim()[0] > axes.get_ylim()[1]
    assert [t.get_text() for t in axes.get_yticklabels()] == CLASSES


def test_the_contracts_own_bar_is_highlighted_and_the_target_drawn():
    scores = scores_for(CLASSES)
    axes = per_class_figure(scores, CLASSES, "recall_spam", 0.8, "validation").axes[0]
    (contract,) = [b for b in bars(axes) if b.get_gid() == "contract"]
    assert contract.get_width() == pytest.approx(scores["recall_spam"])
    row = CLASSES.index("spam")
    assert row - 0.5 < contract.get_y() + contract.get_height() / 2 < row + 0.5
    assert contract.get_linewidth() > max(b.get_linewidth() for b in bars(axes) if b is not contract)
    assert axes.get_yticklabels()[row].get_fontweight() == "bold"
    (target,) = lines(axes, "target")
    assert list(target.get_xdata()) == [0.8, 0.8] and target.get_label() == "contract: recall_spam >= 0.8"


def test_an_all_class_contract_draws_its_target_and_the_achieved_value_apart_and_highlights_no_bar():
    scores = scores_for(CLASSES)
    axes = per_class_figure(scores, CLASSES, "macro_f1", 0.8, "validation").axes[0]
    assert not [b for b in bars(axes) if b.get_gid() == "contract"]
    (contract,) = lines(axes, "contract")  # the contract is the target, not the score reached
    assert list(contract.get_xdata()) == [0.8, 0.8] and contract.get_label() == (
        "contract: macro_f1 >= 0.8 (all classes, not each)")
    (achieved,) = lines(axes, "achieved")
    assert list(achieved.get_xdata()) == [0.75, 0.75]
    assert achieved.get_label() == "achieved: macro_f1 0.750 (all classes)"
    assert not lines(axes, "target")  # no per-class target line: the target bounds the average
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert contract.get_label() in legend and achieved.get_label() in legend


def test_eighty_classes_get_a_taller_figure_and_every_label():
    many = [f"class {i}" for i in range(80)]
    figure = per_class_figure(scores_for(many), many, "recall_class 7", None, "validation")
    assert figure.get_figheight() > 4 * per_class_figure(scores_for(CLASSES), CLASSES, "macro_f1", None,
                                                         "validation").get_figheight()
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == many
    assert not lines(figure.axes[0], "target")


def test_figure_png_bytes_is_a_png():
    assert figure_png_bytes(curves()).startswith(b"\x89PNG\r\n\x1a\n")


def test_the_suspects_contact_sheet_shows_each_image_with_given_and_suggested_labels(tmp_path):
    import pandas as pd

    from tasks.reports.plots import suspects_figure
    from tests.conftest import small_image

    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        small_image((40, 30), (i * 50, 20, 200)).save(path)
        paths.append(str(path))
    rows = pd.DataFrame({"input": paths, "given_label": ["ants"] * 5, "suggested_label": ["bees"] * 5,
                         "score": [0.01, 0.02, 0.03, 0.04, 0.05]})
    figure = suspects_figure(rows)
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    assert titles == [f"ants -> bees\np(given) {s:.2f}" for s in rows["score"]]
    assert sum(len(axes.images) for axes in figure.axes) == 5 and len(figure.axes) == 8  # a 4 x 2 grid


def test_leakage_pairs_are_drawn_side_by_side_with_their_similarity(tmp_path):
    import pandas as pd
    from PIL import Image

    from tasks.reports.plots import leakage_figure, save_figure
    from tests.conftest import small_image

    for name, colour in [("t.png", (200, 30, 30)), ("a.png", (190, 35, 30)), ("v.png", (20, 30, 200)),
                         ("b.png", (25, 30, 190))]:
        small_image((40, 30), colour).save(tmp_path / name)
    rows = pd.DataFrame({"held_out_input": [str(tmp_path / "t.png"), str(tmp_path / "v.png")],
                         "held_out_split": ["test", "val"], "other_split": ["train", "train"],
                         "other_input": [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                         "similarity": [0.991, 0.9734]})
    figure = leakage_figure(rows)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == ["test: t.png", "train: a.png", "val: v.png", "train: b.png"]
    labels = [text.get_text() for axes in figure.axes for text in axes.texts if text.get_gid() == "pair"]
    assert labels == ["cos 0.991", "cos 0.973"]
    path = save_figure(figure, tmp_path / "pairs.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200

"""Cross-check: the data's labels against a second person's, on the examples both labelled.

The agreement is Cohen's kappa (scikit-learn's `cohen_kappa_score`: the observed agreement corrected
for the agreement two labellers reach by chance with their own class frequencies), each class's
specific agreement (2 x both said it / (times the data said it + times the second labeller did):
how often the two agree on a class when either uses it), and the annotators' confusion matrix
(rows: the data's label, columns: the second label). Examples the two label differently are
listed; `data.cross_check_disagreements: drop` holds them out of the data until the labels agree.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from tasks.config.data_kinds import DataKindOptions
from tasks.core.errors import DataError
from tasks.data.table import Quarantined


@dataclass(frozen=True)
class Disagreement:
    """One example the two labellers label differently, and where a person finds it."""

    example_id: str
    source: str
    label: str          # the data's
    second_label: str
    row: str            # where the second label is: its CSV row, or the store's pull and task

    def describe(self) -> str:
        return f"{self.source} ({self.label}; second labeller: {self.second_label})"


@dataclass(frozen=True)
class CrossCheck:
    labels_file: str
    classes: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]  # [data's label][second label], in `classes` order
    kappa: float
    min_kappa: float
    disagreements: tuple[Disagreement, ...]
    not_compared: int = 0  # second labels of examples taken out at step 2a, or outside data.select_classes

    @property
    def overlap(self) -> int:
        """The examples both labelled: what the agreement is measured on."""
        return sum(map(sum, self.matrix))

    @property
    def passed(self) -> bool:
        return self.kappa >= self.min_kappa

    def agreement(self) -> dict[str, float]:
        """Each class's specific agreement, for the classes either labeller used."""
        found = {}
        for i, label in enumerate(self.classes):
            used = sum(self.matrix[i]) + sum(row[i] for row in self.matrix)
            if used:
                found[label] = 2 * self.matrix[i][i] / used
        return found

    def confused_pairs(self) -> list[tuple[str, str, int]]:
        """Pairs of classes the labellers swap, both directions summed, the most swapped first."""
        pairs = [(self.classes[i], self.classes[j], self.matrix[i][j] + self.matrix[j][i])
                 for i in range(len(self.classes)) for j in range(i + 1, len(self.classes))]
        return sorted((pair for pair in pairs if pair[2]), key=lambda pair: -pair[2])

    def shortfall(self) -> str:
        """Why the data is not consistent enough to train on: the kappa, and the pair to settle first."""
        worst = self.confused_pairs()
        pair = f"; they disagree most on '{worst[0][0]}' vs '{worst[0][1]}' ({worst[0][2]} examples)" if worst else ""
        return (f"{self.labels_file}: Cohen's kappa {self.kappa:.3f} between the data's labels and the second labels "
                f"on {self.overlap} examples is below data.cross_check.min_kappa {self.min_kappa:g}{pair}")


def cross_check(loaded: pd.DataFrame, kept: pd.DataFrame, data: DataKindOptions,
                classes: Sequence[str]) -> CrossCheck | None:
    """Compare the second labels with the data's on the examples step 2a kept (`kept`); the rows are
    matched against everything loaded (`loaded`), so one naming an example taken out is no error.
    None when the config asks for no cross-check."""
    if data.cross_check is None:
        return None
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    from tasks.data.second_labels import read_second_labels, second_labels_source

    second = read_second_labels(data, loaded, classes)
    path = second_labels_source(data)
    if data.cross_check.labels is None and second.frame.empty:
        print(f"data.cross_check: no second labels in the labels store {path} yet, so no agreement to measure. "
              "Push the cross-check queue (transferflow label push CONFIG --what cross-check) and pull the answers.")
        return None
    first = kept.dropna(subset=["label"]).drop_duplicates("example_id").set_index("example_id")
    both = second.frame[second.frame["example_id"].isin(first.index)]
    if both.empty:
        raise DataError(f"{path}: none of its {len(second.frame)} matched row(s) names an example kept at step 2a "
                        "with a label, so there is no agreement to measure. Fix: cross-check a sample of the "
                        "examples the data keeps, or remove data.cross_check.")
    y_first, y_second = first.loc[both["example_id"], "label"].astype(str).to_numpy(), both["second_label"].to_numpy()
    labels = list(classes)
    with warnings.catch_warnings():  # undefined only when both used one and the same class: they agree
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        kappa = float(cohen_kappa_score(y_first, y_second, labels=labels, replace_undefined_by=1.0))
    matrix = confusion_matrix(y_first, y_second, labels=labels)
    disagreements = tuple(Disagreement(str(example_id), str(first.at[example_id, "source"]), str(mine), str(theirs),
                                       str(row))
                          for example_id, mine, theirs, row in zip(both["example_id"], y_first, y_second, both["row"],
                                                                   strict=True) if mine != theirs)
    return CrossCheck(str(path), tuple(labels), tuple(tuple(int(n) for n in row) for row in matrix), kappa,
                      data.cross_check.min_kappa, disagreements,
                      len(second.frame) - len(both) + second.outside_selection)


def hold_out_disagreements(table: pd.DataFrame, check: CrossCheck) -> tuple[pd.DataFrame, list[Quarantined]]:
    """The table without every copy of the examples the labellers disagree on, and those copies
    with their reason (reported, never silent)."""
    second = {d.example_id: d.second_label for d in check.disagreements}
    disputed = table["example_id"].isin(second)
    held_out = [Quarantined(str(row.source), str(row.label), f"the second labeller says '{second[row.example_id]}'")
                for row in table[disputed].itertuples(index=False)]
    return table[~disputed].reset_index(drop=True), held_out

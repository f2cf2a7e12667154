"""Which given labels the data itself disputes: confident learning (cleanlab) on out-of-fold
probabilities of a linear probe over the frozen embeddings.

The probe is a softmax-linear classifier (scikit-learn's multinomial logistic regression on
standardized embeddings: the same model class as the baseline head), fit K times, each time
without one fold, so every example is scored by a probe that never saw its label. Only train and
validation examples take part: the test split is never read here. cleanlab's `find_label_issues`
(pruned by the estimated noise rate) decides which examples are issues; its self-confidence score
(the probe's probability of the given label) ranks them, most doubtful first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FOLDS = 5
OUTLIER_NEIGHBOURS = 10
OUTLIERS_SHOWN = 20


@dataclass(frozen=True)
class LabelIssues:
    """The disputed examples, most doubtful first, and what the audit looked at."""

    table: pd.DataFrame   # example_id, input, given_label, suggested_label, score (lower: more doubtful)
    scores: pd.Series     # every audited example's score (the probe's out-of-fold p(given label)), by id
    audited: int          # examples scored (train + validation)

    def top(self, k: int) -> pd.DataFrame:
        return self.table.head(k)


def find_outliers(examples: pd.DataFrame, features: np.ndarray, shown: int = OUTLIERS_SHOWN) -> pd.DataFrame:
    """The inputs least like the rest (cleanlab's OutOfDistribution on the embeddings: distance to
    their nearest neighbours), most unusual first: placeholders, blank scans, another language.
    Reported, never dropped: an unusual example may be the valuable one."""
    from cleanlab.outlier import OutOfDistribution

    if len(examples) <= OUTLIER_NEIGHBOURS:
        return pd.DataFrame(columns=["example_id", "input", "label", "score"])
    scores = OutOfDistribution(params={"k": OUTLIER_NEIGHBOURS}).fit_score(features=features.astype(np.float32))
    order = np.argsort(scores, kind="stable")[:shown]
    rows = examples.iloc[order]
    return pd.DataFrame({"example_id": rows["example_id"].to_numpy(), "input": rows["input"].to_numpy(),
                         "label": rows["label"].to_numpy(), "score": scores[order]})


def to_drop(issues: LabelIssues, max_drop_fraction: float) -> list[str]:
    """`label_issues: drop`: the most doubtful flagged examples, at most `max_drop_fraction` of
    the audited ones."""
    cap = int(max_drop_fraction * issues.audited)
    return list(issues.table["example_id"].head(cap))


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
                              folds: int = FOLDS) -> np.ndarray:
    """[n, n_classes] probabilities, each row from a probe fit without that row's fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    smallest = int(np.bincount(labels, minlength=n_classes)[np.bincount(labels, minlength=n_classes) > 0].min())
    splitter = StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    probabilities = cross_val_predict(probe, features, labels, cv=splitter, method="predict_proba")
    present = np.unique(labels)  # a probe only outputs the classes it saw: put them in their columns
    full = np.zeros((len(labels), n_classes))
    full[:, present] = probabilities
    return full


def find_label_issues(examples: pd.DataFrame, features: np.ndarray, classes: list[str],
                      seed: int = 0) -> LabelIssues:
    """`examples` (example_id, input, label) in the order of `features`' rows: the examples
    cleanlab flags, ranked by the probe's out-of-fold probability of their given label."""
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.array([classes.index(label) for label in examples["label"]])
    probabilities = out_of_fold_probabilities(features, labels, len(classes), seed)
    # n_jobs=1: cleanlab would fork a process pool, and a fork of a process running torch threads can
    # deadlock in the child (it did, in CI).
    flagged = cleanlab_issues(labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(labels, probabilities, method="self_confidence")
    rows = examples.iloc[flagged]
    table = pd.DataFrame({
        "example_id": rows["example_id"].to_numpy(), "input": rows["input"].to_numpy(),
        "given_label": rows["label"].to_numpy(),
        "suggested_label": [classes[i] for i in probabilities[flagged].argmax(axis=1)],
        "score": scores[flagged]})
    return LabelIssues(table.reset_index(drop=True), pd.Series(scores, index=examples["example_id"].to_numpy()),
                       len(examples))

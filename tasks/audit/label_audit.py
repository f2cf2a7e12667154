"""Which given labels the data itself disputes: confident learning (cleanlab) on out-of-fold
probabilities of a linear probe over the frozen embeddings.

The probe is a softmax-linear classifier (multinomial logistic regression on standardized
embeddings, L2-penalized: the same model class as the baseline head), fit K times, each time
without one fold, so every example is scored by a probe that never saw its label. It is fit in
torch, full batch with L-BFGS: on banking77's 10,003 texts (77 classes) the five fits take about
7 s on 2 cores where scikit-learn's LogisticRegression took 35 s for the same objective and the
same suspects (benchmarks/data_audit.py). Only train and
validation examples take part: the test split is never read here.

Reviewers stop reading a queue that is mostly wrong, so the suspects are made trustworthy:
- the probe's out-of-fold logits are calibrated with one temperature (fit by NLL on those logits),
  since an overconfident probe puts p(given) 0.00 on correctly labelled but unusual examples;
- cleanlab's `find_label_issues` flags examples on the calibrated probabilities with FILTER_BY
  "both": an example must be among its class's least self-confident (prune by class) and among
  the most off-diagonal in the confident joint (prune by noise rate), and only those whose
  suggested label is itself likely (p >= MIN_SUGGESTION) are kept: "the data points elsewhere",
  not "the probe is unsure";
- a second, non-parametric opinion must agree: at least MIN_NEIGHBOUR_SHARE of the suspect's
  NEIGHBOURS nearest examples (cosine, on the same embeddings) carry the suggested label (deep
  k-NN, Bahri et al. 2020), and its given label is carried by its undisputed neighbours no more
  often than around the suggested class's own examples (typical_given_share, at least
  MAX_GIVEN_SHARE). A mislabelled example sits among its true class, where its given label is as
  rare as around any other member; an odd but rightly labelled one, which a linear probe misreads,
  usually has a few siblings of its own class close by (the same odd hand, the same phrasing);
- the self-confidence score (calibrated p(given)) ranks them, most doubtful first. The report
  gives the probe's out-of-fold accuracy (how often it misreads an example at all) and the sum of
  the suspects' calibrated p(given): the false alarms to expect if the probe were calibrated on
  them, which is a lower bound. On the demo's clean MNIST sample (benchmarks/label_audit_trust.py)
  the queue went from 32 suspects, 11 of them ambiguous or mislabelled digits by eye, to 13 with 8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

FOLDS = 5
PROBE_C = 0.5              # inverse L2 strength, as scikit-learn's C
PROBE_ITERATIONS = 100     # L-BFGS iterations per fit (the suspects no longer change beyond ~50)
MIN_SUGGESTION = 0.5       # calibrated p(suggested label) a suspect needs
MIN_NEIGHBOUR_SHARE = 0.5  # of its nearest neighbours, the share labelled as the suggestion a suspect needs
# Of its nearest neighbours, the share that may carry its given label without being disputed
# themselves (flagged by cleanlab): 1 of 10. A flipped label is (nearly) absent around the example;
# an odd but rightly labelled one usually has siblings of its class close by (the same odd hand, the
# same phrasing). Disputed neighbours do not vouch: with two classes, 5% flips put two or more
# flipped neighbours, carrying the same wrong label, around one flip in ten (SMS spam: recall 0.71 if
# they vouched, 0.80 as is). A floor: where classes overlap, typical_given_share allows more. With
# FILTER_BY, on the benchmark sets (benchmarks/label_audit_trust.py): clean-data suspects MNIST
# 32 -> 13, banking77 76 -> 54; on 5% flips precision 0.77 -> 0.88 and 0.71 -> 0.77, recall unchanged.
MAX_GIVEN_SHARE = 0.1
# The given label's share around the suggested class's own examples that 9 in 10 of them stay within.
TYPICAL_QUANTILE = 0.9
REFERENCE_ROWS = 200
# cleanlab's filter: "both" needs its two rankings to agree (the class's least self-confident, and
# the largest margins in each off-diagonal cell of the confident joint), where its default
# "prune_by_noise_rate" takes the second alone. With the other filters as they are, on the four
# benchmark sets it cut the clean-data suspects (MNIST 32 -> 18, banking77 76 -> 63) and lost at
# most 1 of 200 planted flips.
FILTER_BY = "both"
NEIGHBOURS = 10
OUTLIER_NEIGHBOURS = 10
OUTLIERS_SHOWN = 20


@dataclass(frozen=True)
class LabelIssues:
    """The disputed examples, most doubtful first, and what the audit looked at."""

    table: pd.DataFrame   # example_id, input, given_label, suggested_label, score (lower: more doubtful),
    #                       p_suggested
    scores: pd.Series     # every audited example's score (calibrated out-of-fold p(given label)), by id
    audited: int          # examples scored (train + validation)
    probe_accuracy: float = float("nan")  # out-of-fold accuracy against the given labels
    temperature: float = 1.0              # the calibration's: probabilities = softmax(logits / temperature)

    def top(self, k: int) -> pd.DataFrame:
        return self.table.head(k)

    def expected_false_alarms(self, k: int | None = None) -> float:
        """How many of the first k suspects (all by default) are labelled right if the calibrated
        probe is right about them: a lower bound, since its confident errors are its unknown ones."""
        return float(self.table["score"].head(len(self.table) if k is None else k).sum())

    def trust(self) -> str:
        """One line for the report: how far a reviewer can trust the list."""
        return (f"probe accuracy {self.probe_accuracy:.2f} (out of fold, calibrated at temperature "
                f"{self.temperature:.2f}: it misreads {1 - self.probe_accuracy:.0%} of examples); false alarms "
                f"among the {len(self.table)} suspect(s): at least ~{self.expected_false_alarms():.1f}")


def find_outliers(examples: pd.DataFrame, features: np.ndarray, shown: int = OUTLIERS_SHOWN,
                  exact_search_max: int | None = None) -> pd.DataFrame:
    """The inputs least like the rest, most unusual first: placeholders, blank scans, another
    language. Reported, never dropped: an unusual example may be the valuable one."""
    if len(examples) <= OUTLIER_NEIGHBOURS:
        return pd.DataFrame(columns=["example_id", "input", "label", "score"])
    scores = outlier_scores(features, exact_search_max=exact_search_max)
    order = np.argsort(scores, kind="stable")[:shown]
    rows = examples.iloc[order]
    return pd.DataFrame({"example_id": rows["example_id"].to_numpy(), "input": rows["input"].to_numpy(),
                         "label": rows["label"].to_numpy(), "score": scores[order]})


def outlier_scores(features: np.ndarray, k: int = OUTLIER_NEIGHBOURS,
                   exact_search_max: int | None = None) -> np.ndarray:
    """cleanlab's OutOfDistribution feature score, exp(-d / median d) with d an example's mean
    cosine distance to its k nearest other examples (1 = typical, near 0 = unlike anything), from
    one exact k-NN pass. cleanlab's own `fit_score` runs that quadratic search twice (a fit check,
    then the query); here it runs once, as euclidean distance on L2-normalized vectors (one BLAS
    product per chunk; cosine distance = euclidean^2 / 2): 20k 384-d vectors took 6.3 s here, 19.5 s in
    cleanlab, the same scores within 5e-7."""
    from cleanlab.outlier import transform_distances_to_scores
    from sklearn.neighbors import NearestNeighbors

    from tasks.audit.leakage import normalized

    vectors = normalized(features)
    if exact_search_max is not None and len(vectors) > exact_search_max:  # quadratic: a checked IVF index
        from tasks.audit.approximate import knn_distances

        average = knn_distances(vectors, k).mean(axis=1)
    else:
        index = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(vectors)
        distances, _ = index.kneighbors()                # no query: each example's neighbours exclude itself
        average = (distances.astype(np.float64) ** 2 / 2).mean(axis=1)
    scores = transform_distances_to_scores(average, t=1, scaling_factor=max(float(np.median(average)),
                                                                            100 * np.finfo(np.float64).eps))
    scores[average < 100 * np.finfo(np.float64).epsneg] = 1.0   # copies: cleanlab's precision-error rule
    return scores


def to_drop(issues: LabelIssues, max_drop_fraction: float) -> list[str]:
    """`label_issues: drop`: the most doubtful flagged examples, at most `max_drop_fraction` of
    the audited ones."""
    cap = int(max_drop_fraction * issues.audited)
    return list(issues.table["example_id"].head(cap))


def nearest_others(features: np.ndarray, rows: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """[len(rows), k] indices of each row's k nearest other examples (cosine), nearest first. One
    brute-force pass of `rows` against all examples."""
    from sklearn.neighbors import NearestNeighbors

    from tasks.audit.leakage import normalized

    vectors = normalized(features)
    k = min(k, len(vectors) - 1)
    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(vectors)
    _, found = index.kneighbors(vectors[rows])
    return np.array([[n for n in row if n != self][:k] for row, self in zip(found, rows, strict=True)])


def neighbour_share(features: np.ndarray, labels: np.ndarray, rows: np.ndarray, suggested: np.ndarray,
                    k: int = NEIGHBOURS) -> np.ndarray:
    """For each of `rows`: the share of its k nearest other examples (cosine) whose given label is
    its `suggested` one."""
    return (labels[nearest_others(features, rows, k)] == suggested[:, None]).mean(axis=1)


def typical_given_share(features: np.ndarray, labels: np.ndarray, disputed: np.ndarray, given: np.ndarray,
                        suggested: np.ndarray, floor: float, seed: int = 0) -> np.ndarray:
    """For each suspect (its `given` and `suggested` label): the share of undisputed neighbours
    labelled `given` that an undisputed example labelled `suggested` has at the TYPICAL_QUANTILE, and
    never below `floor`. A flipped example looks like any other of its true class, so its given label
    is allowed around it as often as around them: on well-separated classes that is about none and
    `floor` decides; where two classes overlap in the embedding (ants and bees at 64 px: a third of a
    true ant's neighbours are bees), a fixed floor would turn away every real flip. Up to
    REFERENCE_ROWS examples per suggested class are looked at (seeded), so the cost stays bounded."""
    allowed = np.full(len(given), floor)
    rng = np.random.default_rng(seed)
    for cls in np.unique(suggested):
        members = np.flatnonzero((labels == cls) & ~disputed)
        if len(members) == 0:
            continue
        members = rng.choice(members, size=min(REFERENCE_ROWS, len(members)), replace=False)
        neighbours = nearest_others(features, members)
        for given_cls in np.unique(given[suggested == cls]):
            around = ((labels[neighbours] == given_cls) & ~disputed[neighbours]).mean(axis=1)
            pair = (suggested == cls) & (given == given_cls)
            allowed[pair] = max(floor, float(np.quantile(around, TYPICAL_QUANTILE)))
    return allowed


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
                              folds: int = FOLDS) -> np.ndarray:
    """[n, n_classes] probabilities, each row from a probe fit without that row's fold."""
    return softmax(out_of_fold_logits(features, labels, n_classes, seed, folds))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)  # absent classes stay at -inf: exp gives 0
    exponent = np.exp(scaled)
    return exponent / exponent.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The one temperature that minimizes the negative log-likelihood of `labels` (Guo et al., 2017),
    searched on log T in [-3, 3]."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        return float(-np.log(softmax(logits, float(np.exp(log_t)))[np.arange(len(labels)), labels] + 1e-12).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def out_of_fold_logits(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
                       folds: int = FOLDS) -> np.ndarray:
    """[n, n_classes] logits (-inf for classes absent from a fold), each row from a probe fit
    without that row's fold."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=n_classes)
    splitter = StratifiedKFold(n_splits=max(2, min(folds, int(counts[counts > 0].min()))), shuffle=True,
                               random_state=seed)
    full = np.zeros((len(labels), n_classes))
    for fit_rows, scored_rows in splitter.split(features, labels):
        full[scored_rows] = _fit_probe(features[fit_rows], labels[fit_rows], n_classes)(features[scored_rows])
    return full


def _fit_probe(features: np.ndarray, labels: np.ndarray, n_classes: int, c: float = PROBE_C,
               max_iter: int = PROBE_ITERATIONS) -> Callable[[np.ndarray], np.ndarray]:
    """Multinomial logistic regression on standardized features: mean cross-entropy plus
    ||W||^2 / (2 C n) (scikit-learn's LogisticRegression objective), minimized with L-BFGS. Returns
    the probe: features -> [n, n_classes] logits (-inf for classes absent from `labels`)."""
    import torch

    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-8
    x = torch.as_tensor((features - mean) / scale, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    weights = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    absent = torch.as_tensor(np.bincount(labels, minlength=n_classes) == 0)
    optimizer = torch.optim.LBFGS([weights, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def logits(inputs: torch.Tensor) -> torch.Tensor:
        return (inputs @ weights + bias).masked_fill(absent, -torch.inf)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(logits(x), y) + (weights * weights).sum() / (2 * c * len(y))
        value.backward()
        return value

    optimizer.step(loss)

    def scored(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return logits(torch.as_tensor((rows - mean) / scale, dtype=torch.float32)).double().numpy()

    return scored


def find_label_issues(examples: pd.DataFrame, features: np.ndarray, classes: list[str], seed: int = 0,
                      calibrate: bool = True, min_suggestion: float = MIN_SUGGESTION,
                      min_neighbour_share: float = MIN_NEIGHBOUR_SHARE, max_given_share: float = MAX_GIVEN_SHARE,
                      filter_by: str = FILTER_BY) -> LabelIssues:
    """`examples` (example_id, input, label) in the order of `features`' rows: the examples
    cleanlab flags (`filter_by`) on calibrated out-of-fold probabilities whose suggested label
    reaches `min_suggestion`, carried by at least `min_neighbour_share` of their nearest neighbours,
    whose given label their undisputed neighbours carry no more often than typical_given_share allows
    (at least `max_given_share`); ranked by their calibrated probability of the given label.
    `calibrate=False, min_suggestion=0, min_neighbour_share=0, max_given_share=1,
    filter_by="prune_by_noise_rate"` is the uncalibrated, unfiltered audit (benchmarks compare them)."""
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.array([classes.index(label) for label in examples["label"]])
    logits = out_of_fold_logits(features, labels, len(classes), seed)
    temperature = fit_temperature(logits, labels) if calibrate else 1.0
    probabilities = softmax(logits, temperature)
    # n_jobs=1: cleanlab would fork a process pool, and a fork of a process running torch threads can
    # deadlock in the child (it did, in CI).
    flagged = cleanlab_issues(labels, probabilities, filter_by=filter_by, return_indices_ranked_by="self_confidence",
                              n_jobs=1)
    disputed = np.isin(np.arange(len(labels)), flagged)
    flagged = flagged[probabilities[flagged].max(axis=1) >= min_suggestion]
    if (min_neighbour_share > 0 or max_given_share < 1) and len(flagged):
        neighbours = nearest_others(features, flagged)
        around = labels[neighbours]
        share = (around == probabilities[flagged].argmax(axis=1)[:, None]).mean(axis=1)
        vouching = ((around == labels[flagged][:, None]) & ~disputed[neighbours]).mean(axis=1)
        allowed = typical_given_share(features, labels, disputed, labels[flagged],
                                      probabilities[flagged].argmax(axis=1), max_given_share, seed)
        flagged = flagged[(share >= min_neighbour_share) & (vouching <= allowed)]
    scores = get_label_quality_scores(labels, probabilities, method="self_confidence")
    rows = examples.iloc[flagged]
    table = pd.DataFrame({
        "example_id": rows["example_id"].to_numpy(), "input": rows["input"].to_numpy(),
        "given_label": rows["label"].to_numpy(),
        "suggested_label": [classes[i] for i in probabilities[flagged].argmax(axis=1)],
        "score": scores[flagged], "p_suggested": probabilities[flagged].max(axis=1)})
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    return LabelIssues(table.reset_index(drop=True), pd.Series(scores, index=examples["example_id"].to_numpy()),
                       len(examples), accuracy, temperature)

"""The operating point of a per-class contract: the threshold on p(class) the model answers with.

Argmax answers a class when its probability is the largest, which rarely sits where a contract
such as "recall of spam >= 0.90" wants it. The threshold is chosen once, on VALIDATION
probabilities of the selected model, stored in its checkpoint, and applied unchanged by the test
evaluation, the served model and the champion's scoring: it is never tuned on test.

Pure numpy (no Prefect, no torch): the served pyfunc imports `apply_operating_point`.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from tasks.config.spec import PER_CLASS_METRICS, class_metric_key
from tasks.models.classifier import OperatingPoint
from tasks.training.metrics import Contract


def threshold_scores(p_class: np.ndarray, is_class: np.ndarray) -> dict[str, np.ndarray]:
    """Every candidate threshold (the distinct probabilities, ascending) with the class's precision,
    recall and f1 when the class is answered for p >= threshold, and the counts behind them
    (`answered`, `positives`). One sort, no loop over thresholds. A class absent from the truth
    scores recall 0 (as `classification_metrics` counts it)."""
    order = np.argsort(p_class, kind="stable")
    ranked, hits = p_class[order], is_class[order].astype(np.int64)
    hits_from = np.concatenate([np.cumsum(hits[::-1])[::-1], [0]])  # true positives among ranked[k:]
    thresholds = np.unique(ranked)
    first = np.searchsorted(ranked, thresholds, side="left")
    answered, true_positives, positives = len(ranked) - first, hits_from[first], int(hits.sum())
    precision = true_positives / answered
    recall = true_positives / positives if positives else np.zeros(len(thresholds))
    f1 = 2 * true_positives / (answered + positives)
    return {"threshold": thresholds, "precision": precision, "recall": recall, "f1": f1,
            "answered": answered, "positives": np.full(len(thresholds), positives)}


def lower_bound(score: np.ndarray, n_val: np.ndarray, test_to_val: float, confidence: float) -> np.ndarray:
    """A one-sided Wilson lower bound for the score a test split will show, given the score `score`
    seen on `n_val` validation trials (positives for recall, answers for precision).

    The test score differs from the validation one by the noise of both samples, so the variance
    is p(1-p)(1/n_val + 1/n_test) with n_test = n_val x `test_to_val` (the splits are stratified):
    the Wilson bound at that effective size. Wilson, not the normal bound, because the normal
    bound of a perfect score on few examples is the score itself. At confidence 0.5 it is `score`."""
    z = NormalDist().inv_cdf(confidence)
    n = np.asarray(n_val, dtype=np.float64) * test_to_val / (1.0 + test_to_val)
    p = np.asarray(score, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = p + z * z / (2 * n)
        spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        bound = (centre - spread) / (1 + z * z / n)
    return np.where(n > 0, np.clip(bound, 0.0, 1.0), 0.0)


def choose_threshold(p_class: np.ndarray, is_class: np.ndarray, contract: Contract,
                     test_to_val: float = 1.0) -> OperatingPoint | None:
    """The threshold for a per-class contract on validation probabilities of the selected model.

    A threshold meets the target when its contract score's lower bound (`lower_bound` at
    `metric.confidence`, with a test split `test_to_val` times validation's size) does, and keeps
    the guard when its guard score on validation does. Among those: the best guard score (a
    recall contract then buys the most precision it can still afford). If none meets the target:
    the highest lower bound among guard-keeping thresholds. If none keeps the guard: None, and
    the model answers by argmax. f1 contracts (no guard, no binomial bound) take the best f1.
    Ties go to the better other score (bound or guard), then to the higher threshold (fewer
    answers of the class). Aggregate contracts have no class to threshold: None."""
    metric, guard = contract.metric, contract.guard
    if metric.class_name is None:
        return None
    table = threshold_scores(p_class, is_class)
    scores = [{class_metric_key(name, metric.class_name): float(table[name][i]) for name in PER_CLASS_METRICS}
              for i in range(len(table["threshold"]))]
    trials = {"recall": table["positives"], "precision": table["answered"]}.get(metric.name)
    bounds = (lower_bound(table[metric.name], trials, test_to_val, metric.confidence) if trials is not None
              else table[metric.name])
    keeping = [i for i, s in enumerate(scores) if contract.guard_holds(s)]
    if not keeping:
        return None
    meeting = [i for i in keeping if bounds[i] >= metric.target]

    def rank(i: int) -> tuple[float, float, float]:
        bound = float(bounds[i])
        guarded = scores[i][guard.key] if guard else bound
        first, second = (guarded, bound) if meeting else (bound, guarded)
        return first, second, float(table["threshold"][i])

    best = max(meeting or keeping, key=rank)
    return OperatingPoint(metric.class_name, float(table["threshold"][best]))



def trials_to_reach(score: float, trials: int, test_to_val: float, confidence: float, target: float) -> int:
    """The fewest validation trials at which `score`'s lower bound reaches `target` (score >= target)."""
    def meets(n: int) -> bool:
        return float(lower_bound(np.array(score), np.array(n), test_to_val, confidence)) >= target

    high = max(trials, 1)
    while not meets(high) and high < 10_000_000:
        high *= 2
    low = 0  # meets(0) is False: no trial, no evidence
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if meets(middle) else (middle, high)
    return high


def confidence_to_accept(score: float, trials: int, test_to_val: float, target: float, confidence: float) -> float:
    """The highest confidence (at most `confidence`, at least 0.5, where the bound is the score)
    at which `score` on `trials` validation trials already has its lower bound at `target`."""
    def meets(level: float) -> bool:
        return float(lower_bound(np.array(score), np.array(trials), test_to_val, level)) >= target

    low, high = 0.5, confidence
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if meets(middle) else (low, middle)
    return low


def closing_the_gap(score: float, trials: int, test_to_val: float, confidence: float, target: float,
                    class_name: str, metric: str, val_share: float) -> str:
    """What would most likely close a per-class target missed on test, from the validation score
    at the operating point and the bound it was chosen with: at that score, how many more
    validation trials (positives of the class for recall, answers of it for precision) would lift
    the bound to the target, or the `metric.confidence` at which today's trials already do. A
    validation score below the target is a model's shortfall, not a sample's: more data of the
    class to learn from, or a better model."""
    if score < target:
        return (f"validation {metric} at the operating point is {score:.4f}, itself below the target {target:g}: "
                f"a larger sample would not close that; more {class_name} examples to learn from, or a better model "
                "(a tournament, more fine-tuning), would")
    extra = max(trials_to_reach(score, trials, test_to_val, confidence, target) - trials, 0)
    level = confidence_to_accept(score, trials, test_to_val, target, confidence)
    trial = f"validation examples of {class_name}" if metric == "recall" else f"validation answers of {class_name}"
    in_all = (f" (about {extra / max(val_share, 1e-9):,.0f} more labelled {class_name} examples in all)"
              if metric == "recall" else "")
    return (f"at the same validation {metric} ({score:.4f} on {trials} {trial}), {extra:,} more{in_all} would lift "
            f"its lower bound to the target {target:g} at metric.confidence {confidence:g}; or metric.confidence "
            f"{level:.2f} would accept today's evidence (the test split then misses more often)")

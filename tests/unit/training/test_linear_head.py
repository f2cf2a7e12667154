"""The classic head: a logistic regression whose C is chosen on validation by the contract, written
into an nn.Linear that gives scikit-learn's own probabilities (binary and multi-class)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from tasks.config.spec import MetricSpec
from tasks.training.linear_head import C_GRID, as_linear, fit_linear_head
from tasks.training.metrics import Contract


def blobs(n: int, classes: int, seed: int, noise: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = np.random.default_rng(99).normal(size=(classes, 20))
    return centres[y] + noise * rng.normal(size=(n, 20)), y


@pytest.mark.parametrize("classes", [2, 4])
def test_the_linear_head_gives_scikit_learns_probabilities(classes):
    x, y = blobs(200, classes, seed=0)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    head = as_linear(model, classes)
    with torch.no_grad():
        ours = torch.softmax(head(torch.from_numpy(x).float()), dim=1).numpy()
    assert np.allclose(ours, model.predict_proba(x), atol=1e-4)


def test_a_class_absent_from_training_is_never_answered():
    x, y = blobs(120, 3, seed=1)
    model = LogisticRegression(max_iter=1000).fit(x, np.where(y == 2, 0, y))  # class 2 never seen
    with torch.no_grad():
        probabilities = torch.softmax(as_linear(model, 3)(torch.from_numpy(x).float()), dim=1).numpy()
    assert probabilities[:, 2].max() < 1e-6 and np.allclose(probabilities[:, :2], model.predict_proba(x), atol=1e-4)


def test_c_is_the_one_best_on_validation_by_the_declared_metric():
    """Each C refitted independently: the chosen one scores the highest macro F1 on validation
    (the earliest, most regularized among equals), and the head answers as that model does."""
    train_x, train_y = blobs(150, 3, seed=2, noise=3.0)
    val_x, val_y = blobs(150, 3, seed=3, noise=3.0)
    metric = MetricSpec(name="macro_f1", target=0.9)
    fit = fit_linear_head(train_x, train_y, val_x, val_y, ["a", "b", "c"], Contract(metric), seed=0)
    recomputed = {C: f1_score(val_y, LogisticRegression(C=C, max_iter=1000, random_state=0).fit(train_x, train_y)
                              .predict(val_x), average="macro") for C in C_GRID}
    best = max(recomputed.values())
    assert next(C for C in C_GRID if recomputed[C] == best) == fit.C
    assert fit.sweep == pytest.approx(recomputed) and fit.result.best_val_metric == pytest.approx(best)
    assert len(set(np.round(list(recomputed.values()), 6))) > 1  # the choice mattered
    with torch.no_grad():
        answers = fit.head(torch.from_numpy(val_x).float()).argmax(1).numpy()
    assert f1_score(val_y, answers, average="macro") == pytest.approx(best)


def test_the_same_fit_runs_once_and_any_change_of_its_inputs_runs_it_again(tmp_path, monkeypatch):
    """The anchor, a tournament's classic candidate and its baseline fit the same logistic
    regression: the second probe reads the first's head, C and sweep from the workdir (loaded with
    weights_only); other labels, another seed or class weights fit anew."""
    import pandas as pd

    import tasks.training.linear_head as linear_head
    from tasks.config.families import model_spec
    from tasks.models.backbones import load_backbone
    from tests.unit.models.test_classic_features import TRAIN

    labels = ["spam", "ham", "ham", "spam", "ham", "spam"]
    examples = {"train": pd.DataFrame({"input": TRAIN, "label": labels}, index=[f"t{i}" for i in range(6)]),
                "val": pd.DataFrame({"input": TRAIN[:4], "label": labels[:4]}, index=[f"v{i}" for i in range(4)])}
    contract = Contract(MetricSpec(name="accuracy", target=0.9))
    fits = []
    real = linear_head.fit_linear_head
    monkeypatch.setattr(linear_head, "fit_linear_head", lambda *a, **k: fits.append(1) or real(*a, **k))

    def probe(examples, seed=0, class_weights=False):
        backbone = load_backbone(model_spec({"family": "tfidf", "min_df": 1}))
        fit, _, _ = linear_head.probe_classic(backbone, examples, ["ham", "spam"], contract, tmp_path, seed,
                                              class_weights)
        return fit

    first, again = probe(examples), probe(examples)
    assert len(fits) == 1
    assert torch.equal(first.head.weight, again.head.weight) and torch.equal(first.head.bias, again.head.bias)
    assert (first.C, first.sweep, first.result.best.val_scores) == (again.C, again.sweep, again.result.best.val_scores)
    relabelled = {**examples, "val": examples["val"].assign(label=["ham", "ham", "ham", "ham"])}
    probe(relabelled)
    probe(examples, seed=1)
    probe(examples, class_weights=True)
    assert len(fits) == 4

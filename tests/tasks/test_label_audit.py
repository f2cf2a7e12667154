"""The label-error audit finds flipped labels in real data, from embeddings alone, without ever
seeing the test split."""

import numpy as np
import pandas as pd
import pytest

from tasks.label_audit import find_label_issues, out_of_fold_probabilities

INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "pin_blocked", "top_up_failed"]


def test_out_of_fold_probabilities_come_from_probes_that_never_saw_the_row():
    """A row whose label contradicts its (unique) features gets a low probability for that label:
    a probe that had seen it would have fit it."""
    rng = np.random.default_rng(0)
    features = np.repeat(np.eye(2), 50, axis=0) + rng.normal(0, 0.05, (100, 2))
    labels = np.repeat([0, 1], 50)
    labels[3] = 1  # features of class 0, label 1
    probabilities = out_of_fold_probabilities(features, labels, 2, seed=0)
    assert probabilities.shape == (100, 2) and np.allclose(probabilities.sum(axis=1), 1)
    assert probabilities[3, 1] < 0.2 and np.median(probabilities[labels == 1, 1]) > 0.8


@pytest.fixture(scope="module")
def banking_slice():
    """Five intents of banking77's training file, embedded once with MiniLM (32 tokens)."""
    import torch

    from tasks.backbones import load_backbone
    from tasks.data import load_examples
    from tasks.families import model_spec
    from tasks.features import embed_inputs
    from tasks.spec import data_spec
    from tests.conftest import shared_dataset

    table = load_examples(data_spec({"kind": "csv_text", "path": shared_dataset("banking77") / "train.csv",
                                     "select_classes": INTENTS})).table
    backbone = load_backbone(model_spec({"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 32}))
    with torch.inference_mode():
        features = embed_inputs(backbone, list(table["input"]), batch_size=64)
    return table, features


def test_flipped_labels_rise_to_the_top_of_the_suspects(banking_slice):
    """Flip 5% of the labels: at least 60% of the top-k suspects (k = the number flipped) are
    flipped ones (precision@k, printed for the closing note)."""
    table, features = banking_slice
    rng = np.random.default_rng(7)
    flipped = rng.choice(len(table), size=round(0.05 * len(table)), replace=False)
    noisy = table.copy()
    for row in flipped:
        others = [label for label in INTENTS if label != table.iloc[row]["label"]]
        noisy.iloc[row, noisy.columns.get_loc("label")] = others[rng.integers(len(others))]
    issues = find_label_issues(noisy, features, INTENTS, seed=0)
    k = len(flipped)
    suspects = set(issues.scores.sort_values(kind="stable").index[:k])
    precision = len(suspects & set(table.iloc[flipped]["example_id"])) / k
    print(f"precision@{k} of the label audit on {len(table)} banking77 texts with 5% flipped: {precision:.3f}")
    assert precision >= 0.6
    top = issues.top(k)
    assert set(top.columns) == {"example_id", "input", "given_label", "suggested_label", "score"}
    assert (top["given_label"] != top["suggested_label"]).mean() > 0.9 and top["score"].is_monotonic_increasing
    truth = dict(zip(table["example_id"], table["label"], strict=True))
    right = [truth[i] == s for i, s in zip(top["example_id"], top["suggested_label"], strict=True)
             if i in set(table.iloc[flipped]["example_id"])]
    assert np.mean(right) > 0.8  # for a flipped example, the suggestion is mostly its original label


def test_clean_labels_give_few_suspects(banking_slice):
    table, features = banking_slice
    issues = find_label_issues(table, features, INTENTS, seed=0)
    assert len(issues.table) <= 0.05 * len(table) and issues.audited == len(table)
    assert isinstance(issues.scores, pd.Series) and issues.scores.between(0, 1).all()

"""`train.head`: linear, mlp, or auto (both fitted on the cached embeddings, the better on
validation kept, a tie keeping linear); the chosen head travels in the checkpoint."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.config.spec import MetricSpec, TrainSpec
from tasks.training.metrics import Contract

ACCURACY = Contract(MetricSpec(name="accuracy", target=0.9))


def quadrants(n: int, seed: int, xor: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """2-d embeddings around the four corners; the label is the XOR of the signs (no line separates
    it) or the sign of x (a line does)."""
    rng = np.random.default_rng(seed)
    corners = rng.choice([-1.0, 1.0], size=(n, 2))
    points = corners + 0.2 * rng.normal(size=(n, 2))
    labels = (corners[:, 0] * corners[:, 1] > 0) if xor else corners[:, 0] > 0
    ids = [f"{seed}-{i}" for i in range(n)]
    return pd.DataFrame({"input": ids, "label": np.where(labels, "b", "a")}, index=ids), points.astype(np.float32)


@pytest.fixture
def probe_on(monkeypatch):
    """probe_head on given embeddings: the cache lookup returns them (the head fitting is real)."""
    import tasks.models.features as features
    from tasks.training.probe import probe_head

    def run(xor: bool, head: str):
        (train, train_x), (val, val_x) = quadrants(240, 0, xor), quadrants(120, 1, xor)
        rows = dict(zip([*train.index, *val.index], [*train_x, *val_x], strict=True))
        monkeypatch.setattr(features, "open_cache", lambda *args, **kwargs: None)
        monkeypatch.setattr(features, "cached_embeddings",
                            lambda cache, backbone, ids, *args: (np.stack([rows[i] for i in ids]), len(ids)))
        backbone = SimpleNamespace(LEARNS_FEATURES=False, dim=2, spec=SimpleNamespace(name="quadrants"))
        settings = TrainSpec(head=head, head_epochs=80, head_patience=80, head_learning_rate=0.03, mlp_hidden=16)
        return probe_head(backbone, {"train": train, "val": val}, ["a", "b"], settings, ACCURACY,
                          torch.device("cpu"), workdir=None)
    return run


def test_auto_keeps_the_mlp_where_no_line_separates_the_classes(probe_on):
    linear, auto = probe_on(xor=True, head="linear"), probe_on(xor=True, head="auto")
    assert linear.shape.kind == "linear" and linear.result.best_val_metric < 0.75
    assert auto.shape.kind == "mlp" and auto.result.best_val_metric > 0.95
    assert isinstance(auto.head, torch.nn.Sequential) and auto.head[0].out_features == 16
    assert "mlp" in auto.choice and f"{linear.result.best_val_metric:.4f}" in auto.choice


def test_auto_keeps_the_linear_head_on_a_tie(probe_on):
    auto = probe_on(xor=False, head="auto")
    assert auto.result.best_val_metric == 1.0 and auto.shape.kind == "linear"
    assert isinstance(auto.head, torch.nn.Linear)


def test_an_mlp_head_round_trips_a_checkpoint_and_an_older_one_is_linear(tmp_path):
    from tasks.config.families import model_spec
    from tasks.models.backbones import load_backbone
    from tasks.models.checkpoints import Checkpoint, restore_classifier_from, save_checkpoint
    from tasks.models.classifier import Classifier, HeadShape, new_head

    texts = ["card arrived", "card lost", "rate today", "exchange rate"]
    spec = model_spec({"family": "tfidf", "min_df": 1})
    backbone = load_backbone(spec)
    backbone.fit_to(texts)
    shape = HeadShape("mlp", 8, 0.3)
    classifier = Classifier(backbone, new_head(backbone.dim, 2, seed=1, shape=shape)).eval()
    path = save_checkpoint(tmp_path / "mlp.pt", Checkpoint(model=spec, classes=["a", "b"],
                                                           weights=classifier.state_dict(), stage="t",
                                                           head=shape.as_dict()))
    restored, checkpoint = restore_classifier_from(path)
    assert HeadShape.from_dict(checkpoint.head) == shape and restored.head[2].p == 0.3
    with torch.no_grad():
        assert torch.allclose(restored(backbone.preprocess(texts)), classifier(backbone.preprocess(texts)))
    linear = Classifier(backbone, new_head(backbone.dim, 2, seed=1))
    older = save_checkpoint(tmp_path / "old.pt", Checkpoint(model=spec, classes=["a", "b"],
                                                            weights=linear.state_dict(), stage="t"))
    assert isinstance(restore_classifier_from(older)[0].head, torch.nn.Linear)

"""The hybrid family: [classic features | frozen embeddings], each part scaled to unit length per
example, recomputed here from the two parts loaded on their own; and the config rules for its parts."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tasks.config.families import model_spec
from tasks.models.backbones import load_backbone
from tests.unit.models.test_classic_features import TRAIN

MINILM = {"family": "hf_text", "name": "all-MiniLM-L6-v2", "max_tokens": 16}
TFIDF = {"family": "tfidf", "min_df": 1}


def test_hybrid_features_are_tfidf_beside_the_standardized_embeddings_fitted_on_train():
    hybrid = load_backbone(model_spec({"family": "hybrid", "base": MINILM, "classic": TFIDF}))
    hybrid.fit_to(TRAIN[:4])
    texts = [*TRAIN, "an unseen question"]
    features = hybrid.preprocess(texts).numpy()

    tfidf = load_backbone(model_spec(TFIDF))
    tfidf.fit_to(TRAIN[:4])
    minilm = load_backbone(model_spec(MINILM))
    with torch.no_grad():
        train_embeddings = minilm.embed(minilm.preprocess(TRAIN[:4])).numpy()
        embeddings = minilm.embed(minilm.preprocess(texts)).numpy()
    spread = train_embeddings.std(0)
    standardized = (embeddings - train_embeddings.mean(0)) / np.where(spread > 0, spread, 1.0)
    expected = np.hstack([tfidf.preprocess(texts).numpy(), standardized / np.sqrt(standardized.shape[1])])
    assert hybrid.dim == tfidf.dim + 384 and features.shape == (len(texts), hybrid.dim)
    assert np.allclose(features, expected, atol=1e-4)
    squared_norms = np.linalg.norm(features[:4, tfidf.dim:], axis=1) ** 2
    assert squared_norms.mean() == pytest.approx(1.0, abs=0.01)  # unit length on average, as tf-idf rows


def test_a_hybrid_offers_no_layer_groups_and_keeps_its_base_frozen():
    hybrid = load_backbone(model_spec({"family": "hybrid", "base": MINILM}))
    assert hybrid.layer_groups() == [] and hybrid.spec.classic_options.family == "tfidf"
    assert not any(p.requires_grad for p in hybrid.module.parameters()) and hybrid.parameter_count > 1_000_000


@pytest.mark.parametrize("parts,message", [
    ({"base": TFIDF}, "base: tfidf is not a pretrained model"),
    ({"base": MINILM, "classic": {"family": "pixels"}}, "classic: pixels reads images but base hf_text reads texts"),
    ({"base": MINILM, "classic": MINILM}, "classic: hf_text is not a classic family"),
])
def test_a_hybrid_names_a_pretrained_base_and_a_classic_family_of_its_modality(parts, message):
    with pytest.raises(ValidationError, match=message):
        model_spec({"family": "hybrid", **parts})


def test_without_the_cache_every_read_embeds_for_real(monkeypatch):
    """Nothing is kept between a fit and a read unless read from the embedding cache: a throughput
    measured right after the fit (the tournament's) embeds its sample for real, with equal rows."""
    import tasks.models.features as features

    hybrid = load_backbone(model_spec({"family": "hybrid", "base": MINILM, "classic": TFIDF}))
    hybrid.fit_to(TRAIN)
    embedded: list[int] = []
    real = features.embed_inputs
    monkeypatch.setattr(features, "embed_inputs", lambda backbone, inputs, *a, **k: (
        embedded.append(len(inputs)), real(backbone, inputs, *a, **k))[1])
    first = hybrid.features(TRAIN)
    second = hybrid.features(TRAIN)
    assert embedded == [len(TRAIN), len(TRAIN)]
    assert np.allclose(first.toarray(), second.toarray(), atol=1e-5)


def test_a_hybrid_reads_its_base_models_embeddings_from_the_cache_step_3a_filled(tmp_path, monkeypatch):
    """The configured model's embeddings, cached by example id (as step 3a caches them), are what
    the hybrid of that model reads: it embeds nothing, and its features equal a fresh hybrid's."""
    import tasks.models.features as features

    ids = [f"example-{i}" for i in range(len(TRAIN))]
    minilm = load_backbone(model_spec(MINILM))
    features.cached_embeddings(features.open_cache(tmp_path, minilm), minilm, ids, TRAIN, batch_size=8)
    fresh = load_backbone(model_spec({"family": "hybrid", "base": MINILM, "classic": TFIDF}))
    fresh.fit_to(TRAIN)
    expected = fresh.features(TRAIN).toarray()

    embedded: list[int] = []
    real = features.embed_inputs
    monkeypatch.setattr(features, "embed_inputs", lambda backbone, inputs, *a, **k: (
        embedded.append(len(inputs)), real(backbone, inputs, *a, **k))[1])
    hybrid = load_backbone(model_spec({"family": "hybrid", "base": MINILM, "classic": TFIDF}))
    hybrid.reuse_embeddings(tmp_path, ids, TRAIN)
    hybrid.fit_to(TRAIN)
    assert np.allclose(hybrid.features(TRAIN).toarray(), expected, atol=1e-5)
    assert np.allclose(hybrid.features(TRAIN).toarray(), expected, atol=1e-5)  # a second read: still cached
    assert embedded == []

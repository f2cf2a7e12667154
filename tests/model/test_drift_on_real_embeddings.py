"""The drift test measured on real MiniLM embeddings of SMS texts: on exchangeable samples its false
alarms stay within the binomial bound at alpha, and another text domain and a strongly different
class mix are flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from tasks.config.families import model_spec
from tasks.monitoring.mmd import mmd_permutation_test
from tests.conftest import shared_dataset

ALPHA = 0.05
SEEDS = 60


@pytest.fixture(scope="module")
def sms_embeddings(request):
    """Real MiniLM embeddings of SMS texts from a train and a validation pool (the test part of a
    stratified split is set aside and never embedded), and of banking77 texts (another domain).
    Kept in pytest's cache folder through the project's embedding cache: later runs read them."""
    from sklearn.model_selection import train_test_split

    from tasks.core.hashing import sha256_text
    from tasks.models.backbones import load_backbone
    from tasks.models.features import cached_embeddings, open_cache

    sms = pd.read_csv(shared_dataset("sms_spam") / "sms_spam.csv").drop_duplicates("text")
    banking = pd.read_csv(shared_dataset("banking77") / "train.csv").sample(40, random_state=0)
    rest, _test = train_test_split(sms, test_size=0.15, stratify=sms["label"], random_state=0)
    train, val = train_test_split(rest, train_size=100, test_size=240, stratify=rest["label"], random_state=0)
    backbone = load_backbone(model_spec(dict(family="hf_text", name="all-MiniLM-L6-v2", max_tokens=32)))
    cache = open_cache(request.config.cache.mkdir("drift-embeddings"), backbone)

    def embed(frame: pd.DataFrame) -> np.ndarray:
        texts = list(frame["text"])
        return cached_embeddings(cache, backbone, [sha256_text(t) for t in texts], texts, 64)[0]

    return {"train": embed(train), "val": embed(val), "val_labels": val["label"].to_numpy(),
            "banking": embed(banking)}


def test_the_permutation_test_is_calibrated_on_exchangeable_real_embeddings(sms_embeddings):
    """What this proves: the MMD permutation test itself (kernel, bandwidth, p-value) is sound on
    real 384-d embeddings. Per seed, a reference of 100 and an incoming batch of 50 drawn disjointly
    from the validation pool, so both are exchangeable by construction: false alarms then follow
    Binomial(seeds, <= alpha), and more than its 99% quantile (or p-values far from uniform) means
    the test is wrong, e.g. a p-value without the +1 or a bandwidth fitted to one sample only.
    What it does not prove: the false-alarm rate of the configuration that runs (a fine-tuned
    champion's stored reference vs fresh inputs): benchmarks/drift_false_alarms.py measures that."""
    upper = binom.ppf(0.99, SEEDS, ALPHA)
    pool = sms_embeddings["val"]
    p_values = []
    for seed in range(SEEDS):
        order = np.random.default_rng(seed).permutation(len(pool))
        p_values.append(mmd_permutation_test(pool[order[:100]], pool[order[100:150]], 199, seed).p_value)
    false_alarms = sum(p < ALPHA for p in p_values)
    assert false_alarms <= upper, f"{false_alarms} false alarms in {SEEDS} (99% bound {upper:g})"
    assert 0.3 < float(np.median(p_values)) < 0.7  # roughly uniform, not merely conservative


def test_another_text_domain_is_flagged(sms_embeddings):
    reference = sms_embeddings["train"][:100]
    result = mmd_permutation_test(reference, sms_embeddings["banking"], 199, 0)
    assert result.p_value < ALPHA


def test_a_strongly_different_class_mix_is_flagged(sms_embeddings):
    """The training mix is ~13% spam; a batch that is 75% spam (same domain, same texts' kind)."""
    labels = sms_embeddings["val_labels"]
    spam, ham = np.flatnonzero(labels == "spam")[:30], np.flatnonzero(labels == "ham")[:10]
    assert len(spam) == 30
    incoming = sms_embeddings["val"][np.concatenate([spam, ham])]
    result = mmd_permutation_test(sms_embeddings["train"][:100], incoming, 199, 0)
    assert result.p_value < ALPHA

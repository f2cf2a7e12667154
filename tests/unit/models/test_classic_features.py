"""The classic families' features against independent recomputations: tf-idf against
scikit-learn's own TfidfVectorizer, pixels and MFCC standardization against numpy; each fitted on
the training inputs alone, so nothing of validation or test shapes them."""

import numpy as np
import pytest
import torch

from tasks.config.families import classic_model, model_spec
from tasks.models.backbones import load_backbone

TRAIN = ["Free prize! Call now to claim your prize", "see you at lunch", "lunch at noon? see you there",
         "WIN a free holiday, call now", "are you coming to lunch", "claim your free prize today"]


def tfidf(**options):
    return load_backbone(model_spec({"family": "tfidf", **options}))


def test_tfidf_words_only_equal_scikit_learns_tfidf_vectorizer_up_to_column_order():
    """Hashing instead of a vocabulary only permutes columns: the Gram matrix (every pair of rows'
    dot product) is the vectorizer's."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    backbone = tfidf(char_ngrams=None, min_df=1)
    backbone.fit_to(TRAIN)
    texts = [*TRAIN, "a prize for lunch", "nothing seen before"]
    ours = backbone.preprocess(texts).numpy().astype(np.float64)
    reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit(TRAIN)
    theirs = reference.transform(texts).toarray()
    assert backbone.dim == len(reference.vocabulary_)
    assert np.allclose(ours @ ours.T, theirs @ theirs.T, atol=1e-6)


def test_tfidf_keeps_the_columns_in_most_training_texts_and_ignores_words_only_validation_has():
    texts = ["apple banana cherry", "apple banana", "apple banana date", "apple cherry", "apple egg"]
    backbone = tfidf(char_ngrams=None, word_ngrams=(1, 1), min_df=2, max_features=2)
    backbone.fit_to(texts)  # in how many texts: apple 5, banana 3, cherry 2, date 1, egg 1
    kept = backbone.preprocess(["apple", "banana", "cherry", "date"]).numpy()
    assert backbone.dim == 2
    assert (kept[:2].sum(1) > 0).all() and kept[2:].sum() == 0  # cherry: not among the top 2; date: min_df
    assert backbone.preprocess(["zebra xylophone"]).abs().sum() == 0


def test_tfidf_char_ngrams_tell_spellings_apart_that_words_alone_miss():
    words = tfidf(char_ngrams=None, min_df=1)
    both = tfidf(min_df=1)
    for backbone in (words, both):
        backbone.fit_to(TRAIN)
    assert words.preprocess(["prizes"]).abs().sum() == 0  # an unseen word form
    assert both.preprocess(["prizes"]).abs().sum() > 0    # shares "priz", "rize", ... with "prize"


def test_a_feature_is_fitted_before_it_is_used():
    with pytest.raises(RuntimeError, match="fit_to"):
        tfidf().preprocess(TRAIN)


def test_pixels_are_resized_raw_values_standardized_by_the_training_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(5):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    backbone = load_backbone(model_spec({"family": "pixels", "image_size": 8}))
    backbone.fit_to(paths[:4])
    raw = np.stack([np.asarray(Image.open(p).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR),
                               dtype=np.float64).ravel() / 255 for p in paths])
    mean, std = raw[:4].mean(0), raw[:4].std(0)
    expected = (raw - mean) / np.where(std > 0, std, 1.0)
    assert backbone.dim == 8 * 8 * 3
    assert np.allclose(backbone.preprocess(paths).numpy(), expected, atol=1e-4)


def test_mfcc_features_tell_tones_apart_and_are_standardized_on_train(tmp_path):
    from tests.sounds import tone, write

    clips = [write(tmp_path / f"{hz}.wav", tone(hz)) for hz in (220, 330, 440, 1000, 2000)]
    backbone = load_backbone(classic_model("audio"))
    backbone.fit_to(clips[:4])
    features = backbone.preprocess(clips).numpy()
    assert backbone.dim == 4 * backbone.spec.n_mfcc
    assert np.allclose(features[:4].mean(0), 0, atol=1e-4)
    assert not np.allclose(features[0], features[3], atol=0.1)


def test_the_fitted_state_names_the_embedding_cache_key():
    """Features fitted on other training texts are other features: their cache entries never mix."""
    first, second = tfidf(min_df=1), tfidf(min_df=1)
    first.fit_to(TRAIN)
    second.fit_to(TRAIN[:3])
    assert first.preprocessing_id != second.preprocessing_id
    again = tfidf(min_df=1)
    again.fit_to(list(TRAIN))
    assert again.preprocessing_id == first.preprocessing_id
    assert torch.equal(again.preprocess(TRAIN), first.preprocess(TRAIN))

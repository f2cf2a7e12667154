"""The classic families behind the Backbone contract: features fitted on the training split.

A classic backbone has no pretrained weights and no layer groups. `fit_to(train inputs)` learns
its state (tf-idf: the kept hashed columns and their idf; pixels and MFCC: each feature's mean and
spread) into buffers of its module, so the state travels in the classifier's checkpoint like any
weights and `torch.load(weights_only=True)` reads it. `preprocess` turns raw inputs into the
fitted features, dense [n, dim], which the module passes through unchanged; `features` gives the
same rows sparse where that is cheaper (tf-idf), for the linear head's fit.

The transforms are scikit-learn's (HashingVectorizer, TfidfTransformer, StandardScaler) and the
spectrogram family's mel filterbank with scipy's DCT for the cepstrum.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.config.families import FamilyOptions
from tasks.core.errors import SpecError
from tasks.core.hashing import sha256_text
from tasks.models.backbones.base import Backbone, adapter
from tasks.models.backbones.weights import WeightsSource

HASHED_COLUMNS = 2 ** 20  # per analyzer: collisions among a few hundred thousand n-grams stay rare


class FittedState(nn.Module):
    """Named buffers holding what a classic family learned from the training split (empty until
    fitted); loading a state dict takes the stored shapes. The forward pass is the identity: the
    features are computed in `preprocess`."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        for name in names:
            self.register_buffer(name, torch.zeros(0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in list(self._buffers):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                self._buffers[name] = torch.empty_like(stored)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ClassicBackbone(Backbone):
    """Features fitted on train, then read by a linear head: the anchor every transferred model must beat."""

    LEARNS_FEATURES = True
    STATE: tuple[str, ...] = ()  # the buffers `fit_to` fills

    @classmethod
    def locate_weights(cls, spec: FamilyOptions) -> WeightsSource:
        return WeightsSource("fitted", "no pretrained weights: features fitted on the training split",
                             sha256_text(f"classic:{spec.family}"))

    @classmethod
    def build(cls, spec: FamilyOptions, weights: WeightsSource) -> tuple[nn.Module, dict[str, Any]]:
        return FittedState(cls.STATE), {}

    def state(self, name: str) -> torch.Tensor:
        """One buffer of the fitted state."""
        return self.module.get_buffer(name)

    @property
    def fitted(self) -> bool:
        return all(buffer.numel() for buffer in self.module.buffers())

    def fit_to(self, inputs: list[Any]) -> None:
        """Learn the features' state from the training inputs (the only data it may see)."""
        for name, value in self.fit_state(self.raw_features(inputs)).items():
            setattr(self.module, name, torch.as_tensor(np.ascontiguousarray(value)))

    def restore_fit(self, weights: dict[str, torch.Tensor]) -> None:
        """Take the fitted state from a classifier's state dict (keys `encoder.<buffer>`)."""
        self.module.load_state_dict({key.removeprefix("encoder."): value for key, value in weights.items()
                                     if key.startswith("encoder.")})

    @property
    def preprocessing_id(self) -> str:
        state = "|".join(hashlib.sha256(buffer.numpy().tobytes()).hexdigest() if buffer.numel() else "unfitted"
                         for buffer in self.module.buffers())
        return f"{self.spec.model_dump_json()}|{state}"

    def features(self, inputs: list[Any]) -> Any:
        """The fitted features as numpy rows (tf-idf: a sparse CSR matrix)."""
        if not self.fitted:
            raise RuntimeError(f"{self.spec.describe()}: fit_to(training inputs) comes before features")
        return self.fitted_features(inputs)

    def fitted_features(self, inputs: list[Any]) -> Any:
        """`features` once the fit is checked: the raw features through the fitted state."""
        return self.apply_state(self.raw_features(inputs))

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        rows = self.features(inputs)
        dense = rows.toarray() if hasattr(rows, "toarray") else rows
        return torch.from_numpy(np.asarray(dense, dtype=np.float32))

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch)

    def layer_groups(self) -> list[nn.Module]:
        return []  # nothing pretrained to unfreeze

    @abstractmethod
    def raw_features(self, inputs: list[Any]) -> Any:
        """Inputs -> unfitted features, one row each."""

    @abstractmethod
    def fit_state(self, raw: Any) -> dict[str, np.ndarray]:
        """The training rows' raw features -> the state (one array per name in STATE)."""

    @abstractmethod
    def apply_state(self, raw: Any) -> Any:
        """Raw features -> fitted features, with the state in the module's buffers."""


class StandardizedBackbone(ClassicBackbone):
    """Dense raw features, each standardized by its training mean and spread (StandardScaler's fit)."""

    STATE = ("mean", "scale")

    @property
    def dim(self) -> int:
        return int(self.state("mean").numel())

    def fit_state(self, raw: Any) -> dict[str, np.ndarray]:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(raw)
        return {"mean": scaler.mean_.astype(np.float32), "scale": scaler.scale_.astype(np.float32)}

    def apply_state(self, raw: Any) -> np.ndarray:
        return ((raw - self.state("mean").numpy()) / self.state("scale").numpy()).astype(np.float32)


@adapter("tfidf")
class TfidfBackbone(ClassicBackbone):
    STATE = ("columns", "idf")

    @property
    def dim(self) -> int:
        return int(self.state("columns").numel())

    def raw_features(self, inputs: list[Any]) -> Any:
        """Hashed word and character n-gram counts, [n, 2 x HASHED_COLUMNS] sparse."""
        import scipy.sparse
        from sklearn.feature_extraction.text import HashingVectorizer

        spec: Any = self.spec
        texts = [str(text) for text in inputs]
        common = {"n_features": HASHED_COLUMNS, "alternate_sign": False, "norm": None, "lowercase": spec.lowercase}
        counts = [HashingVectorizer(analyzer="word", ngram_range=spec.word_ngrams, **common).transform(texts)]
        if spec.char_ngrams is not None:
            counts.append(HashingVectorizer(analyzer="char_wb", ngram_range=spec.char_ngrams,
                                            **common).transform(texts))
        else:
            counts.append(scipy.sparse.csr_matrix((len(texts), HASHED_COLUMNS)))
        return scipy.sparse.hstack(counts, format="csr")

    def fit_state(self, raw: Any) -> dict[str, np.ndarray]:
        from sklearn.feature_extraction.text import TfidfTransformer

        spec: Any = self.spec
        document_frequency = np.asarray((raw > 0).sum(axis=0)).ravel()
        eligible = np.flatnonzero(document_frequency >= spec.min_df)
        if not len(eligible):
            raise SpecError(f"model {spec.describe()}: no n-gram occurs in min_df={spec.min_df} training texts. "
                            "Fix: lower min_df")
        # The most frequent columns; among equals the lower column index, so the choice is deterministic.
        order = np.lexsort((eligible, -document_frequency[eligible]))
        columns = np.sort(eligible[order[:spec.max_features]])
        idf = TfidfTransformer(sublinear_tf=True).fit(raw[:, columns]).idf_
        return {"columns": columns.astype(np.int64), "idf": idf.astype(np.float64)}

    def apply_state(self, raw: Any) -> Any:
        from sklearn.feature_extraction.text import TfidfTransformer

        transformer = TfidfTransformer(sublinear_tf=True)  # l2-normalized rows, as fitted
        transformer.idf_ = self.state("idf").numpy()
        return transformer.transform(raw[:, self.state("columns").numpy()]).astype(np.float32)


@adapter("pixels")
class PixelsBackbone(StandardizedBackbone):
    def raw_features(self, inputs: list[Any]) -> np.ndarray:
        from PIL import Image, ImageOps

        spec: Any = self.spec
        rows = []
        for source in inputs:
            with Image.open(source) as image:
                upright = ImageOps.exif_transpose(image).convert("L" if spec.grayscale else "RGB")
                small = upright.resize((spec.image_size, spec.image_size), Image.Resampling.BILINEAR)
                rows.append(np.asarray(small, dtype=np.float32).ravel() / 255.0)
        return np.stack(rows)


@adapter("mfcc")
class MfccBackbone(StandardizedBackbone):
    def raw_features(self, inputs: list[Any]) -> np.ndarray:
        """Per clip: the mean and standard deviation over frames of each cepstral coefficient and of its delta."""
        from scipy.fft import dct

        from tasks.core.audio import decode, fixed_length
        from tasks.models.backbones.spectrogram_models import mel_filterbank

        spec: Any = self.spec
        window, hop = round(spec.sample_rate * 0.025), round(spec.sample_rate * 0.010)
        n_fft = 1 << (window - 1).bit_length()
        filters = mel_filterbank(spec.sample_rate, n_fft, spec.n_mels)
        rows = []
        for source in inputs:
            samples = fixed_length(decode(source, spec.sample_rate), round(spec.max_seconds * spec.sample_rate))
            spectrum = torch.stft(torch.from_numpy(samples), n_fft, hop, window, torch.hann_window(window),
                                  center=True, return_complex=True)
            log_mel = torch.log((filters @ spectrum.abs().square()).clamp_min(1e-10)).numpy()
            cepstrum = dct(log_mel, type=2, axis=0, norm="ortho")[:spec.n_mfcc]  # [n_mfcc, frames]
            delta = np.gradient(cepstrum, axis=1)
            rows.append(np.concatenate([cepstrum.mean(1), cepstrum.std(1), delta.mean(1), delta.std(1)]))
        return np.stack(rows).astype(np.float32)

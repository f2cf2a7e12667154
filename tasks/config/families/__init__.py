"""The model families, found by module: adding `tasks/config/families/<family>.py` (options) and the
adapter module it names is all a new family takes. `ModelSpec` is the discriminated union of the
registered options classes on `family`; everything else (the schema, the modality check, the
served model's requirements, the model card) reads the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from tasks.config.families.base import FAMILIES, NO_WEIGHTS, FamilyOptions, model_family
from tasks.core.plugins import import_submodules

import_submodules(__name__, __path__)

if TYPE_CHECKING:  # every member is a FamilyOptions: that is all code outside a family relies on
    ModelSpec = FamilyOptions
else:
    ModelSpec = FAMILIES.union("family")
_MODEL_SPEC: TypeAdapter[FamilyOptions] = TypeAdapter(ModelSpec)


def model_spec(raw: dict[str, Any] | FamilyOptions, *, lenient: bool = False) -> FamilyOptions:
    """A family's options from a mapping. `lenient` (for configs saved with a model by an older
    transferflow, which wrote every family's fields) drops fields the family does not accept."""
    if isinstance(raw, FamilyOptions):
        return raw
    if lenient and raw.get("family") in FAMILIES:
        accepted = FAMILIES[raw["family"]].model_fields
        raw = {key: value for key, value in raw.items() if key in accepted}
    return _MODEL_SPEC.validate_python(raw)


def example_model(family: str, folder: Path) -> FamilyOptions:
    """The family's EXAMPLE model; its EXAMPLE_FILES (if any) written into `folder`, which `name` names."""
    options = FAMILIES[family]
    raw = dict(options.EXAMPLE)
    if options.EXAMPLE_FILES:
        target = folder / raw["name"]
        target.mkdir(parents=True, exist_ok=True)
        for file_name, content in options.EXAMPLE_FILES.items():
            (target / file_name).write_text(json.dumps(content))
        raw["name"] = str(target)
    return model_spec(raw)


def families_of(modality: str) -> list[str]:
    return [name for name, options in FAMILIES.items() if modality == options.MODALITY]


def classic_model(modality: str) -> FamilyOptions:
    """The modality's classic family with its default options: the anchor every run scores."""
    classic = [name for name in families_of(modality) if FAMILIES[name].CLASSIC]
    if not classic:
        raise ValueError(f"no classic family reads {modality}s: register one in tasks/config/families/classic.py")
    return model_spec({"family": classic[0]})


__all__ = ["FAMILIES", "NO_WEIGHTS", "FamilyOptions", "ModelSpec", "classic_model", "example_model", "families_of",
           "model_family",
           "model_spec"]

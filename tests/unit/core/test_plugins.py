"""The one plugin registry: families, data kinds and backbone adapters register through it, once."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from tasks.config.data_kinds import DATA_KINDS
from tasks.config.families import FAMILIES
from tasks.core.plugins import Registry
from tasks.models.backbones import ADAPTERS, adapter_for
from tasks.models.backbones.base import Backbone


class _Options(BaseModel):
    kind: Literal["toy"]


def test_an_options_class_registers_under_its_literal_and_a_second_one_is_refused():
    toys: Registry[type[BaseModel]] = Registry("toy kind")
    toys.by_literal("kind")(_Options)
    assert toys == {"toy": _Options}

    class Again(BaseModel):
        kind: Literal["toy"]

    with pytest.raises(ValueError, match=r"toy kind 'toy' is registered twice \(.*test_plugins, .*test_plugins\)"):
        toys.by_literal("kind")(Again)
    assert toys["toy"] is _Options


def test_the_projects_plugins_all_go_through_it():
    assert isinstance(FAMILIES, Registry) and isinstance(DATA_KINDS, Registry) and isinstance(ADAPTERS, Registry)
    assert {"torchvision", "timm", "hf_text", "hf_image"} <= set(FAMILIES)
    assert {"image_folder", "csv_text"} <= set(DATA_KINDS)
    for options in FAMILIES.values():  # each family's adapter module registers its Backbone on import
        model = options.model_validate(options.EXAMPLE)
        assert issubclass(adapter_for(model), Backbone)
    with pytest.raises(ValueError, match="backbone adapter 'torchvision' is registered twice"):
        ADAPTERS.add("torchvision", Backbone)

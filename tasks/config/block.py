"""The base of every block of a config: unknown fields are refused (a typo is an error, not a
silently ignored setting), a validated config cannot change, and a field's alias is accepted."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigBlock(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

"""The one registry helper behind every pluggable part: model families and data kinds (options
classes, named by their `Literal` discriminator field) and the backbone adapters (named by family).

A part registers once, when its module is imported; a second registration of a name is an error
naming both modules, so two plugins can never silently replace each other. A package of plugins
imports all its modules with `import_submodules`, so adding a module is all a new plugin takes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar, Union, get_args

T = TypeVar("T")


class Registry(dict[str, T]):
    """Plugins of one kind by name (a dict: look up, iterate, test membership)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, name: str, member: T) -> T:
        if name in self:
            raise ValueError(f"{self.kind} '{name}' is registered twice ({_origin(self[name])}, {_origin(member)})")
        self[name] = member
        return member

    def by_literal(self, field: str) -> Callable[[Any], Any]:
        """A class decorator registering an options class under the one value of its `Literal`
        field `field` (a pydantic model field, e.g. `family: Literal["timm"]`)."""
        def register(cls: Any) -> Any:
            (name,) = get_args(cls.model_fields[field].annotation)
            return self.add(name, cls)
        return register

    def union(self, field: str) -> Any:
        """Every registered options class as one pydantic discriminated union on `field`: the
        type of a config field that takes any of them (`data:` by kind, `model:` by family)."""
        from pydantic import Field

        return Annotated[Union[tuple(self.values())], Field(discriminator=field)]  # noqa: UP007


def import_submodules(package: str, path: Iterable[str], skip: tuple[str, ...] = ("base",)) -> None:
    """Import every module of `package` (its `__path__`), so each registers its plugins."""
    for module in pkgutil.iter_modules(path):
        if module.name not in skip:
            importlib.import_module(f"{package}.{module.name}")


def _origin(member: Any) -> str:
    return getattr(member, "__module__", type(member).__module__)

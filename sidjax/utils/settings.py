"""Settings dataclasses filled from a config section by field name, so no knob is copied by hand.

A library function takes a frozen dataclass of plain values; the stage that calls it builds
that dataclass from its config section with `settings_from`. Defaults and rules stay in the
config schema (`sidjax.configs`); here a missing key is an error, never a silent default.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def _plain(value: Any, hint: Any) -> Any:
    """`value` as the field's type wants it: hashable tuples for tuple fields, dicts for mapping fields."""
    origin = typing.get_origin(hint) or hint
    if hasattr(value, "to_dict"):  # an ml_collections ConfigDict, without importing it here
        value = value.to_dict()
    if origin is tuple:
        if isinstance(value, Mapping):
            return tuple(sorted(value.items()))
        return tuple(value)
    if origin in (dict, Mapping, typing.Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        return dict(value)
    return value


def settings_from(cls: type[T], section: Any, **extra: Any) -> T:
    """A `cls` whose fields are `extra`'s values or, for the rest, the section's keys of the same name.

    `section` is anything with `in` and `[]` by key (a ConfigDict, a dict). Lists become tuples
    and mappings sorted (key, value) tuples where the field is a tuple, so the result stays
    hashable for jit's static arguments.
    """
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    unknown = sorted(set(extra) - {f.name for f in fields})
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {unknown}")
    missing = sorted(f.name for f in fields if f.name not in extra and f.name not in section)
    if missing:
        raise KeyError(f"{cls.__name__} needs {missing}, which the section lacks (it has {sorted(section.keys())})")
    values = {f.name: extra[f.name] if f.name in extra else _plain(section[f.name], hints[f.name]) for f in fields}
    return cls(**values)

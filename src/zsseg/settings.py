"""Settings as dataclasses, to JSON and back: what every stage's configuration is built on.

A stage's settings are a frozen dataclass beside its code (`CropConfig`, `DenseConfig`, a
proposal generator's config, ...); `zsseg.config.SegmenterConfig` composes them. `to_json`
turns one into JSON values (tuples become lists), `from_json` rebuilds it and refuses, naming it
by its path ("region.crop.fill"), a key the dataclass does not have.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from .errors import SettingError


def to_json(settings: Any) -> Any:
    """JSON values of a settings dataclass (nested ones included), list, tuple or scalar."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        values = {field.name: to_json(getattr(settings, field.name)) for field in dataclasses.fields(settings)}
        name = getattr(type(settings), "name", None)
        return {"name": name, **values} if isinstance(name, str) and name else values
    if isinstance(settings, (list, tuple)):
        return [to_json(value) for value in settings]
    if isinstance(settings, dict):
        return {str(key): to_json(value) for key, value in settings.items()}
    return settings


def from_json(cls: type, data: Any, where: str):
    """An instance of the settings dataclass `cls` from `data` (what `to_json` wrote); `where`
    names it in errors. Missing keys take the defaults; an unknown key is an error."""
    if not isinstance(data, dict):
        raise SettingError(where, f"{{setting}} must be an object of settings, got {type(data).__name__}")
    known = {field.name: field for field in dataclasses.fields(cls)}
    values = {}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key == "name" and getattr(cls, "name", None) == value:
            continue
        if key not in known:
            raise SettingError(f"{where}.{key}" if where else key, f"{{setting}} is not a setting of {cls.__name__}")
        values[key] = _typed(hints.get(key), value)
    return cls(**values)


def _typed(hint: Any, value: Any) -> Any:
    """JSON lists back to the tuples a dataclass field declares."""
    origin = typing.get_origin(hint)
    if isinstance(value, list) and (origin is tuple or tuple in typing.get_args(hint) or
                                    any(typing.get_origin(arg) is tuple for arg in typing.get_args(hint))):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


__all__ = ["from_json", "to_json"]

"""Frozen dataclasses to and from JSON, validated on the way in, and their JSON Schema: one walker over the type
hints, so that the reader, the writer and the published schema cannot disagree."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Union

_NONE = type(None)


class Malformed(ValueError):
    """A document does not fit its type: the message is a phrase naming the field ("it lacks 'io.input.name'")."""


def from_json(cls: type, doc: Any, where: str = "") -> Any:
    """``doc`` (parsed JSON) as ``cls``: every field checked against its type hint; unknown keys are ignored (a
    newer writer's additions), a missing field without a default is an error naming it."""
    return _read(cls, doc, where)


def to_json(value: Any) -> Any:
    """``value`` as plain JSON (dicts, lists, numbers, strings); a dataclass's ``derived()`` keys are added."""
    if dataclasses.is_dataclass(value):
        doc = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        extra = getattr(value, "derived", None)
        return {**doc, **(to_json(extra()) if extra else {})}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def schema(cls: type, *, title: str | None = None) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``cls`` as ``to_json`` writes it and ``from_json`` reads it."""
    defs: dict[str, Any] = {}
    root = _schema(cls, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title or cls.__name__,
            **defs.pop(cls.__name__), "$defs": dict(sorted(defs.items()))} if root else {}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _options(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return typing.get_args(hint)
    return None


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
          list: "a list"}


def _describe(hint: Any) -> str:
    options = _options(hint)
    if options:
        return " or ".join("null" if o is _NONE else _describe(o) for o in options)
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "an object"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    return _NAMES.get(hint, str(hint))


def _read(hint: Any, value: Any, where: str) -> Any:
    options = _options(hint)
    if options:
        if value is None and _NONE in options:
            return None
        real = [o for o in options if o is not _NONE]
        if len(real) == 1:  # Optional[X]: X's own message, which names the field inside it
            return _read(real[0], value, where)
        for option in (o for o in options if o is not _NONE):
            try:
                return _read(option, value, where)
            except Malformed:
                continue
        raise Malformed(f"'{where}' is {_kind(value)}, not {_describe(hint)}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise Malformed(f"'{where}' is {_kind(value)}, not an object")
        hints, kwargs = _hints(hint), {}
        for f in dataclasses.fields(hint):
            here = f"{where}.{f.name}" if where else f.name
            if f.name in value:
                kwargs[f.name] = _read(hints[f.name], value[f.name], here)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise Malformed(f"it lacks '{here}'")
        return hint(**kwargs)
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise Malformed(f"'{where}' is {_kind(value)}, not a list")
        (item, *_rest) = typing.get_args(hint)
        return tuple(_read(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise Malformed(f"'{where}' is {_kind(value)}, not an object")
        args = typing.get_args(hint)
        return {k: _read(args[1], v, f"{where}.{k}") for k, v in value.items()} if args and args[1] is not Any \
            else dict(value)
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise Malformed(f"'{where}' is {value!r}, not {_describe(hint)}") from None
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise Malformed(f"'{where}' is {_kind(value)}, not {_describe(hint)}")


def _kind(value: Any) -> str:
    return "missing" if value is None else type(value).__name__


def _schema(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    options = _options(hint)
    if options:
        return {"anyOf": [{"type": "null"} if o is _NONE else _schema(o, defs) for o in options]}
    if dataclasses.is_dataclass(hint):
        if hint.__name__ not in defs:
            defs[hint.__name__] = {}  # recursion guard
            hints = _hints(hint)
            props = {f.name: _schema(hints[f.name], defs) for f in dataclasses.fields(hint)}
            required = [f.name for f in dataclasses.fields(hint)
                        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
            doc = (hint.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            defs[hint.__name__] = {"type": "object", "description": doc, "properties": props, "required": required}
        return {"$ref": f"#/$defs/{hint.__name__}"}
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        return {"type": "array", "items": _schema(typing.get_args(hint)[0], defs)}
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return {"type": "object", **({"additionalProperties": _schema(args[1], defs)}
                                     if args and args[1] is not Any else {})}
    if hint is Any:
        return {}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [m.value for m in hint]}
    return {"type": {int: "integer", float: "number", str: "string", bool: "boolean"}[hint]}

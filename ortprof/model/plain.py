"""Dataclasses <-> plain JSON data, from their field types.

One pair of functions serves every typed document (report.json, run.json): a
document is written with `to_plain` and read back with `from_plain`, which
rebuilds nested dataclasses, lists and dicts of them from the type hints.
"""
import typing
from dataclasses import fields, is_dataclass
from typing import Any


def to_plain(value: Any) -> Any:
    """JSON-ready data of `value`: dataclasses become dicts (field order kept), recursively."""
    if is_dataclass(value) and not isinstance(value, type):
        return {item.name: to_plain(getattr(value, item.name)) for item in fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    return value


def from_plain(tp: Any, value: Any) -> Any:
    """`value` (JSON data) as type `tp`. Keys a dataclass does not declare are ignored;
    a value of the wrong shape is a TypeError naming the class."""
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [arg for arg in args if arg is not type(None)]
        return from_plain(inner[0], value) if len(inner) == 1 else value
    if isinstance(tp, type) and is_dataclass(tp):   # a dataclass (tp is a type, never an instance)
        if not isinstance(value, dict):
            raise TypeError(f"{tp.__name__} must be an object, not {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        return tp(**{item.name: from_plain(hints[item.name], value[item.name])
                     for item in fields(tp) if item.name in value})
    if origin in (list, typing.List) and args:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, not {type(value).__name__}")
        return [from_plain(args[0], item) for item in value]
    if origin in (dict, typing.Dict) and len(args) == 2 and is_dataclass(args[1]):
        return {key: from_plain(args[1], item) for key, item in value.items()}
    return value

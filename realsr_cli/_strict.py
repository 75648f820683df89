"""The one strict loader from plain data to a frozen dataclass, for run configs, model specs and architectures.
No torch here."""

from __future__ import annotations

import functools
import types
from dataclasses import fields, is_dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from realsr_cli.errors import ConfigError, RealSRError

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: Any, where: str, error: type[RealSRError] = ConfigError) -> T:
    """Instantiate dataclass `cls` from plain data (TOML, JSON, a checkpoint), strictly: unknown keys and values of
    the wrong type raise `error` naming `where` and the key; nested dataclasses recurse; lists become tuples where
    the field is a tuple; a `Literal` field takes only its listed values. Errors that `cls` itself raises (its
    __post_init__ checks) pass through."""
    if not isinstance(data, dict):
        raise error(f"{where}: expected a table of keys, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid keys: {', '.join(known)}"
        )
    hints = _field_types(cls)
    values = {key: _check_type(hints[key], value, f"{where}: {key}", error) for key, value in data.items()}
    return cls(**values)


def check_choices(obj: Any, error: type[RealSRError] = ConfigError) -> None:
    """Raise `error` naming the field when a field of dataclass instance `obj` typed with a `Literal` (alone,
    optional or as a tuple's items) holds a value the Literal does not list. For objects built directly rather than
    by `dataclass_from_dict`: their __post_init__ calls this, so the Literal is the one list of valid values."""
    for name, tp in _field_types(type(obj)).items():
        if _mentions_literal(tp):
            _check_type(tp, getattr(obj, name), name, error)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type of dataclass `cls`; cached, as __post_init__ checks run at every construction."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _mentions_literal(tp: Any) -> bool:
    return get_origin(tp) is Literal or any(_mentions_literal(arg) for arg in get_args(tp))


def _check_type(tp: Any, value: Any, where: str, error: type[RealSRError]) -> Any:
    if tp is Any:
        return value
    if is_dataclass(tp):
        return dataclass_from_dict(tp, value, where, error)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        # compared with their types: 1 == True, but a Literal[1] field must not take true
        if not any(type(value) is type(a) and value == a for a in args):
            raise error(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(arg, value, where, error)
            except error as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise error(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(args[0], v, f"{where}[{i}]", error) for i, v in enumerate(value))
        if len(value) != len(args):
            raise error(f"{where} must be a list of {len(args)} values, got {value!r}")
        pairs = enumerate(zip(args, value, strict=True))  # lengths checked above
        return tuple(_check_type(a, v, f"{where}[{i}]", error) for i, (a, v) in pairs)
    if origin is dict:
        if not isinstance(value, dict):
            raise error(f"{where} must be a table, got {value!r}")
        return dict(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }
    if tp not in ok:
        raise TypeError(f"unsupported config type {tp!r}")  # internal: a field type this checker does not know
    if not ok[tp]:
        wanted = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]
        raise error(f"{where} must be {wanted}, got {value!r}")
    return float(value) if tp is float else value

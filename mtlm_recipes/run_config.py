"""One loader for the trainers' YAML run configs: the YAML becomes a tree of dataclasses, checked key by key.

A run config is a dataclass whose fields are scalars, lists, dicts, nested dataclasses (the sections) or
value types with a `from_dict` classmethod (`growth_ops.GrowthSpec`). Every key at every level must name a
field: a misspelt key (`trainng:`) would otherwise leave its section at the defaults without a word, so it
is refused with its section and the nearest valid key. Values are checked against the field's type
(`Literal` choices included) the same way.
"""

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from .errors import ConfigError, InputFileError, user_input

Schema = TypeVar("Schema")


def load_run_config(path: str | Path, schema: type[Schema]) -> Schema:
    """Read a YAML run config into the dataclass tree `schema`.

    Args:
        path (`str` or `Path`): The YAML file.
        schema (`type`): The run config's top-level dataclass; every field needs a default.

    Returns:
        An instance of `schema`, with the defaults wherever the YAML is silent.

    Raises:
        InputFileError: If `path` is not a file.
        ConfigError: If the YAML does not parse, or a key or value does not fit `schema` (the message names
            the key, its section and the nearest valid key or value).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(
            f"no config file {path}: give the path of a YAML run config, e.g. examples/m1/smoke.yaml."
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None) or error
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}.") from error
    try:
        return parse_section(schema, {} if raw is None else raw, "")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def parse_section(schema: type[Schema], data: Any, section: str) -> Schema:
    """Build the dataclass `schema` from the mapping `data`, found at `section` (dotted; "" for the top level)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{section or 'the config'} must be a mapping of keys to values, got {data!r}.")
    fields = {field.name: field for field in dataclasses.fields(schema) if field.init}
    for key in data:
        if key not in fields:
            valid = ", ".join(fields)
            place = f"in {section}" if section else "at the top level"
            raise ConfigError(f"unknown key {key!r} {place}{_did_you_mean(str(key), fields)} (valid keys: {valid})")
    for name, field in fields.items():
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if required and name not in data:
            raise ConfigError(f"{section or 'the config'} needs the key {name!r}.")
    hints = typing.get_type_hints(schema)
    values = {key: _convert(hints[key], value, _join(section, key)) for key, value in data.items()}
    with user_input(section or "the config"):
        return schema(**values)


def _convert(kind: Any, value: Any, where: str) -> Any:
    """`value` checked against the type annotation `kind` (and built, for sections and value types)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [arg for arg in args if arg is not type(None)]  # our configs use `X | None` only
        return _convert(kind, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}{_did_you_mean(str(value), args)}")
        return value
    if dataclasses.is_dataclass(kind) and not hasattr(kind, "from_dict"):
        return parse_section(kind, value, where)
    if hasattr(kind, "from_dict"):
        _expect(isinstance(value, dict), where, "a mapping", value)
        with user_input(where):
            return kind.from_dict(value)
    if origin is list:
        _expect(isinstance(value, list), where, "a list", value)
        return [_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        _expect(isinstance(value, (list, tuple)) and len(value) == len(args), where, f"a list of {len(args)}", value)
        return tuple(
            _convert(arg, item, f"{where}[{i}]") for i, (arg, item) in enumerate(zip(args, value, strict=True))
        )
    if kind is dict or origin is dict:
        _expect(isinstance(value, dict), where, "a mapping", value)
        return value
    if kind is bool:
        _expect(isinstance(value, bool), where, "true or false", value)
    elif kind is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), where, "a whole number", value)
    elif kind is float:
        return _to_float(value, where)
    elif kind is str:
        _expect(isinstance(value, str), where, "a string", value)
    return value


def _to_float(value: Any, where: str) -> float:
    # PyYAML reads YAML 1.1, where `7e-4` (no dot) is a string, not a number; accept what float() reads.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    _expect(isinstance(value, (int, float)) and not isinstance(value, bool), where, "a number", value)
    return float(value)


def _expect(holds: bool, where: str, what: str, value: Any) -> None:
    if not holds:
        raise ConfigError(f"{where} must be {what}, got {value!r}.")


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, [str(choice) for choice in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _join(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key

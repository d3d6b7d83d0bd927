"""The config system of every stage and curation step: TOML files read into dataclasses, with `--key=value`
overrides from the command line.

    cfg = load_sections(DPORunConfig, "configs/dpo_tiny_demo.toml", ["--dpo.steps=10", "--beta=0.5"])
    cfg.dpo.steps, cfg.dpo.beta                  # 10, 0.5

A stage's config is a dataclass whose fields are [section] dataclasses (and arrays of tables such as
`[[stages]]`), each field typed and defaulted, so a file only names what it changes: training's is
`seedcoder.train_config.TrainConfig`, DPO's and GRPO's live with them (`seedcoder.posttrain`), each curation step
declares its options (`option(default, help)`) in its module. A section's `__post_init__` checks its values
(raising ValueError("key: problem")); `build_section` turns that into a ConfigError naming the section.

Overrides: `--section.key=value`, or `--key=value` when `key` names a field of exactly one section. The value
is read as a TOML value (`--train.steps=100`, `--optimizer.betas=[0.9,0.95]`, `--logging.tensorboard=false`);
for a string field the raw text is taken (`--data.path=runs/demo/data`). An unknown key, a value of the wrong
type or out of range raises `ConfigError` naming the key (and, for a typo, the nearest known key).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import keyword
import math
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any

from seedcoder.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(UserError, ValueError):
    """A bad config: unknown key, wrong type or bad value. The message names the key (and the file)."""


# ------------------------------------------------------------------------------------------ fields
def option(default: Any, help: str) -> Any:
    """A config field with a help text (`fields(...)[i].metadata["help"]`), for the command lines built from a
    section (curation steps); a list or dict default is copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


# ------------------------------------------------------------------------------------------ TOML output
def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


# ------------------------------------------------------------------------------------------ type checks
def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    if annotation is Any:
        return "any value"
    if origin in (typing.Union, types.UnionType):
        options = [_describe(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = type(None) in typing.get_args(annotation)
        return " or ".join(options) + (" (or leave the key out)" if optional else "")
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"a list of {_describe(item).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict or dataclasses.is_dataclass(annotation):
        return "a table"
    return str(annotation)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` checked against `annotation` (ints accepted for floats); raises ConfigError naming `key`."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):  # a section, or one table of an array of tables
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return build_section(annotation, value, f"{key}.", "")
    elif origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key!r}: expected {_describe(annotation)}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(annotation)
            return [_coerce(element, item, f"{key}[{index}]") for index, element in enumerate(value)]
    elif origin is dict:
        if isinstance(value, Mapping):
            _, item = typing.get_args(annotation)
            return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(f"config key {key!r}: expected {_describe(annotation)}, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(key: str, known: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return ConfigError(f"{where}unknown config key {key!r}{hint}")


def field_name(key: str) -> str:
    """The dataclass field a config key sets: the key, or for a Python keyword (`in`) the key + "_" (`in_`)."""
    return f"{key}_" if keyword.iskeyword(key) else key


def build_section(cls: type, table: Mapping[str, Any], prefix: str = "", where: str = "") -> Any:
    """`cls(**table)` with every key known and typed: unknown keys (with the nearest known one), wrong types, missing
    required fields and the dataclass's own value checks raise ConfigError naming `prefix + key` (and `where`)."""
    hints = _hints(cls)
    values = {}
    for key, value in table.items():
        name = field_name(key)
        if name not in hints:
            keys = [known[:-1] if keyword.iskeyword(known[:-1]) else known for known in hints]
            raise _unknown_key(f"{prefix}{key}", [f"{prefix}{known}" for known in keys], where)
        try:
            values[name] = _coerce(value, hints[name], f"{prefix}{key}")
        except ConfigError as error:
            raise ConfigError(f"{where}{error}") from None
    for f in dataclasses.fields(cls):
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}config key {prefix + f.name!r} is missing: expected {_describe(hints[f.name])}")
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None
    except ValueError as error:  # a section's own value checks (__post_init__) name the field
        section, message = prefix.rstrip("."), str(error).removeprefix(f"{cls.__name__}.")
        raise ConfigError(f"{where}config section [{section}]: {message}" if section else f"{where}{message}") from None


def parse_stages(value: Any, cls: type, *, key: str = "stages", where: str = "") -> list:
    """An array of tables ([[stages]]) -> a list of `cls` dataclasses: unknown keys, wrong types and missing
    required fields raise ConfigError naming `key[index].field`. Training uses StageSection; other stages pass
    their own stage dataclass (e.g. GRPO's progressive length)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(stage, Mapping) for stage in value):
        raise ConfigError(f"{where}config key {key!r}: expected an array of tables ([[{key}]])")
    return [build_section(cls, stage, f"{key}[{index}].", where) for index, stage in enumerate(value)]


# ------------------------------------------------------------------------------------------ loading
def sections_of(root: type) -> dict[str, type]:
    """The [section] tables of a config dataclass: {name: section dataclass} (arrays of tables are not sections)."""
    return {name: hint for name, hint in typing.get_type_hints(root).items() if dataclasses.is_dataclass(hint)}


def config_from_dict(raw: Mapping[str, Any], root: type, *, where: str = ""):
    """A `root` config from a parsed TOML document: unknown sections / keys and wrong types raise ConfigError naming
    them, as do a section's own value checks."""
    for name, value in raw.items():
        if name in sections_of(root) and not isinstance(value, Mapping):
            raise ConfigError(f"{where}config key {name!r}: expected a table [{name}], got {value!r}")
    return build_section(root, raw, "", where)


def parse_value(text: str, annotation: Any) -> Any:
    """A command-line value: the raw text for string fields, else a TOML value (falling back to the raw text)."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    try:
        parsed = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        parsed = text
    containers = {typing.get_origin(option) or option for option in options} & {list, dict}
    if str in options and not isinstance(parsed, str) and not isinstance(parsed, tuple(containers)):
        return text  # e.g. --run.name=2024 stays the string "2024"; a list for a `str | list[str]` key stays a list
    return parsed


def split_overrides(argv: Sequence[str]) -> list[tuple[str, str]]:
    """["--train.steps=10", "--lr", "1e-4"] -> [("train.steps", "10"), ("lr", "1e-4")]; anything else is an error."""
    pairs, index = [], 0
    argv = list(argv)
    while index < len(argv):
        arg = argv[index]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"expected --key=value, got {arg!r}")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            key, value = body, argv[index + 1]
            index += 1
        else:
            raise ConfigError(f"config override {arg!r} has no value (write --{body}=VALUE)")
        pairs.append((key.replace("-", "_"), value))
        index += 1
    return pairs


def _resolve_key(key: str, root: type) -> tuple[str, str]:
    """"train.steps" -> ("train", "steps"); "steps" -> ("train", "steps") when exactly one section has it; a
    top-level key that is not a section (an array of tables) -> ("", key)."""
    sections = sections_of(root)
    top = _hints(root)
    if "." in key:
        section, name = key.split(".", 1)
        if section not in sections:
            close = difflib.get_close_matches(section, list(sections), n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"sections: {', '.join(sections)}"
            raise ConfigError(f"unknown config key {key!r}: no section [{section}] ({hint})")
        hints = _hints(sections[section])
        base = name.split(".", 1)[0]
        if base not in hints or ("." in name and typing.get_origin(hints[base]) is not dict):
            raise _unknown_key(key, [f"{section}.{n}" for n in hints], "")
        return section, name
    if key in top and key not in sections:
        return "", key
    owners = [section for section in sections if key in _hints(sections[section])]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"config key {key!r} is ambiguous: write one of {', '.join(f'{s}.{key}' for s in owners)}")
    raise _unknown_key(key, [n for s in sections for n in _hints(sections[s])], "")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[tuple[str, str]], root: type) -> dict[str, Any]:
    """Set each (key, text) of `overrides` in the parsed TOML document `raw` (in place; also returned)."""
    for key, text in overrides:
        section, name = _resolve_key(key, root)
        if not section:  # an array of tables: --stages=[{steps=10}]
            raw[name] = parse_value(text, _hints(root)[name])
            continue
        hints = _hints(sections_of(root)[section])
        table = raw.setdefault(section, {})
        if "." in name:  # a key inside a table field: --model.overrides.n_layers=4, --data.mixture.python=0.5
            base, inner = name.split(".", 1)
            value_type = typing.get_args(hints[base])[1]
            table.setdefault(base, {})[inner] = parse_value(text, value_type)
        else:
            table[name] = parse_value(text, hints[name])
    return raw


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a ConfigError naming it."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {os.fspath(path)} is a directory") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{os.fspath(path)}: not valid TOML: {error}") from None


def load_sections(root: type, path: str | os.PathLike | None = None, overrides: Sequence[str] = ()):
    """Any stage's config: a dataclass of [section] dataclasses (and arrays of tables), read from a TOML file
    (None: all defaults), then `--section.key=value` overrides. Raises ConfigError naming the key (and the file)."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_toml(path)
        config_from_dict(raw, root, where=f"{os.fspath(path)}: ")  # the file alone: errors name the file
    apply_overrides(raw, split_overrides(overrides), root)
    return config_from_dict(raw, root)


def to_toml(config: Any) -> str:
    """A config dataclass of [section] dataclasses (and arrays of tables, at the top or inside a section) as TOML
    that `load_sections` reads back to an equal config (None values are left out)."""
    lines: list[str] = []

    def table(name: str, values: Any, array: bool = False) -> None:
        lines.append(f"[[{name}]]" if array else f"[{name}]")
        later = []
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if value is None:
                continue
            if isinstance(value, dict) or (isinstance(value, list) and value and dataclasses.is_dataclass(value[0])):
                later.append((f.name, value))  # after this table's own keys: a TOML sub-table ends them
            else:
                lines.append(f"{_toml_key(f.name)} = {_toml_value(value)}")
        lines.append("")
        for key, value in later:
            if isinstance(value, dict):
                lines.append(f"[{name}.{key}]")
                lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
                lines.append("")
            else:
                for item in value:
                    table(f"{name}.{key}", item, array=True)

    arrays = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, list):
            arrays.append((f.name, value))
        else:
            table(f.name, value)
    for name, items in arrays:
        for item in items:
            table(name, item, array=True)
    return "\n".join(lines)


__all__ = [
    "ConfigError",
    "apply_overrides",
    "build_section",
    "config_from_dict",
    "field_name",
    "load_sections",
    "option",
    "parse_stages",
    "parse_value",
    "read_toml",
    "sections_of",
    "split_overrides",
    "to_toml",
]

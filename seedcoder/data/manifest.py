"""A dataset is a directory of shards plus `manifest.json`: `build_manifest` describes the shards (counts, tokenizer,
score histograms per source and language), `write_manifest` writes it, `load_manifest` reads it back and checks it
against the shards (docs/shard_format.md, "Manifest")."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from seedcoder.data.shard_reader import ShardReader, read_header
from seedcoder.data.shards import FORMAT_VERSION, SHARD_SUFFIX, DocFlag, Language, ShardError, Source, file_sha256
from seedcoder.fileio import atomic_write_text

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "seedcoder-shards-manifest"
MANIFEST_VERSION = 1
SCORE_HISTOGRAM_BINS = 20
SCORE_HISTOGRAM_RANGE = (0.0, 10.0)  # the Seed-Coder quality score scale


class ManifestError(ShardError):
    """A manifest is malformed or disagrees with the shards it lists."""


def score_histogram(scores: np.ndarray) -> dict[str, Any]:
    """Counts over SCORE_HISTOGRAM_BINS equal bins of SCORE_HISTOGRAM_RANGE (last bin closed), plus below/above."""
    low, high = SCORE_HISTOGRAM_RANGE
    scores = np.asarray(scores, dtype=np.float64)
    inside = (scores >= low) & (scores <= high)
    counts, _ = np.histogram(scores[inside], bins=SCORE_HISTOGRAM_BINS, range=SCORE_HISTOGRAM_RANGE)
    return {"counts": counts.tolist(), "below": int((scores < low).sum()), "above": int((scores > high).sum())}


def _merge_histograms(into: dict[str, Any], other: dict[str, Any]) -> None:
    into["counts"] = [a + b for a, b in zip(into["counts"], other["counts"])]
    into["below"] += other["below"]
    into["above"] += other["above"]


def _empty_histogram() -> dict[str, Any]:
    return {"counts": [0] * SCORE_HISTOGRAM_BINS, "below": 0, "above": 0}


def groups_by_source_and_language(reader: ShardReader) -> tuple[dict[str, Any], dict[str, Any]]:
    """Documents, tokens and score histogram per source and per language of one shard, keyed by lower-case name."""
    lengths = reader.document_lengths
    scores = np.asarray(reader.scores)
    result = []
    for column, names in ((np.asarray(reader.sources), Source), (np.asarray(reader.languages), Language)):
        groups = {}
        for value in np.unique(column):
            selected = column == value
            groups[names(int(value)).name.lower()] = {
                "documents": int(selected.sum()),
                "tokens": int(lengths[selected].sum()),
                "score_histogram": score_histogram(scores[selected]),
            }
        result.append(groups)
    return result[0], result[1]


def tokenizer_special_tokens(tokenizer_path: str | os.PathLike) -> dict[str, int]:
    """Special tokens of a Hugging Face tokenizer.json (`added_tokens` marked special): {content: id}."""
    try:
        with open(tokenizer_path, encoding="utf-8") as file:
            added = json.load(file).get("added_tokens", [])
        return {entry["content"]: int(entry["id"]) for entry in added if entry.get("special")}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def _relative_inside(path: str, directory: str, what: str) -> str:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(directory))
    if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        raise ValueError(f"{what} {path} is not inside the dataset directory {directory}")
    return relative.replace(os.sep, "/")


def build_manifest(
    dataset_dir: str | os.PathLike,
    shard_paths: Iterable[str | os.PathLike] | None = None,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    tokenizer_name: str | None = None,
    special_tokens: Mapping[str, int] | None = None,
    verify_checksums: bool = True,
) -> dict[str, Any]:
    """Describe a dataset: every shard (opened and validated), totals, tokenizer, sources, score histograms.

    `shard_paths` default to every `*.scs` under `dataset_dir` (sorted); they must lie inside it (the manifest
    stores relative paths). All shards must share one tokenizer and vocab size; a given `tokenizer_path` must
    hash to the shards' tokenizer SHA-256.
    """
    dataset_dir = os.fspath(dataset_dir)
    if shard_paths is None:
        shard_paths = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(dataset_dir)
            for name in names
            if name.endswith(SHARD_SUFFIX)
        )
    shard_paths = [os.fspath(path) for path in shard_paths]
    if not shard_paths:
        raise ValueError(f"no shards to describe in {dataset_dir}")

    shards = []
    tokenizer_sha256 = vocab_size = None
    by_source: dict[str, dict[str, Any]] = {}
    by_language: dict[str, dict[str, Any]] = {}
    overall = _empty_histogram()
    for path in shard_paths:
        relative = _relative_inside(path, dataset_dir, "shard")
        with ShardReader(path, verify_checksums=verify_checksums) as reader:
            if tokenizer_sha256 is None:
                tokenizer_sha256, vocab_size = reader.tokenizer_sha256, reader.vocab_size
            elif (reader.tokenizer_sha256, reader.vocab_size) != (tokenizer_sha256, vocab_size):
                raise ShardError(path, "tokenizer or vocab_size differs from the dataset's first shard")
            _merge_histograms(overall, score_histogram(reader.scores))
            for groups, shard_groups in zip((by_source, by_language), groups_by_source_and_language(reader)):
                for name, shard_group in shard_groups.items():
                    group = groups.setdefault(name, {"documents": 0, "tokens": 0, "score_histogram": _empty_histogram()})
                    group["documents"] += shard_group["documents"]
                    group["tokens"] += shard_group["tokens"]
                    _merge_histograms(group["score_histogram"], shard_group["score_histogram"])
            shards.append(
                {
                    "path": relative,
                    "bytes": reader.header.file_size,
                    "documents": reader.document_count,
                    "tokens": reader.token_count,
                    "has_loss_mask": reader.has_loss_mask,
                    "header_crc32c": reader.header.header_crc32c,
                    "sha256": file_sha256(path),
                }
            )

    tokenizer: dict[str, Any] = {"path": None, "name": tokenizer_name, "sha256": tokenizer_sha256, "vocab_size": vocab_size}
    if tokenizer_path is not None:
        tokenizer_path = os.fspath(tokenizer_path)
        actual = file_sha256(tokenizer_path)
        if actual != tokenizer_sha256:
            raise ValueError(f"tokenizer {tokenizer_path} has SHA-256 {actual}, but the shards were made with {tokenizer_sha256}")
        try:
            tokenizer["path"] = _relative_inside(tokenizer_path, dataset_dir, "tokenizer")
        except ValueError:
            tokenizer["path"] = os.path.abspath(tokenizer_path)
        if special_tokens is None:
            special_tokens = tokenizer_special_tokens(tokenizer_path)
    tokenizer["special_tokens"] = dict(special_tokens or {})

    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "shard_format_version": FORMAT_VERSION,
        "tokenizer": tokenizer,
        "totals": {
            "shards": len(shards),
            "documents": sum(shard["documents"] for shard in shards),
            "tokens": sum(shard["tokens"] for shard in shards),
            "bytes": sum(shard["bytes"] for shard in shards),
        },
        "shards": shards,
        "sources": dict(sorted(by_source.items(), key=lambda item: Source[item[0].upper()])),
        "languages": dict(sorted(by_language.items(), key=lambda item: Language[item[0].upper()])),
        "score_histogram": {
            "bins": SCORE_HISTOGRAM_BINS,
            "range": list(SCORE_HISTOGRAM_RANGE),
            "all": overall,
        },
        "source_ids": {source.name.lower(): int(source) for source in Source},
        "language_ids": {language.name.lower(): int(language) for language in Language},
        "document_flags": {flag.name.lower(): int(flag) for flag in DocFlag},
    }


def write_manifest(dataset_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> str:
    """Write `dataset_dir/manifest.json` atomically; returns its path."""
    path = os.path.join(os.fspath(dataset_dir), MANIFEST_NAME)
    text = json.dumps(manifest, indent=1, sort_keys=False) + "\n"
    atomic_write_text(path, text)
    return path


def load_manifest(path: str | os.PathLike, *, check: str = "header") -> dict[str, Any]:
    """Load a manifest (a file, or a dataset directory holding manifest.json) and check it against its shards.

    check="none": only the manifest's own consistency (schema, totals). "header" (default): also each shard's
    size and header (CRC, counts, tokenizer) — a stat and 256 bytes per shard. "sha256": also each shard's
    SHA-256 (reads every byte). The result gains "dataset_dir" (absolute), where the relative paths start.
    """
    if check not in ("none", "header", "sha256"):
        raise ValueError(f"check must be 'none', 'header' or 'sha256', got {check!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file)
    except OSError as error:
        raise ManifestError(path, f"cannot open: {error.strerror or error}") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ManifestError(path, f"not valid JSON: {error}") from None

    def bad(problem: str) -> ManifestError:
        return ManifestError(path, problem)

    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise bad(f"not a shards manifest (format is not {MANIFEST_FORMAT!r})")
    if manifest.get("version") != MANIFEST_VERSION:
        raise bad(f"unsupported manifest version {manifest.get('version')!r} (this reader reads {MANIFEST_VERSION})")
    for key, kind in (("tokenizer", dict), ("totals", dict), ("shards", list), ("score_histogram", dict)):
        if not isinstance(manifest.get(key), kind):
            raise bad(f"missing or malformed {key!r}")
    tokenizer = manifest["tokenizer"]
    totals = {"shards": 0, "documents": 0, "tokens": 0, "bytes": 0}
    dataset_dir = os.path.dirname(os.path.abspath(path))
    for number, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict) or not all(
            isinstance(shard.get(key), int) for key in ("bytes", "documents", "tokens", "header_crc32c")
        ) or not isinstance(shard.get("path"), str):
            raise bad(f"shard entry {number} is malformed")
        relative = shard["path"]
        if os.path.isabs(relative) or os.pardir in relative.split("/"):
            raise bad(f"shard path {relative!r} is not relative to the dataset directory")
        totals["shards"] += 1
        for key in ("documents", "tokens", "bytes"):
            totals[key] += shard[key]
        if check == "none":
            continue
        shard_path = os.path.join(dataset_dir, relative)
        try:
            header = read_header(shard_path)
        except ShardError as error:
            raise bad(f"shard {relative}: {error.problem}") from None
        if header.file_size != shard["bytes"]:
            raise bad(f"shard {relative} is {header.file_size} bytes, the manifest says {shard['bytes']}")
        if header.header_crc32c != shard["header_crc32c"]:
            raise bad(f"shard {relative} header CRC {header.header_crc32c:#010x} differs from the manifest's: it was rewritten")
        if (header.document_count, header.token_count) != (shard["documents"], shard["tokens"]):
            raise bad(f"shard {relative} counts differ from the manifest's")
        if (header.tokenizer_sha256, header.vocab_size) != (tokenizer.get("sha256"), tokenizer.get("vocab_size")):
            raise bad(f"shard {relative} was made with another tokenizer than the manifest's")
        if check == "sha256" and file_sha256(shard_path) != shard.get("sha256"):
            raise bad(f"shard {relative} SHA-256 differs from the manifest's: corrupted or rewritten")
    if totals != manifest["totals"]:
        raise bad(f"totals {manifest['totals']} disagree with the shard entries {totals}")
    manifest["dataset_dir"] = dataset_dir
    return manifest


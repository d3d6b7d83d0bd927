"""A folder of source files -> a tokenizer -> shards, with no curation: the quick data path (`seedcoder curate` is the full one).

    seedcoder data build SRC_DIR OUT_DIR [--vocab-size 8192 | --tokenizer tokenizer.json] [--include '*.py' ...]
    build_dataset("src/", "data/", vocab_size=8192, include=["*.py"])         # the same from Python

OUT_DIR receives, in this order (each step is skipped when its output already exists, so an interrupted
build continues where it stopped; every file is written atomically):

    plan.json            the kept files (sorted; empty, non-UTF-8, oversized and exact-duplicate files are
                         dropped), their language and the shard each one goes to
    tokenizer.json       a byte-level BPE trained on the kept files with HF `tokenizers`, or a copy of --tokenizer
    shard-00000.scs ...  the tokenized files (`seedcoder.data.shards` format; score 0: not rated yet)
    manifest.json        written last: a dataset directory with a manifest is complete

The tokenizer is our byte-level BPE (`seedcoder.tokenizer.train_tokenizer`, also used by curation's tokenize step,
the other way to make shards: from a curated dataset rather than a folder). The training loader appends <eos> to
every document and uses the FIM markers.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from seedcoder.data.manifest import MANIFEST_NAME, build_manifest, load_manifest, write_manifest
from seedcoder.data.shard_reader import ShardReader
from seedcoder.data.shard_writer import ShardWriter
from seedcoder.data.shards import content_hash64, file_sha256
from seedcoder.fileio import atomic_write_text
from seedcoder.tokenizer import TOKENIZER_FILE, TokenizerError, load_tokenizer, train_tokenizer

PLAN_NAME = "plan.json"
PLAN_FORMAT = "seedcoder-build-plan"

# File extension -> seedcoder.data.shards.Language name (lower case). Files with other extensions are "unknown".
EXTENSION_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp",
    ".hh": "cpp", ".cu": "cuda", ".cuh": "cuda", ".cs": "csharp", ".java": "java", ".kt": "kotlin", ".scala": "scala",
    ".go": "go", ".rs": "rust", ".js": "javascript", ".mjs": "javascript", ".ts": "typescript", ".tsx": "typescript",
    ".php": "php", ".rb": "ruby", ".swift": "swift", ".m": "objective_c", ".dart": "dart", ".lua": "lua", ".pl": "perl",
    ".r": "r", ".jl": "julia", ".f90": "fortran", ".hs": "haskell", ".ml": "ocaml", ".fs": "fsharp", ".ex": "elixir",
    ".erl": "erlang", ".clj": "clojure", ".lisp": "lisp", ".groovy": "groovy", ".zig": "zig", ".nim": "nim",
    ".sol": "solidity", ".s": "assembly", ".v": "verilog", ".vhd": "vhdl", ".sh": "shell", ".bash": "shell",
    ".ps1": "powershell", ".bat": "batch", ".sql": "sql", ".html": "html", ".css": "css", ".scss": "scss", ".vue": "vue",
    ".svelte": "svelte", ".md": "markdown", ".rst": "restructuredtext", ".tex": "tex", ".json": "json", ".yaml": "yaml",
    ".yml": "yaml", ".toml": "toml", ".xml": "xml", ".ini": "ini", ".proto": "protobuf", ".graphql": "graphql",
    ".cmake": "cmake", ".ipynb": "jupyter", ".txt": "text",
}


class BuildError(ValueError):
    """A bad input to the build (missing folder, no files, an unusable tokenizer); the message names it."""


def language_of(path: str) -> str:
    name = os.path.basename(path)
    if name == "Makefile":
        return "makefile"
    if name == "Dockerfile":
        return "dockerfile"
    return EXTENSION_LANGUAGES.get(os.path.splitext(name)[1].lower(), "unknown")


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(os.path.basename(relative), pattern) for pattern in patterns)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(iterable: Iterable, total: int, description: str, enabled: bool) -> Iterable:
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=description, unit="file", leave=False)
    return iterable


# ------------------------------------------------------------------------------------------ plan
def plan_files(
    src_dir: str,
    *,
    include: Sequence[str],
    exclude: Sequence[str],
    max_file_bytes: int,
    shard_bytes: int,
) -> dict[str, Any]:
    """The kept files of `src_dir` and their shards (see the module docstring); a pure function of the folder."""
    if not os.path.isdir(src_dir):
        raise BuildError(f"source folder {src_dir} does not exist")
    candidates = []
    for root, dirs, names in os.walk(src_dir):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, src_dir).replace(os.sep, "/")
            if _matches(relative, include) and not _matches(relative, exclude) and os.path.isfile(path):
                candidates.append(relative)
    files, seen, dropped = [], set(), {"empty": 0, "not_utf8": 0, "too_large": 0, "duplicate": 0, "unreadable": 0}
    shard, shard_fill = 0, 0
    for relative in sorted(candidates):
        path = os.path.join(src_dir, relative)
        try:
            size = os.path.getsize(path)
            if size > max_file_bytes:
                dropped["too_large"] += 1
                continue
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            dropped["unreadable"] += 1
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            dropped["not_utf8"] += 1
            continue
        if not text.strip():
            dropped["empty"] += 1
            continue
        digest = content_hash64(data)
        if digest in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(digest)
        if shard_fill and shard_fill + size > shard_bytes:
            shard, shard_fill = shard + 1, 0
        shard_fill += size
        files.append({"path": relative, "bytes": size, "language": language_of(relative), "shard": shard,
                      "content_hash": digest})
    if not files:
        raise BuildError(f"no usable files in {src_dir} (include {list(include)}, exclude {list(exclude)}; dropped {dropped})")
    return {
        "format": PLAN_FORMAT,
        "version": 1,
        "source": os.path.abspath(src_dir),
        "include": list(include),
        "exclude": list(exclude),
        "max_file_bytes": max_file_bytes,
        "shard_bytes": shard_bytes,
        "dropped": dropped,
        "shards": shard + 1,
        "files": files,
    }


def _write_json(path: str, value: Any) -> None:
    text = json.dumps(value, indent=1) + "\n"
    atomic_write_text(path, text)


def _read_texts(src_dir: str, files: Iterable[dict[str, Any]]) -> Iterator[str]:
    for entry in files:
        with open(os.path.join(src_dir, entry["path"]), encoding="utf-8") as file:
            yield file.read()


# ------------------------------------------------------------------------------------------ shards
def shard_name(index: int) -> str:
    return f"shard-{index:05d}.scs"


def _shard_complete(path: str, expected_sha256: str) -> bool:
    try:
        with ShardReader(path, verify_checksums=False) as reader:
            return reader.tokenizer_sha256 == expected_sha256
    except Exception:
        return False


def write_shard(path: str, src_dir: str, files: Sequence[dict[str, Any]], tokenizer, tokenizer_sha256: str,
                batch_files: int = 256) -> int:
    """Tokenize `files` into one shard at `path`; returns its token count."""
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    with ShardWriter(path, vocab_size=vocab_size, tokenizer_sha256=tokenizer_sha256) as writer:
        for start in range(0, len(files), batch_files):
            chunk = files[start : start + batch_files]
            encodings = tokenizer.encode_batch(list(_read_texts(src_dir, chunk)), add_special_tokens=False)
            for entry, encoding in zip(chunk, encodings):
                ids = np.asarray(encoding.ids, dtype=np.uint32)
                if len(ids) == 0:
                    continue
                writer.add(ids, score=0.0, language=entry["language"], source="file", content_hash=entry["content_hash"],
                           metadata={"path": entry["path"]})
        return writer.token_count


# ------------------------------------------------------------------------------------------ the build
def build_dataset(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    vocab_size: int = 8192,
    include: Sequence[str] = ("*.py",),
    exclude: Sequence[str] = (),
    max_file_bytes: int = 1 << 20,
    shard_bytes: int = 64 << 20,
    tokenizer_sample_bytes: int = 256 << 20,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) the build of `out_dir` from `src_dir`; returns the manifest. See the module docstring."""
    src_dir, out_dir = os.fspath(src_dir), os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, MANIFEST_NAME)
    plan_path = os.path.join(out_dir, PLAN_NAME)
    tokenizer_path = os.path.join(out_dir, TOKENIZER_FILE)
    started = time.perf_counter()

    # 1. plan: which files, which shard (reused when the folder and options are unchanged)
    plan = plan_files(src_dir, include=include, exclude=exclude, max_file_bytes=max_file_bytes, shard_bytes=shard_bytes)
    if tokenizer is not None:
        plan["tokenizer"] = {"given": os.path.abspath(tokenizer), "sha256": file_sha256(tokenizer)}
    else:
        plan["tokenizer"] = {"trained_vocab_size": vocab_size, "sample_bytes": tokenizer_sample_bytes}
    if os.path.exists(plan_path):
        with open(plan_path, encoding="utf-8") as file:
            previous = json.load(file)
        if previous != plan:  # other files or options: what is on disk belongs to another build
            stale = [MANIFEST_NAME, TOKENIZER_FILE] + [shard_name(index) for index in range(previous.get("shards", 0))]
            for name in stale:
                if os.path.exists(os.path.join(out_dir, name)):
                    os.unlink(os.path.join(out_dir, name))
            _say(f"{out_dir}: the source files or options changed since the last build; building again")
    _write_json(plan_path, plan)
    total_bytes = sum(entry["bytes"] for entry in plan["files"])
    _say(f"plan: {len(plan['files'])} files ({total_bytes / 2**20:.1f} MiB) -> {plan['shards']} shard(s); "
         f"dropped {plan['dropped']}")

    # 2. tokenizer: given, already trained, or trained now on (a prefix of) the kept files
    if tokenizer is not None:
        try:
            load_tokenizer(os.fspath(tokenizer))
        except TokenizerError as error:  # the build's own error type: the caller asked for a build
            raise BuildError(str(error)) from None
        if not os.path.exists(tokenizer_path) or file_sha256(tokenizer_path) != file_sha256(tokenizer):
            shutil.copyfile(tokenizer, tokenizer_path + ".tmp")
            os.replace(tokenizer_path + ".tmp", tokenizer_path)
    elif not os.path.exists(tokenizer_path):
        sample, sample_bytes = [], 0
        for entry in plan["files"]:
            if sample_bytes >= tokenizer_sample_bytes:
                break
            sample.append(entry)
            sample_bytes += entry["bytes"]
        _say(f"tokenizer: training a {vocab_size}-token byte-level BPE on {len(sample)} files "
             f"({sample_bytes / 2**20:.1f} MiB; one native call, no progress until it ends)")
        tick = time.perf_counter()
        train_tokenizer(_read_texts(src_dir, sample), tokenizer_path, vocab_size=vocab_size, length=len(sample),
                        show_progress=progress and sys.stderr.isatty())
        _say(f"tokenizer: trained in {time.perf_counter() - tick:.1f} s -> {tokenizer_path}")
    tok = load_tokenizer(tokenizer_path)
    tokenizer_sha256 = file_sha256(tokenizer_path)

    # 3. shards: each written atomically; those already complete are kept
    by_shard: dict[int, list[dict[str, Any]]] = {}
    for entry in plan["files"]:
        by_shard.setdefault(entry["shard"], []).append(entry)
    shard_paths = []
    tick = time.perf_counter()
    for index in _progress(range(plan["shards"]), plan["shards"], "shards", progress):
        path = os.path.join(out_dir, shard_name(index))
        shard_paths.append(path)
        if _shard_complete(path, tokenizer_sha256):
            continue
        if os.path.exists(manifest_path):  # a shard changes: the old manifest no longer describes the dataset
            os.unlink(manifest_path)
        tokens = write_shard(path, src_dir, by_shard[index], tok, tokenizer_sha256)
        _say(f"shard {index + 1}/{plan['shards']}: {len(by_shard[index])} files, {tokens:,} tokens -> {path}")
    shard_time = time.perf_counter() - tick

    # 4. manifest: last, so its presence marks a complete dataset
    if os.path.exists(manifest_path):
        manifest = load_manifest(manifest_path)
    else:
        manifest = build_manifest(out_dir, shard_paths, tokenizer_path=tokenizer_path, tokenizer_name="seedcoder-bpe")
        write_manifest(out_dir, manifest)
    totals = manifest["totals"]
    _say(f"dataset: {totals['documents']:,} documents, {totals['tokens']:,} tokens "
         f"({total_bytes / max(1, totals['tokens']):.2f} bytes/token) in {totals['shards']} shard(s); "
         f"tokenized in {shard_time:.1f} s, {time.perf_counter() - started:.1f} s in all -> {manifest_path}")
    return manifest


__all__ = ["BuildError", "build_dataset", "language_of", "plan_files", "write_shard"]

"""Step 1, ingest: directories, git repositories and jsonl/parquet dumps -> a dataset of files (the base columns).

    plan = plan_ingest(["~/src/project", "dumps/the-stack.jsonl"], IngestOptions(max_file_bytes=1 << 20))
    for index, task in enumerate(plan.tasks):
        ingest_part(out_dir, index, plan.sources, task, options)   # what the executor runs per shard

Inputs, each a path or a table {path = "...", kind = "dir" | "git" | "jsonl" | "parquet", repo = "name"}:

* a git repository (a directory with `.git`): the files tracked at HEAD (`git ls-tree -r HEAD`, read with one
  `git cat-file --batch` per repository and shard). A repository git cannot read yields one dropped row
  ("broken_git_repository: ..."); submodules and symlinks are recorded as dropped.
* a directory: walked in sorted order without following directory symlinks (`follow_symlinks = true`
  follows them, and a link back to a directory already visited is recorded as "symlink_loop"); a
  subdirectory that is a git repository becomes its own repository input (`nested_git`). Unreadable
  directories and files, dangling links, link loops, fifos and devices are recorded with a reason.
* a jsonl or parquet dump: one record per line / row, with the text in `text` or `content`, and optional
  `repo` (`repo_name`, `max_stars_repo_name`), `path` (`max_stars_repo_path`), `language` (`lang`). A line
  that is not a JSON object with a string text is recorded as "malformed_record: FILE:LINE: problem"; the
  rest of the dump is read.

Every file or record is then checked: larger than `max_file_bytes` (default 1 MiB; judged from its size,
so a huge file is never read), empty or whitespace only, binary (a NUL byte), not UTF-8. The kept rows have
the base columns plus `size_bytes`; the dropped ones (text left empty) go to dropped/ with `drop_reason`.
Row ids are stable: derived from the input kind, repository and path (dumps: the dump and line/row number).
Shards hold at most `shard_rows` files and about `shard_bytes` bytes, in the plan's order (inputs in the
order given, files sorted by path).
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import hashlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from seedcoder.config import build_section, option
from seedcoder.curate.dataset import base_table, marker_path, split_rows, stable_id, write_part
from seedcoder.curate.errors import CurateConfigError, CurateInputError
from seedcoder.curate.executor import Task
from seedcoder.curate.languages import LANGUAGES, language_of
from seedcoder.curate.step import StepContext, StepKind, say

SIZE_SCHEMA = pa.schema([("size_bytes", pa.int64())])
INPUT_KINDS = ("auto", "dir", "git", "jsonl", "parquet")
TEXT_FIELDS = ("text", "content")
REPO_FIELDS = ("repo", "repo_name", "max_stars_repo_name", "repository")
PATH_FIELDS = ("path", "max_stars_repo_path", "file_path", "filename")
LANGUAGE_FIELDS = ("language", "lang")
LANGUAGE_ALIASES = {
    "c++": "cpp", "c#": "csharp", "c-sharp": "csharp", "f#": "fsharp", "objective-c": "objective_c",
    "objc": "objective_c", "objective-c++": "objective_c", "bash": "shell", "sh": "shell", "js": "javascript",
    "ts": "typescript",
    "py": "python", "golang": "go", "visual basic": "visual_basic", "vb": "visual_basic", "tex": "tex", "latex": "tex",
    "common lisp": "lisp", "emacs lisp": "lisp", "jupyter notebook": "jupyter", "dockerfile": "dockerfile",
    "makefile": "makefile", "make": "makefile", "protocol buffer": "protobuf", "proto": "protobuf", "asm": "assembly",
    "systemverilog": "verilog", "restructuredtext": "restructuredtext", "rst": "restructuredtext", "octave": "matlab",
}
GIT = ["git", "-c", "safe.directory=*", "-c", "core.quotepath=off"]


@dataclass
class IngestOptions:
    """How inputs are read (the plan's fingerprint and every task hold these)."""

    max_file_bytes: int = option(1 << 20, "larger files are dropped as oversize (never read)")
    shard_bytes: int = option(64 << 20, "about this many bytes of text per shard")
    shard_rows: int = option(20_000, "at most this many files per shard")
    include: list[str] = option([], "glob patterns (relative path or file name) to take; empty: all")
    exclude: list[str] = option([".git", ".hg", ".svn"], "glob patterns to skip (no row is written for them)")
    follow_symlinks: bool = option(False, "follow directory symlinks (loops are detected and recorded)")
    nested_git: bool = option(True, "a subdirectory with .git is ingested as its own git repository")
    git: bool = option(True, "read a directory with .git through git (files tracked at HEAD)")


@dataclass
class IngestStepOptions(IngestOptions):
    """The step's options: the inputs and how they are read."""

    inputs: list[Any] = option([], "paths (or {path, kind, repo, fields} tables) to ingest")


@dataclass(frozen=True)
class Source:
    """One input: where it is, how to read it, and the repository name its files get."""

    kind: str  # dir, git, jsonl, parquet
    path: str  # absolute
    repo: str
    fields: tuple[tuple[str, str], ...] = ()  # dumps: role (text/repo/path/language) -> field name overrides


@dataclass
class IngestPlan:
    sources: list[Source]
    tasks: list[list[tuple]]  # per shard: entries (source index, relpath, size, ref, pre-decided drop reason)
    fingerprint: str  # changes when the inputs change (paths, sizes, mtimes, git HEADs)
    excluded: int = 0  # entries skipped by `exclude` / `include` (no row: the user asked for it)


# ------------------------------------------------------------------------------------------ content checks
def check_content(data: bytes, max_file_bytes: int) -> tuple[str | None, str | None]:
    """(text, None) for a usable file, else (None, reason): oversize, empty, binary or not UTF-8."""
    if len(data) > max_file_bytes:
        return None, f"oversize: {len(data)} bytes > max_file_bytes {max_file_bytes}"
    if not data:
        return None, "empty: 0 bytes"
    nul = data.find(b"\x00")
    if nul >= 0:
        return None, f"binary: NUL byte at offset {nul}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"not_utf8: {error.reason} at byte {error.start}"
    if not text.strip():
        return None, f"empty: only whitespace ({len(data)} bytes)"
    return text, None


def normalize_language(name: Any, path: str) -> str:
    """A dump's language label -> our name; falls back to the path's extension, then "unknown"."""
    if isinstance(name, str) and name.strip():
        lowered = name.strip().lower()
        lowered = LANGUAGE_ALIASES.get(lowered, lowered).replace(" ", "_").replace("-", "_")
        if lowered in LANGUAGES:
            return lowered
    return language_of(path) if path else "unknown"


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


# ------------------------------------------------------------------------------------------ planning
def _source_of(spec: str | Mapping[str, Any], options: IngestOptions) -> Source:
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, Mapping) or "path" not in spec:
        raise CurateConfigError(f"ingest: an input is a path or a table with a 'path' key, got {spec!r}")
    unknown = sorted(set(spec) - {"path", "kind", "repo", "fields"})
    if unknown:
        raise CurateConfigError(f"ingest: input {spec['path']!r} has unknown key(s) {unknown}")
    path = os.path.abspath(os.path.expanduser(str(spec["path"])))
    kind = spec.get("kind", "auto")
    if kind not in INPUT_KINDS:
        raise CurateConfigError(f"ingest: input {path}: kind must be one of {INPUT_KINDS}, got {kind!r}")
    if not os.path.lexists(path):
        raise CurateConfigError(f"ingest: input {path} does not exist")
    if kind == "auto":
        if os.path.isdir(path):
            kind = "git" if options.git and os.path.exists(os.path.join(path, ".git")) else "dir"
        elif path.endswith((".jsonl", ".ndjson")):
            kind = "jsonl"
        elif path.endswith(".parquet"):
            kind = "parquet"
        else:
            raise CurateConfigError(f"ingest: input {path} is a file but not a .jsonl or .parquet dump; "
                                    "give its directory, or kind = 'jsonl' / 'parquet'")
    fields = spec.get("fields", {}) or {}
    if not isinstance(fields, Mapping) or not set(fields) <= {"text", "repo", "path", "language"}:
        raise CurateConfigError(f"ingest: input {path}: fields maps text/repo/path/language to field names, "
                                f"got {fields!r}")
    repo = str(spec.get("repo") or (os.path.basename(path.rstrip(os.sep)) if kind in ("dir", "git") else ""))
    return Source(kind=kind, path=path, repo=repo, fields=tuple(sorted(fields.items())))


def _walk_dir(source: Source, options: IngestOptions, nested: list[Source]) -> tuple[list[tuple], int, list]:
    """(entries (relpath, size, None, reason), excluded count, fingerprint items) of a directory."""
    entries: list[tuple] = []
    fingerprint: list = []
    excluded = 0
    visited: set[tuple[int, int]] = set()

    def visit(directory: str, relative: str) -> None:
        nonlocal excluded
        try:
            info = os.stat(directory)
            visited.add((info.st_dev, info.st_ino))
            with os.scandir(directory) as iterator:
                children = sorted(iterator, key=lambda entry: entry.name)
        except OSError as error:
            entries.append((relative or ".", 0, None, f"unreadable: directory: {error.strerror or error}"))
            return
        for child in children:
            child_relative = f"{relative}/{child.name}" if relative else child.name
            if _matches(child_relative, options.exclude):
                excluded += 1
                continue
            try:
                is_link = child.is_symlink()
                info = os.stat(child.path)  # follows links
            except OSError as error:
                reason = "symlink_loop" if error.errno == errno.ELOOP else "unreadable"
                if reason == "unreadable" and child.is_symlink():
                    reason = "unreadable: dangling symlink"
                    entries.append((child_relative, 0, None, f"{reason} -> {os.readlink(child.path)}"))
                else:
                    entries.append((child_relative, 0, None, f"{reason}: {error.strerror or error}"))
                continue
            if stat.S_ISDIR(info.st_mode):
                if is_link and not options.follow_symlinks:
                    reason = "symlink: directory link not followed (follow_symlinks = false)"
                    entries.append((child_relative, 0, None, reason))
                elif (info.st_dev, info.st_ino) in visited:
                    reason = (f"symlink_loop: {child_relative} -> {os.readlink(child.path)} leads to a directory "
                              "already visited")
                    entries.append((child_relative, 0, None, reason))
                elif options.nested_git and options.git and os.path.exists(os.path.join(child.path, ".git")):
                    nested.append(Source(kind="git", path=child.path, repo=f"{source.repo}/{child_relative}"))
                else:
                    visit(child.path, child_relative)
                continue
            if options.include and not _matches(child_relative, options.include):
                excluded += 1
                continue
            if not stat.S_ISREG(info.st_mode):
                kind = ("fifo" if stat.S_ISFIFO(info.st_mode) else "socket" if stat.S_ISSOCK(info.st_mode)
                        else "device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "special file")
                entries.append((child_relative, 0, None, f"not_regular_file: {kind}"))
                continue
            entries.append((child_relative, info.st_size, None, None))
            fingerprint.append((child_relative, info.st_size, info.st_mtime_ns))

    visit(source.path, "")
    return entries, excluded, fingerprint


def _git(repo_dir: str, *args: str, input: bytes | None = None) -> bytes:
    try:
        result = subprocess.run([*GIT, "-C", repo_dir, *args], input=input, capture_output=True, check=False)
    except FileNotFoundError:
        raise CurateInputError(f"{repo_dir}: the git command is not installed") from None
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = message[0] if message else f"exit status {result.returncode}"
        raise CurateInputError(f"{repo_dir}: git {args[0]} failed: {detail}")
    return result.stdout


def _list_git(source: Source, options: IngestOptions) -> tuple[list[tuple], int, list]:
    try:
        head = _git(source.path, "rev-parse", "--verify", "HEAD^{commit}").decode().strip()
        listing = _git(source.path, "ls-tree", "-r", "-z", "--long", "--full-tree", "HEAD")
    except CurateInputError as error:
        return [("", 0, None, f"broken_git_repository: {error}")], 0, [("broken", str(error))]
    entries, excluded = [], 0
    for record in listing.split(b"\x00"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, object_id, size = meta.decode().split()
        relative = raw_path.decode("utf-8", "surrogateescape")
        if _matches(relative, options.exclude) or (options.include and not _matches(relative, options.include)):
            excluded += 1
        elif kind == "commit":
            entries.append((relative, 0, None, "submodule: not ingested (ingest its repository separately)"))
        elif mode == "120000":
            entries.append((relative, 0, None, "symlink: a git symlink, not a file"))
        else:
            entries.append((relative, int(size), object_id, None))
    entries.sort(key=lambda entry: entry[0])
    return entries, excluded, [("head", head)]


def _scan_jsonl(source: Source, options: IngestOptions) -> list[tuple]:
    """Chunks (start byte, end byte, first line number) of a jsonl file, each ~shard_bytes / shard_rows lines."""
    chunks, start, lines, line_number, chunk_first = [], 0, 0, 1, 1
    offset = 0
    with open(source.path, "rb") as file:
        for line in file:
            offset += len(line)
            lines += 1
            line_number += 1
            if lines >= options.shard_rows or offset - start >= options.shard_bytes:
                chunks.append((start, offset, chunk_first))
                start, lines, chunk_first = offset, 0, line_number
    if offset > start:
        chunks.append((start, offset, chunk_first))
    return chunks


def plan_ingest(inputs: Sequence[str | Mapping[str, Any]], options: IngestOptions) -> IngestPlan:
    """Which files go to which shard (see the module docstring); a pure function of the inputs and options."""
    if not inputs:
        raise CurateConfigError("ingest: no inputs (give directories, git repositories or jsonl/parquet dumps)")
    pending = [_source_of(spec, options) for spec in inputs]
    sources: list[Source] = []
    tasks: list[list[tuple]] = []
    current: list[tuple] = []
    current_bytes = 0
    excluded = 0
    fingerprint = hashlib.sha256()
    repo_names: dict[str, int] = {}

    def close() -> None:
        nonlocal current, current_bytes
        if current:
            tasks.append(current)
        current, current_bytes = [], 0

    def add(entry: tuple, size: int) -> None:
        nonlocal current_bytes
        if current and (len(current) >= options.shard_rows or current_bytes + size > options.shard_bytes):
            close()
        current.append(entry)
        current_bytes += size

    while pending:
        source = pending.pop(0)
        if source.kind in ("dir", "git"):  # repository names must be unique: ids derive from them
            count = repo_names.get(source.repo, 0)
            repo_names[source.repo] = count + 1
            if count:
                source = dataclasses.replace(source, repo=f"{source.repo}~{count + 1}")
        index = len(sources)
        sources.append(source)
        if source.kind == "dir":
            nested: list[Source] = []
            entries, skipped, items = _walk_dir(source, options, nested)
            pending[0:0] = nested  # nested repositories right after their parent, in path order
        elif source.kind == "git":
            entries, skipped, items = _list_git(source, options)
        elif source.kind == "jsonl":
            info = os.stat(source.path)
            chunks = _scan_jsonl(source, options)
            fingerprint.update(json.dumps([source.path, "jsonl", info.st_size, info.st_mtime_ns]).encode())
            for start, end, first_line in chunks:
                close()
                current.append((index, "", end - start, (start, end, first_line), None))
                close()
            continue
        else:  # parquet
            info = os.stat(source.path)
            fingerprint.update(json.dumps([source.path, "parquet", info.st_size, info.st_mtime_ns]).encode())
            try:
                groups = pq.ParquetFile(source.path).metadata.num_row_groups
            except (OSError, pa.ArrowException) as error:
                close()
                reason = f"malformed_dump: {source.path}: not a readable Parquet file: {error}"
                current.append((index, "", 0, None, reason))
                close()
                continue
            for group in range(groups):
                close()
                current.append((index, "", 0, group, None))
                close()
            continue
        excluded += skipped
        fingerprint.update(json.dumps([source.kind, source.path, source.repo, items]).encode())
        for relative, size, ref, reason in entries:
            add((index, relative, size, ref, reason), size if reason is None and size <= options.max_file_bytes else 0)
    close()
    fingerprint.update(json.dumps(dataclasses.asdict(options), sort_keys=True).encode())
    return IngestPlan(sources=sources, tasks=tasks, fingerprint=fingerprint.hexdigest(), excluded=excluded)


# ------------------------------------------------------------------------------------------ reading (per shard)
def _row(source: Source, relative: str, text: str, language: str, size: int, *, row_id: str,
         repo: str | None = None) -> dict:
    return {"id": row_id, "repo": source.repo if repo is None else repo, "path": relative, "language": language,
            "text": text, "source": "file", "size_bytes": size}


def _file_rows(source: Source, entries: Sequence[tuple], options: IngestOptions) -> Iterator[tuple[dict, str | None]]:
    """Rows of directory entries (reading each file) and git entries (one `git cat-file --batch` for all)."""
    blobs: dict[str, bytes] = {}
    git_error = None
    if source.kind == "git":
        wanted = [ref for _, _, size, ref, reason in entries if reason is None and size <= options.max_file_bytes]
        if wanted:
            try:
                blobs = _read_blobs(source.path, wanted)
            except CurateInputError as error:
                git_error = f"broken_git_repository: {error}"
    for _, relative, size, ref, reason in entries:
        row_id = stable_id(source.kind, source.repo, relative)
        if reason is None and size > options.max_file_bytes:
            reason = f"oversize: {size} bytes > max_file_bytes {options.max_file_bytes}"
        text, data = None, None
        if reason is None:
            if source.kind == "git":
                data = blobs.get(ref)
                if data is None:
                    reason = git_error or f"unreadable: git object {ref} is missing"
            else:
                try:
                    with open(os.path.join(source.path, relative), "rb") as file:
                        size = os.fstat(file.fileno()).st_size  # it may have changed since the plan
                        data = file.read(options.max_file_bytes + 1) if size <= options.max_file_bytes else b""
                except OSError as error:
                    data, reason = None, f"unreadable: {error.strerror or error}"
                if data is not None and size > options.max_file_bytes:
                    reason = f"oversize: {size} bytes > max_file_bytes {options.max_file_bytes}"
            if reason is None:
                size = len(data)
                text, reason = check_content(data, options.max_file_bytes)
        language = language_of(relative, data[:4096] if reason is None and data else None)
        yield _row(source, relative, text or "", language, size, row_id=row_id), reason


def _read_blobs(repo_dir: str, object_ids: Sequence[str]) -> dict[str, bytes]:
    output = _git(repo_dir, "cat-file", "--batch", input=("\n".join(object_ids) + "\n").encode())
    blobs, position = {}, 0
    for object_id in object_ids:
        end = output.index(b"\n", position)
        header = output[position:end].split()
        position = end + 1
        if len(header) == 2 and header[1] == b"missing":
            continue
        size = int(header[2])
        blobs[object_id] = output[position : position + size]
        position += size + 1  # the content is followed by a newline
    return blobs


def _record_row(source: Source, record: Any, where: str, row_id: str,
                options: IngestOptions) -> tuple[dict, str | None]:
    fields = dict(source.fields)

    def pick(role: str, names: Sequence[str]) -> Any:
        if role in fields:
            return record.get(fields[role])
        return next((record[name] for name in names if record.get(name) is not None), None)

    empty = _row(source, "", "", "unknown", 0, row_id=row_id, repo="")
    if not isinstance(record, dict):
        return empty, f"malformed_record: {where}: a {type(record).__name__}, not an object"
    text = pick("text", TEXT_FIELDS)
    repo, path = pick("repo", REPO_FIELDS), pick("path", PATH_FIELDS)
    repo = repo if isinstance(repo, str) else ""
    path = path if isinstance(path, str) else ""
    language = normalize_language(pick("language", LANGUAGE_FIELDS), path)
    row = _row(source, path, "", language, 0, row_id=row_id, repo=repo)
    if text is None:
        wanted = fields.get("text") or " or ".join(TEXT_FIELDS)
        return row, f"malformed_record: {where}: no {wanted} field"
    if not isinstance(text, str):
        return row, f"malformed_record: {where}: the text is a {type(text).__name__}, not a string"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:
        return row, f"not_utf8: {where}: {error.reason} at character {error.start}"
    row["size_bytes"] = len(data)
    checked, reason = check_content(data, options.max_file_bytes)
    if reason is None:
        row["text"] = checked
        if row["language"] == "unknown" and path:
            row["language"] = language_of(path, data[:4096])
    return row, reason


def _jsonl_rows(source: Source, chunk: tuple[int, int, int],
                options: IngestOptions) -> Iterator[tuple[dict, str | None]]:
    start, end, line_number = chunk
    with open(source.path, "rb") as file:
        file.seek(start)
        data = file.read(end - start)
    for raw in data.split(b"\n"):  # "\n" only, as the planning scan counts lines
        raw = raw.removesuffix(b"\r")
        where = f"{source.path}:{line_number}"
        row_id = stable_id("jsonl", source.path, str(line_number))
        line_number += 1
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            problem = str(error).splitlines()[0][:200]
            row = _row(source, "", "", "unknown", len(raw), row_id=row_id, repo="")
            yield row, f"malformed_record: {where}: {problem}"
            continue
        yield _record_row(source, record, where, row_id, options)


def _parquet_rows(source: Source, group: int, options: IngestOptions) -> Iterator[tuple[dict, str | None]]:
    parquet = pq.ParquetFile(source.path)
    first = sum(parquet.metadata.row_group(i).num_rows for i in range(group))
    for offset, record in enumerate(parquet.read_row_group(group).to_pylist()):
        row_number = first + offset
        row_id = stable_id("parquet", source.path, str(row_number))
        yield _record_row(source, record, f"{source.path}:row {row_number}", row_id, options)


def ingest_part(out_dir: str, index: int, sources: Sequence[Source], entries: Sequence[tuple],
                options: IngestOptions | Mapping[str, Any]) -> dict[str, Any]:
    """Read the entries of shard `index` and write part `index` (kept + dropped); returns the shard's stats."""
    if not isinstance(options, IngestOptions):
        options = build_section(IngestOptions, options, prefix="ingest.")
    rows, reasons = [], []
    position = 0
    while position < len(entries):  # consecutive entries of one source are read together
        source_index = entries[position][0]
        end = position
        while end < len(entries) and entries[end][0] == source_index:
            end += 1
        source = sources[source_index]
        group = entries[position:end]
        if source.kind in ("dir", "git"):
            produced = _file_rows(source, group, options)
        else:
            produced = _dump_rows(source, group, options)
        for row, reason in produced:
            rows.append(row)
            reasons.append(reason)
        position = end
    table = base_table(rows, SIZE_SCHEMA)
    kept, dropped = split_rows(table, [reason is None for reason in reasons], reasons)
    return write_part(out_dir, index, kept, dropped)


def _dump_rows(source: Source, entries: Sequence[tuple], options: IngestOptions) -> Iterator[tuple[dict, str | None]]:
    for _, _, _, ref, reason in entries:
        if reason is not None:
            yield _row(source, "", "", "unknown", 0, row_id=stable_id(source.kind, source.path), repo=""), reason
        elif source.kind == "jsonl":
            yield from _jsonl_rows(source, ref, options)
        else:
            try:
                yield from _parquet_rows(source, ref, options)
            except (OSError, pa.ArrowException) as error:
                row_id = stable_id("parquet", source.path, f"group {ref}")
                yield (_row(source, "", "", "unknown", 0, row_id=row_id, repo=""),
                       f"malformed_dump: {source.path}: row group {ref} is unreadable: {error}")



# ------------------------------------------------------------------------------------------ the step
def run_ingest(ctx: StepContext) -> dict[str, Any]:
    values = {key: value for key, value in ctx.options.items() if key != "inputs"}
    options = IngestOptions(**values)
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
                          marker=marker_path(ctx.out_dir, index)))
    return ctx.finish(ctx.run(tasks), {"sources": len(plan.sources), "excluded": plan.excluded})


STEP = StepKind("ingest", "directories, git repositories, jsonl/parquet dumps -> files", run_ingest,
                IngestStepOptions, reads=(), line="files")


__all__ = ["STEP", "IngestOptions", "IngestStepOptions", "IngestPlan", "Source", "check_content", "ingest_part",
           "normalize_language", "plan_ingest", "run_ingest"]

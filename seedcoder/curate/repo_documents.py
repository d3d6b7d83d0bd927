"""Repository documents (curation step 9): a repository's files concatenated in dependency order, split into parts.

    rows = repository_documents("owner/name", [(path, language, text), ...], max_chars=1_000_000)
    rows[0]["text"], rows[0]["file_paths"], rows[0]["part"]

Order. Imports resolved *inside* the repository make edges "file -> the files it needs":
  - Python (`import a.b`, `from a.b import c`, `from .x import y`, `from . import m`): a dotted name is looked up
    against every file's module name under every possible source root (`src/pkg/mod.py` is `src.pkg.mod`,
    `pkg.mod` and `mod`; `pkg/__init__.py` is `pkg`). When several files match, the one whose root contains the
    importing file wins (the deepest such root), else the one with the shortest root, then path order. A
    standard-library name (`import json`) resolves only under a root that contains the importer.
    `from a.b import c` needs module `a.b` and, if it is one, the submodule `a.b.c`. Relative imports resolve
    from the importing file's directory. Imports are found by a line regex (fast; reads Python 2 and broken
    files; an import-looking line inside a docstring counts too).
  - Java: `import a.b.C;`, `import static a.b.C.m;` and `import a.b.*;` against the fully qualified names from
    each file's `package` declaration (a nested class `a.b.C.D` resolves to `a.b.C`), plus same-package classes
    used without an import (a word equal to a sibling file's class name).
  - C, C++, CUDA, Objective-C: `#include "x.h"` (and `#import "x.h"`) relative to the including file first, then
    any repository file whose path ends with `/x.h` (closest directory first). `<...>` includes are not followed.
Files come dependencies first (a topological order of the strongly connected components, Tarjan's algorithm);
among files free to come next, path order decides, so files without edges (every other language) appear in
path order. A cycle (an SCC) is broken by putting its files in path order.

Text. Each part starts with `<repository> owner/name` and introduces every file with a header line
`<file> path/to/file`; the file's text follows, with a newline appended when it does not end in one:

    <repository> owner/name
    <file> pkg/util.py
    def helper(): ...
    <file> pkg/core.py
    from .util import helper

Splitting. Files are packed in order into parts of at most `max_chars` characters (len of the text); a file that
would overflow the current part starts a new one. A file whose block alone exceeds `max_chars` gets a part of
its own and is cut to fit (at its last line boundary within the limit); its full text stays in the file-level
dataset. Each part is an independent row: path "<part N>" (N from 0), `part` = N, `file_paths` = its files in
order, id = sha256 hex of "<repo>\\n<part N>", language = the repository's main language (the language with the
most characters, not counting documentation / data / config formats such as markdown, json or yaml unless
nothing else is there; "unknown" if no file has a known language), source "repo".
"""

from __future__ import annotations

import hashlib
import heapq
import posixpath
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateInputError
from seedcoder.curate.executor import Task
from seedcoder.curate.step import StepContext, StepKind, column

# Not programming languages: they count for the main language only when a repository holds nothing else.
NON_CODE_LANGUAGES = frozenset({
    "markdown", "restructuredtext", "text", "json", "yaml", "toml", "xml", "ini", "csv", "tex", "unknown",
})
C_FAMILY = frozenset({"c", "cpp", "cuda", "objective_c"})
MIN_MAX_CHARS = 256
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))  # Python 3.10+

_PY_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.MULTILINE)
_PY_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]+)", re.MULTILINE)
_PY_COMMENT = re.compile(r"#[^\n]*")
_JAVA_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)\s*;", re.MULTILINE)
_JAVA_IMPORT = re.compile(r"^\s*import\s+(static\s+)?([\w.]+)(\s*\.\s*\*)?\s*;", re.MULTILINE)
_JAVA_WORD = re.compile(r"\b[A-Z]\w*\b")
_C_INCLUDE = re.compile(r'^[ \t]*#[ \t]*(?:include|import)[ \t]*"([^"\n]+)"', re.MULTILINE)


def _show(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _file_block(path: str, text: str) -> str:
    return f"<file> {_show(path)}\n{text}" + ("" if not text or text.endswith("\n") else "\n")


def main_language(files: Sequence[tuple[str, str, str]]) -> str:
    """The language with the most characters (code languages first; see NON_CODE_LANGUAGES); ties: name order."""
    code: dict[str, int] = defaultdict(int)
    other: dict[str, int] = defaultdict(int)
    for _path, language, text in files:
        (other if language in NON_CODE_LANGUAGES else code)[language] += len(text)
    totals = code or {language: size for language, size in other.items() if language != "unknown"}
    if not totals:
        return "unknown"
    return min(totals, key=lambda language: (-totals[language], language))


# ---------------------------------------------------------------- Python


def _python_module_names(path: str) -> list[tuple[str, str]]:
    """(dotted name, root) for each source root the file could sit under: src/pkg/m.py -> src.pkg.m, pkg.m, m."""
    stem = path.rsplit(".", 1)[0]
    parts = stem.split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts:
        return []
    names = []
    for start in range(len(parts)):
        if all(part.isidentifier() for part in parts[start:]):
            names.append((".".join(parts[start:]), "/".join(parts[:start])))
    return names


def _python_imports(text: str) -> list[tuple[int, str, list[str]]]:
    """(level, module, names) per import: `import a.b` -> (0, "a.b", []); `from ..x import y` -> (2, "x", ["y"]).

    A line regex, not `ast`: ten times faster on real corpora, and it reads Python 2 and broken files too; the
    price is that an import-looking line inside a docstring counts as an import.
    """
    imports = []
    for match in _PY_IMPORT.finditer(text):
        for item in match.group(1).split(","):
            words = item.split()
            if words:
                imports.append((0, words[0], []))
    for match in _PY_FROM.finditer(text):
        module = match.group(1)
        level = len(module) - len(module.lstrip("."))
        names_text = _PY_COMMENT.sub("", match.group(2)).strip("()")
        names = [item.split()[0] for item in names_text.split(",") if item.split()]
        imports.append((level, module[level:], [name for name in names if name.isidentifier()]))
    return imports


class _PythonResolver:
    def __init__(self, paths: Sequence[str]):
        self.by_name: dict[str, list[tuple[str, str]]] = defaultdict(list)  # dotted name -> [(root, path)]
        self.by_path_stem: dict[str, str] = {}  # "pkg/x" -> "pkg/x.py", "pkg" -> "pkg/__init__.py"
        for path in paths:
            for name, root in _python_module_names(path):
                self.by_name[name].append((root, path))
            stem = path.rsplit(".", 1)[0]
            stem = stem[: -len("/__init__")] if stem.endswith("/__init__") else stem
            # .py before .pyi (sorted paths): the stub only when there is no module
            self.by_path_stem.setdefault(stem, path)

    def absolute(self, name: str, importer: str) -> str | None:
        candidates = self.by_name.get(name)
        if not candidates:
            return None
        directory = posixpath.dirname(importer)

        def contains(root: str) -> bool:
            return root == "" or directory == root or directory.startswith(root + "/")

        def rank(candidate: tuple[str, str]) -> tuple:
            root, path = candidate
            depth = root.count("/") + 1 if root else 0
            return (0, -depth, path) if contains(root) else (1, depth, path)

        if name.split(".")[0] in _STDLIB:  # `import json` is the standard library's unless a root holding us has one
            candidates = [candidate for candidate in candidates if contains(candidate[0])]
        return min(candidates, key=rank)[1] if candidates else None

    def relative(self, directory: str, dotted: str) -> str | None:
        stem = posixpath.join(directory, *dotted.split(".")) if dotted else directory
        return self.by_path_stem.get(stem)

    def dependencies(self, path: str, text: str) -> set[str]:
        found: set[str] = set()
        for level, module, names in _python_imports(text):
            if level:
                directory = posixpath.dirname(path)
                for _ in range(level - 1):
                    directory = posixpath.dirname(directory)
                found.add(self.relative(directory, module))
                found.update(self.relative(directory, f"{module}.{name}" if module else name) for name in names)
            elif module:
                found.add(self.absolute(module, path))
                found.update(self.absolute(f"{module}.{name}", path) for name in names)
        found.discard(None)
        found.discard(path)
        return found


# ---------------------------------------------------------------- Java


class _JavaResolver:
    def __init__(self, files: Sequence[tuple[str, str]]):
        self.by_name: dict[str, list[str]] = defaultdict(list)  # fully qualified class name -> paths
        self.by_package: dict[str, list[str]] = defaultdict(list)
        self.package_of: dict[str, str] = {}
        for path, text in files:
            match = _JAVA_PACKAGE.search(text)
            package = match.group(1) if match else ""
            class_name = posixpath.basename(path).rsplit(".", 1)[0]
            self.package_of[path] = package
            self.by_name[f"{package}.{class_name}" if package else class_name].append(path)
            self.by_package[package].append(path)

    @staticmethod
    def _closest(candidates: list[str], importer: str) -> str:
        def shared(path: str) -> int:
            return len(posixpath.commonpath([posixpath.dirname(path) or ".", posixpath.dirname(importer) or "."]))

        return min(candidates, key=lambda path: (-shared(path), path))

    def dependencies(self, path: str, text: str) -> set[str]:
        found: set[str] = set()
        for match in _JAVA_IMPORT.finditer(text):
            name = match.group(2)
            if match.group(3) and name in self.by_package:  # import a.b.*; (import static a.b.C.* goes on below)
                found.update(self.by_package[name])
                continue
            parts = name.split(".")
            while len(parts) >= 2:  # a.b.C.member or a.b.C.Inner -> a.b.C
                candidates = self.by_name.get(".".join(parts))
                if candidates:
                    found.add(self._closest(candidates, path))
                    break
                parts.pop()
        package = self.package_of.get(path, "")
        siblings = {posixpath.basename(other).rsplit(".", 1)[0]: other for other in self.by_package.get(package, [])
                    if posixpath.dirname(other) == posixpath.dirname(path)}
        for word in set(_JAVA_WORD.findall(text)) & siblings.keys():
            found.add(siblings[word])
        found.discard(path)
        return found


# ---------------------------------------------------------------- C family


class _IncludeResolver:
    def __init__(self, paths: Sequence[str]):
        self.paths = set(paths)
        self.by_basename: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            self.by_basename[posixpath.basename(path)].append(path)

    def resolve(self, include: str, importer: str) -> str | None:
        directory = posixpath.dirname(importer)
        local = posixpath.normpath(posixpath.join(directory, include))
        if local in self.paths:
            return local
        suffix = posixpath.normpath(include)
        while suffix.startswith("../"):
            suffix = suffix[3:]
        candidates = [path for path in self.by_basename.get(posixpath.basename(suffix), [])
                      if path == suffix or path.endswith("/" + suffix)]
        if not candidates:
            return None

        def rank(path: str) -> tuple:
            shared = len(posixpath.commonpath([posixpath.dirname(path) or ".", directory or "."]))
            return (-shared, path.count("/"), path)

        return min(candidates, key=rank)

    def dependencies(self, path: str, text: str) -> set[str]:
        found = {self.resolve(match.group(1).strip(), path) for match in _C_INCLUDE.finditer(text)}
        found.discard(None)
        found.discard(path)
        return found


# ---------------------------------------------------------------- order


def _strongly_connected_components(nodes: int, edges: list[list[int]]) -> list[list[int]]:
    """Tarjan's algorithm without recursion; components come out dependencies (edge targets) first."""
    index_of = [-1] * nodes
    low = [0] * nodes
    on_stack = [False] * nodes
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for start in range(nodes):
        if index_of[start] != -1:
            continue
        work = [(start, 0)]
        index_of[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack[start] = True
        while work:
            node, next_edge = work[-1]
            if next_edge < len(edges[node]):
                work[-1] = (node, next_edge + 1)
                target = edges[node][next_edge]
                if index_of[target] == -1:
                    index_of[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack[target] = True
                    work.append((target, 0))
                elif on_stack[target]:
                    low[node] = min(low[node], index_of[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def dependency_order(paths: Sequence[str], dependencies: dict[str, set[str]]) -> list[str]:
    """`paths` ordered dependencies first; free choices and cycles (SCCs) in path order. Deterministic."""
    ordered_paths = sorted(paths)
    number = {path: index for index, path in enumerate(ordered_paths)}
    edges = [sorted(number[target] for target in dependencies.get(path, ()) if target in number and target != path)
             for path in ordered_paths]
    components = _strongly_connected_components(len(ordered_paths), edges)
    component_of = [0] * len(ordered_paths)
    for component_index, component in enumerate(components):
        for node in component:
            component_of[node] = component_index
    waiting_on = [set() for _ in components]  # component -> components it still needs
    needed_by: list[set[int]] = [set() for _ in components]
    for node, targets in enumerate(edges):
        for target in targets:
            if component_of[target] != component_of[node]:
                waiting_on[component_of[node]].add(component_of[target])
                needed_by[component_of[target]].add(component_of[node])
    # Kahn's algorithm over the components, the smallest path first among those ready
    ready = [(components[index][0], index) for index in range(len(components)) if not waiting_on[index]]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, index = heapq.heappop(ready)
        order.extend(ordered_paths[node] for node in components[index])
        for dependent in needed_by[index]:
            waiting_on[dependent].discard(index)
            if not waiting_on[dependent]:
                heapq.heappush(ready, (components[dependent][0], dependent))
    return order


def file_dependencies(files: Sequence[tuple[str, str, str]]) -> dict[str, set[str]]:
    """path -> the repository files it imports / includes (Python, Java, C family; other languages: none)."""
    python = [(path, text) for path, language, text in files if language == "python"]
    java = [(path, text) for path, language, text in files if language == "java"]
    c_family = [(path, text) for path, language, text in files if language in C_FAMILY]
    dependencies: dict[str, set[str]] = {}
    if python:
        resolver = _PythonResolver(sorted(path for path, _ in python))
        for path, text in python:
            dependencies[path] = resolver.dependencies(path, text)
    if java:
        java_resolver = _JavaResolver(java)
        for path, text in java:
            dependencies[path] = java_resolver.dependencies(path, text)
    if c_family:
        include_resolver = _IncludeResolver([path for path, _, _ in files])  # a .c may include a .inc or .def
        for path, text in c_family:
            dependencies[path] = include_resolver.dependencies(path, text)
    return dependencies


# ---------------------------------------------------------------- documents


def _cut_to(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    newline = head.rfind("\n")
    return head[: newline + 1] if newline > 0 else head


def _validate(repo: str, files: Sequence[tuple[str, str, str]]) -> None:
    seen: set[str] = set()
    for item in files:
        if not (isinstance(item, (tuple, list)) and len(item) == 3 and all(isinstance(value, str) for value in item)):
            raise CurateInputError(f"{repo}: a file entry must be (path, language, text) strings, got {item!r:.200}")
        path = item[0]
        if not path or path.startswith("/") or "\\" in path or ".." in path.split("/"):
            raise CurateInputError(f"{repo}: file path {path!r} is not a relative posix path inside the repository")
        if path in seen:
            raise CurateInputError(f"{repo}: file path {path!r} appears twice")
        seen.add(path)


def repository_documents(repo: str, files: Sequence[tuple[str, str, str]], *, max_chars: int = 1_000_000) -> list[dict]:
    """A repository's (path, language, text) files -> rows of dependency-ordered parts (see the module docstring)."""
    if not isinstance(max_chars, int) or max_chars < MIN_MAX_CHARS:
        raise ValueError(f"repository_documents: max_chars must be an integer >= {MIN_MAX_CHARS}, got {max_chars!r}")
    if not isinstance(repo, str) or not repo:
        raise CurateInputError(f"repository_documents: repo must be a non-empty name, got {repo!r}")
    _validate(repo, files)
    if not files:
        return []
    text_of = {path: text for path, _language, text in files}
    order = dependency_order(list(text_of), file_dependencies(files))
    language = main_language(files)
    header = f"<repository> {_show(repo)}\n"

    parts: list[list[tuple[str, str]]] = []  # per part: (path, block)
    size = 0
    for path in order:
        block = _file_block(path, text_of[path])
        if len(header) + len(block) > max_chars:  # alone too big: its own part, cut to fit
            file_header = _file_block(path, "")
            block = file_header + _cut_to(block[len(file_header):], max(0, max_chars - len(header) - len(file_header)))
            parts.append([(path, block)])
            size = max_chars  # nothing joins a cut file's part
            continue
        if not parts or size + len(block) > max_chars:
            parts.append([])
            size = len(header)
        parts[-1].append((path, block))
        size += len(block)

    rows = []
    for number, members in enumerate(parts):
        name = f"<part {number}>"
        rows.append({
            "id": hashlib.sha256(f"{repo}\n{name}".encode()).hexdigest(),
            "repo": repo, "path": name, "language": language,
            "text": header + "".join(block for _, block in members),
            "source": "repo",
            "file_paths": [path for path, _ in members],
            "part": number,
        })
    return rows


# ------------------------------------------------------------------------------------------ the step
REPO_DOC_SCHEMA = pa.schema([("file_paths", pa.list_(pa.string())), ("part", pa.int64()), ("score", pa.float32()),
                             ("size_bytes", pa.int64())])


def repo_documents_task(in_dir: str, repos: Sequence[tuple[str, Sequence[tuple[int, int]]]], out_dir: str, index: int,
                        max_chars: int) -> dict[str, Any]:
    """The repository documents of `repos` ((name, [(shard, row), ...]) each) -> part `index`."""
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


def run_repo_documents(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    by_repo: dict[str, list[tuple[int, int]]] = {}
    sizes: dict[str, int] = {}
    for part in parts:
        has_sizes = "size_bytes" in ds.part_columns(in_dir, part)
        table = ds.read_part(in_dir, part, ["repo", "size_bytes"] if has_sizes else ["repo"])
        for row, (repo, size) in enumerate(zip(column(table, "repo"), column(table, "size_bytes"))):
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
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.repo_documents:repo_documents_task",
                  args={"in_dir": in_dir, "repos": group, "out_dir": ctx.out_dir, "index": index,
                        "max_chars": ctx.options["max_chars"]}, marker=ds.marker_path(ctx.out_dir, index))
             for index, group in enumerate(groups)]
    return ctx.finish(ctx.run(tasks), {"repositories": len(by_repo)})


@dataclass
class RepoDocumentsOptions:
    max_chars: int = option(1_000_000, "larger repositories are split into parts of at most this many characters")
    shard_bytes: int = option(64 << 20, "about this many bytes of repositories per output shard")


STEP = StepKind("repo_documents", "repository documents in dependency order", run_repo_documents, RepoDocumentsOptions,
                line="repo")


__all__ = ["NON_CODE_LANGUAGES", "REPO_DOC_SCHEMA", "STEP", "RepoDocumentsOptions", "dependency_order", "file_dependencies",
           "main_language", "repo_documents_task", "repository_documents", "run_repo_documents"]

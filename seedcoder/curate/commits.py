"""Commit samples (curation step 8): every non-merge commit of a git repository -> one code-change training sample.

    for row in commit_samples("path/to/repo", repo="owner/name", max_commits=1000):
        row["text"]          # the rendered sample (template below and in docs/curation_samples.md)
        row["commit_sha"], row["message"], row["changed_paths"], row["target_start"]

    skipped = []                                                   # over-limit commits, with the reason
    rows = list(commit_samples("repo", on_skip=skipped.append))    # skipped[i]["drop_reason"]: "diff_too_large: ..."

As in Seed-Coder (arXiv 2506.03524), a commit becomes a code-change prediction task. The INPUT is the
commit message plus context from the snapshot *before* the commit (the parent commit): its README, its directory
tree and the `context_files` files of that snapshot that BM25 (Okapi, as `rank_bm25.BM25Okapi` computes it)
ranks highest against the message. The TARGET is the changed paths and their diffs. A root commit has an empty
snapshot (no README, tree "(empty)", no files). The template (stable; `target_start` is the character offset of
`<changed_paths>`, so a loader can mask the loss to the target):

    <repository> owner/name
    <commit_message>
    Fix the parser's handling of empty config files
    <readme> README.md                     only when the snapshot has a top-level README
    ...README text (cut at README_MAX_BYTES)...
    <tree>
    README.md                              the snapshot's paths as an indented tree, directories end in "/"
    pkg/
      parser.py
    <file> pkg/parser.py                   one per BM25 pick, best first (each cut at CONTEXT_FILE_MAX_BYTES)
    ...file text...
    <changed_paths>
    M pkg/parser.py                        git's status letter: A added, M modified, D deleted, T type changed,
    R pkg/old.py -> pkg/new.py             R renamed (old -> new)
    <diff> M pkg/parser.py
    @@ -10,6 +10,8 @@ def parse(text):     unified diff hunks, 3 lines of context, git's header lines dropped
    ...
    <diff> D pkg/gone.py                   deletions carry no hunks; binary files, submodules and non-UTF-8 diffs
    <diff> M logo.png                      carry one line saying so, e.g. "(binary file, diff omitted)"
    (binary file, diff omitted)

Every section body ends with a newline. Paths with a newline in their name show it as "\\n".

Limits (a skipped commit is passed to `on_skip` with `drop_reason` "<code>: <detail>"; codes in SKIP_REASONS):
more than `max_changed_files` changed files (too_many_files), diff sections over `max_diff_bytes` UTF-8 bytes
(diff_too_large), only binary / submodule / non-UTF-8 changes (no_text_diff), no change at all (empty_commit),
an empty message (empty_message), and message + target alone over `max_sample_bytes` (sample_too_large). The
context sections then fill the rest of `max_sample_bytes` in priority order, README, tree, BM25 picks best
first: each is kept whole if it still fits, else left out.

Order and ids: HEAD's history without merges, oldest first, parents before children (`git rev-list --no-merges
--date-order --reverse`); `max_commits` keeps the newest that many of them. `id` = sha256 hex of
"<repo>\\n<commit sha>". The output does not depend on the machine: git runs without the user's and the
system's config (GIT_CONFIG_GLOBAL=/dev/null, GIT_CONFIG_NOSYSTEM=1) and with explicit diff options, and it
may not fetch anything (a partial clone's missing objects are an error, not a download).

Errors: a path that is not the top of a git repository, a HEAD that names no commit (an empty repository) or
missing/corrupt objects raise `CurateInputError` with the path and git's message; objects are read lazily, so
a corrupt object can raise after some rows were yielded: treat the exception as a failure of the whole repository.

Git is driven through its CLI (per commit: `git diff-tree` twice and `git ls-tree` of the parent; blobs through
one long-lived `git cat-file --batch`). BM25 statistics are updated from one snapshot to the next
(`SnapshotBM25`), so a commit costs its changed blobs, the tree listing and the query's terms, not the snapshot.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import os
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError, CurateInputError
from seedcoder.curate.executor import Task
from seedcoder.curate.step import NONE_INT, Option, StepContext, StepKind

README_MAX_BYTES = 16_000  # a README longer than this is cut at a line boundary
TREE_MAX_BYTES = 16_000  # the directory tree listing is cut after this many bytes, with a count of the rest
CONTEXT_FILE_MAX_BYTES = 32_000  # each BM25-picked file is cut at this many bytes
CANDIDATE_MAX_BYTES = 1_000_000  # bigger files of the snapshot are not BM25 candidates (generated data, dumps)
MAX_CHANGED_FILES = 50

SKIP_REASONS = ("empty_commit", "empty_message", "too_many_files", "diff_too_large", "no_text_diff", "sample_too_large")

_CUT_NOTE = "(... cut: {} more bytes)\n"
_README_NAMES = ("readme.md", "readme.rst", "readme.txt", "readme")  # preferred first; other README.* after them
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")  # splits snake_case, camelCase and HTTPServer
_DIFF_HEADER = re.compile(rb"^diff --git ", re.MULTILINE)
_HUNK_START = re.compile(rb"^@@", re.MULTILINE)
_SUBMODULE_MODE = b"160000"
_DIFF_OPTIONS = ("-r", "-M", "--root", "--no-commit-id")  # renames found; a root commit diffs against nothing


def _git_env() -> dict[str, str]:
    # GIT_DIR & co. from a caller (a hook, a test runner) would override -C; user/system config would change the diff.
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_ALLOW_PROTOCOL="none",  # no transport allowed: a partial clone must not fetch missing objects
        LC_ALL="C",  # git's messages in English, as quoted in our errors
    )
    return env


class _Git:
    """Runs git in one repository; a failure raises CurateInputError with the path and git's stderr."""

    def __init__(self, repo_dir: str):
        self.repo_dir = repo_dir
        self.env = _git_env()

    def command(self, args: Sequence[str]) -> list[str]:
        # safe.directory=*: repositories of a corpus belong to whoever unpacked them. Ownership guards against a
        # repository's config running programs; our read-only plumbing with --no-ext-diff/--no-textconv runs none.
        return ["git", "-c", "safe.directory=*", "-C", self.repo_dir, *args]

    def run(self, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
        process = subprocess.run(self.command(args), env=self.env, stdin=subprocess.DEVNULL, capture_output=True)
        if check and process.returncode != 0:
            raise self.error(args, process.stderr)
        return process

    def run_limited(self, args: Sequence[str], limit: int) -> bytes | None:
        """stdout of git, or None as soon as it passes `limit` bytes (git is stopped; memory stays bounded)."""
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(self.command(args), env=self.env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=stderr)
            chunks, size = [], 0
            try:
                while chunk := process.stdout.read(1 << 16):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        return None
            finally:
                process.stdout.close()
                if process.poll() is None:
                    process.kill()
                returncode = process.wait()
            if returncode != 0:
                stderr.seek(0)
                raise self.error(args, stderr.read())
        return b"".join(chunks)

    def error(self, args: Sequence[str], stderr: bytes) -> CurateInputError:
        message = stderr.decode("utf-8", "replace").strip() or "no message"
        return CurateInputError(f"{self.repo_dir}: `git {' '.join(args)}` failed: {message}")


class _ObjectReader:
    """Objects through one `git cat-file --batch` process (started on first use)."""

    def __init__(self, git: _Git):
        self.git = git
        self.process: subprocess.Popen | None = None
        self.stderr = None

    def read(self, sha: str) -> tuple[str, bytes]:
        if self.process is None:
            self.stderr = tempfile.TemporaryFile()
            self.process = subprocess.Popen(self.git.command(["cat-file", "--batch"]), env=self.git.env,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        try:
            self.process.stdin.write(sha.encode("ascii") + b"\n")
            self.process.stdin.flush()
            header = self.process.stdout.readline()
        except BrokenPipeError:
            header = b""
        parts = header.split()
        if len(parts) != 3:  # "<sha> missing", or git died on a corrupt object (empty header)
            raise self._failure(sha, header)
        object_type, size = parts[1].decode("ascii"), int(parts[2])
        data = self.process.stdout.read(size + 1)  # the object and its terminating newline
        if len(data) != size + 1:
            raise self._failure(sha, header)
        return object_type, data[:-1]

    def _failure(self, sha: str, header: bytes) -> CurateInputError:
        detail = header.decode("utf-8", "replace").strip()
        if self.process.poll() is not None or not detail:
            self.process.wait()
            self.stderr.seek(0)
            detail = self.stderr.read().decode("utf-8", "replace").strip() or detail or "git exited"
        return CurateInputError(f"{self.git.repo_dir}: cannot read object {sha}: {detail}")

    def close(self) -> None:
        if self.process is not None:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
            self.process.stdout.close()
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.stderr.close()
            self.process = None


@dataclass
class _Change:
    status: str  # git's letter: A, D, M, R, T (C, U, X do not occur with our options)
    old_path: str
    new_path: str
    old_mode: bytes
    new_mode: bytes
    diff: str = ""  # the hunks, or a one-line note
    textual: bool = True  # False: binary, submodule or non-UTF-8 (diff omitted)

    @property
    def label(self) -> str:
        if self.status == "R":
            return f"R {_show(self.old_path)} -> {_show(self.new_path)}"
        return f"{self.status} {_show(self.new_path if self.status != 'D' else self.old_path)}"


@dataclass
class _SnapshotEntry:
    path: str
    mode: bytes
    object_type: bytes
    sha: str
    size: int


def _show(path: str) -> str:
    return path.replace("\r", "\\r").replace("\n", "\\n")


def _decode_path(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _words(text: str) -> list[str]:
    """BM25 terms: identifier parts, lower-cased, 2+ characters ("parseConfigFile" -> parse, config, file)."""
    return [word.lower() for word in _WORD.findall(text) if len(word) > 1]


def _term_frequencies(words: list[str]) -> dict[str, int]:
    frequencies: dict[str, int] = {}
    for word in words:
        frequencies[word] = frequencies.get(word, 0) + 1
    return frequencies


class SnapshotBM25:
    """Okapi BM25 exactly as `rank_bm25.BM25Okapi` scores it (k1 1.5, b 0.75, negative idf floored at 0.25 x the
    average idf), over a corpus that changes by a few documents per commit.

    rank_bm25 rebuilds every term statistic from all tokens of all documents, which per commit costs the whole
    snapshot (seconds for a large repository). Here documents enter and leave (`update`), keeping document
    frequencies, their histogram (for the average idf) and the total length current; scoring touches only the
    query's terms. tests/test_curate_commits.py checks the scores against BM25Okapi's.
    """

    k1, b, epsilon = 1.5, 0.75, 0.25

    def __init__(self):
        self.documents: dict[Hashable, tuple[dict[str, int], int]] = {}  # key -> (term frequencies, length)
        self.document_frequency: dict[str, int] = {}
        self.terms_with_frequency: Counter = Counter()  # document frequency -> number of terms with it
        self.total_length = 0

    def update(self, documents: dict[Hashable, tuple[dict[str, int], int]]) -> None:
        """Make the corpus exactly `documents` (key -> (term frequencies, length)); unchanged keys cost nothing."""
        for key in [key for key in self.documents if key not in documents]:
            self._count(*self.documents.pop(key), sign=-1)
        for key, document in documents.items():
            if key not in self.documents:
                self.documents[key] = document
                self._count(*document, sign=1)

    def _count(self, frequencies: dict[str, int], length: int, sign: int) -> None:
        self.total_length += sign * length
        for word in frequencies:
            before = self.document_frequency.get(word, 0)
            after = before + sign
            if before:
                self.terms_with_frequency[before] -= 1
            if after:
                self.document_frequency[word] = after
                self.terms_with_frequency[after] += 1
            else:
                del self.document_frequency[word]

    def scores(self, keys: Sequence[Hashable], query: Sequence[str]) -> np.ndarray:
        """BM25 score of each document in `keys` (all of them in the corpus) for the query terms."""
        count = len(self.documents)
        scores = np.zeros(len(keys))
        if not count or not self.document_frequency:
            return scores

        def raw_idf(frequency: int) -> float:
            return math.log(count - frequency + 0.5) - math.log(frequency + 0.5)

        # rank_bm25 averages the idf before flooring; sorted: the same sum whatever the update history
        idf_sum = sum(terms * raw_idf(frequency) for frequency, terms in sorted(self.terms_with_frequency.items())
                      if terms)
        floor = self.epsilon * idf_sum / len(self.document_frequency)
        lengths = np.array([self.documents[key][1] for key in keys], dtype=np.float64)
        norms = self.k1 * (1 - self.b + self.b * lengths / (self.total_length / count))
        for word in query:
            frequency = self.document_frequency.get(word)
            if not frequency:
                continue  # in no document: idf 0 in rank_bm25 as well
            idf = raw_idf(frequency)
            idf = floor if idf < 0 else idf
            term_frequencies = np.array([self.documents[key][0].get(word, 0) for key in keys], dtype=np.float64)
            scores += idf * (term_frequencies * (self.k1 + 1) / (term_frequencies + norms))
        return scores


def _is_text(data: bytes) -> bool:
    return b"\0" not in data[:8000]  # git's own binary test


def _cut(text: str, max_bytes: int) -> str:
    """`text` (ending in a newline) cut at the last line boundary within `max_bytes`, with a note of what is left."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    head = data[:max_bytes]
    newline = head.rfind(b"\n")
    head = head[: newline + 1] if newline >= 0 else head
    kept = head.decode("utf-8", "ignore")  # "ignore": a hard cut may split a multi-byte character
    return kept + (_CUT_NOTE.format(len(data) - len(kept.encode("utf-8"))))


def _with_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def render_tree(paths: Sequence[str], max_bytes: int = TREE_MAX_BYTES) -> str:
    """The paths (git tree order: each directory's entries contiguous) as an indented tree, cut after `max_bytes`."""
    lines: list[str] = []
    size = 0
    previous: list[str] = []
    for index, path in enumerate(paths):
        parts = path.split("/")
        directories = parts[:-1]
        common = 0
        while common < min(len(previous), len(directories)) and previous[common] == directories[common]:
            common += 1
        new_lines = [f"{'  ' * depth}{_show(directories[depth])}/\n" for depth in range(common, len(directories))]
        new_lines.append(f"{'  ' * len(directories)}{_show(parts[-1])}\n")
        added = sum(len(line.encode("utf-8")) for line in new_lines)
        if size + added > max_bytes:
            lines.append(f"(... {len(paths) - index} more entries)\n")
            break
        lines.extend(new_lines)
        size += added
        previous = directories
    return "".join(lines) if lines else "(empty)\n"


def _commit_message(data: bytes) -> str:
    """The message of a raw commit object, decoded with the commit's `encoding` header (UTF-8 by default)."""
    headers, _, body = data.partition(b"\n\n")
    encoding = "utf-8"
    for line in headers.split(b"\n"):
        if line.startswith(b"encoding "):
            name = line[len(b"encoding "):].decode("ascii", "replace").strip()
            try:
                encoding = codecs.lookup(name).name
            except LookupError:
                pass  # unknown encoding name: read as UTF-8 with replacement characters
    return body.decode(encoding, "replace")


def _parse_raw(output: bytes) -> list[_Change]:
    """`git diff-tree -r -z --raw` records: ":old_mode new_mode old_sha new_sha status\\0path\\0[new_path\\0]"."""
    fields = output.split(b"\0")
    changes: list[_Change] = []
    index = 0
    while index < len(fields):
        record = fields[index]
        index += 1
        if not record:
            continue
        if not record.startswith(b":"):
            raise ValueError(f"unexpected diff-tree record {record[:80]!r}")
        old_mode, new_mode, _old_sha, _new_sha, status = record[1:].split(b" ")
        letter = status[:1].decode("ascii")
        old_path = _decode_path(fields[index])
        index += 1
        new_path = old_path
        if letter in ("R", "C"):
            new_path = _decode_path(fields[index])
            index += 1
        changes.append(_Change(letter, old_path, new_path, old_mode, new_mode))
    return changes


def _attach_diffs(changes: list[_Change], patch: bytes) -> None:
    """Give each change its hunks from `git diff-tree -p` output (same order; a type change prints two chunks)."""
    starts = [match.start() for match in _DIFF_HEADER.finditer(patch)]
    chunks = [patch[start:end] for start, end in zip(starts, [*starts[1:], len(patch)])]
    expected = sum(2 if change.status == "T" else 1 for change in changes)
    if len(chunks) != expected:
        raise ValueError(f"{len(chunks)} diff chunks for {expected} expected")
    position = 0
    for change in changes:
        count = 2 if change.status == "T" else 1
        own = chunks[position: position + count]
        position += count
        if _SUBMODULE_MODE in (change.old_mode, change.new_mode):
            change.diff, change.textual = "(submodule, diff omitted)\n", False
            continue
        if change.status == "D":
            change.diff = ""
            continue
        bodies = []
        for chunk in own:
            if re.search(rb"^Binary files ", chunk, re.MULTILINE):
                change.diff, change.textual = "(binary file, diff omitted)\n", False
                break
            hunk = _HUNK_START.search(chunk)
            bodies.append(chunk[hunk.start():] if hunk else b"")
        else:
            try:
                change.diff = _with_newline(b"".join(bodies).decode("utf-8"))
            except UnicodeDecodeError:
                change.diff, change.textual = "(not UTF-8, diff omitted)\n", False


class _Repository:
    """Reads one repository: commits, snapshots, blobs; caches BM25 statistics per (path, blob)."""

    def __init__(self, repo_dir: str):
        self.git = _Git(repo_dir)
        self.objects = _ObjectReader(self.git)
        self.bm25 = SnapshotBM25()  # the last BM25'd snapshot's candidate files, keyed (path, blob sha)
        self.not_candidates: set[tuple[str, str]] = set()  # of the same snapshot: binary, huge, non-UTF-8, no terms

    def check(self) -> None:
        repo_dir = self.git.repo_dir
        if not os.path.isdir(repo_dir):
            raise CurateInputError(f"{repo_dir}: not a directory")
        git_dir = self.git.run(["rev-parse", "--absolute-git-dir"]).stdout.decode("utf-8", "replace").strip()
        toplevel = self.git.run(["rev-parse", "--show-toplevel"], check=False)
        top = os.path.realpath(toplevel.stdout.decode("utf-8", "replace").strip()) if toplevel.returncode == 0 else None
        if os.path.realpath(repo_dir) not in (os.path.realpath(git_dir), top):
            # git found an enclosing repository: a plain folder inside a checkout is not that checkout
            raise CurateInputError(f"{repo_dir}: not a git repository (it lies inside the one at {top or git_dir})")
        head = self.git.run(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], check=False)
        if head.returncode != 0:
            detail = head.stderr.decode("utf-8", "replace").strip()
            raise CurateInputError(f"{repo_dir}: HEAD names no commit (an empty repository or a broken HEAD)"
                                   + (f": {detail}" if detail else ""))

    def commits(self, max_commits: int | None) -> list[tuple[str, list[str]]]:
        args = ["rev-list", "--no-merges", "--date-order", "--reverse", "--parents"]
        if max_commits is not None:
            args.append(f"--max-count={max_commits}")
        output = self.git.run([*args, "HEAD"]).stdout.decode("ascii")
        return [(line.split()[0], line.split()[1:]) for line in output.splitlines() if line.strip()]

    def message(self, sha: str) -> str:
        object_type, data = self.objects.read(sha)
        if object_type != "commit":
            raise CurateInputError(f"{self.git.repo_dir}: object {sha} is a {object_type}, not a commit")
        return _commit_message(data).strip()

    def snapshot(self, commit: str | None) -> list[_SnapshotEntry]:
        """The files of `commit` in git's tree order (none for the root commit's parent)."""
        if commit is None:
            return []
        output = self.git.run(["ls-tree", "-r", "-z", "-l", "--full-tree", commit]).stdout
        entries = []
        for record in output.split(b"\0"):
            if not record:
                continue
            meta, _, path = record.partition(b"\t")
            mode, object_type, sha, size = meta.split()
            entries.append(_SnapshotEntry(_decode_path(path), mode, object_type, sha.decode("ascii"),
                                          int(size) if size != b"-" else 0))
        return entries

    def text(self, entry: _SnapshotEntry) -> str | None:
        """The blob as text; None for binary, non-UTF-8, symlinks and submodules."""
        if entry.object_type != b"blob" or entry.mode not in (b"100644", b"100755"):
            return None
        _, data = self.objects.read(entry.sha)
        if not _is_text(data):
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def document_terms(self, entry: _SnapshotEntry) -> tuple[dict[str, int], int] | None:
        """BM25 statistics of a snapshot file: (term frequencies, length), or None for a file that is no candidate."""
        text = None if entry.size > CANDIDATE_MAX_BYTES else self.text(entry)
        words = _words(entry.path) + _words(text) if text is not None else []
        return (_term_frequencies(words), len(words)) if words else None

    def changes(self, sha: str) -> list[_Change]:
        output = self.git.run(["diff-tree", "-z", "--raw", *_DIFF_OPTIONS, sha]).stdout
        try:
            return _parse_raw(output)
        except (ValueError, IndexError) as error:  # git printed something we do not parse: name the commit
            raise CurateInputError(f"{self.git.repo_dir}: cannot read the changes of commit {sha}: {error}") from None

    def attach_diffs(self, sha: str, changes: list[_Change], limit: int) -> bool:
        """Fill each change's diff from the commit's patch; False (nothing filled) when it passes `limit` bytes."""
        # -D: deletions print no preimage; explicit diff options so that nothing depends on config
        patch = self.git.run_limited(["diff-tree", "-p", "-D", "--no-color", "--no-ext-diff", "--no-textconv", "-U3",
                                      "--src-prefix=a/", "--dst-prefix=b/", *_DIFF_OPTIONS, sha], limit)
        if patch is None:
            return False
        try:
            _attach_diffs(changes, patch)
        except ValueError as error:  # git printed something we do not parse: name the commit
            raise CurateInputError(f"{self.git.repo_dir}: cannot split the diff of commit {sha}: {error}") from None
        return True

    def close(self) -> None:
        self.objects.close()


def _readme(repository: _Repository, snapshot: list[_SnapshotEntry]) -> tuple[str, str] | None:
    top = [entry for entry in snapshot if "/" not in entry.path and entry.path.lower().startswith("readme")]
    rank = {name: index for index, name in enumerate(_README_NAMES)}
    top.sort(key=lambda entry: (rank.get(entry.path.lower(), len(rank)), entry.path))
    for entry in top:
        if entry.path.lower() not in rank and not entry.path.lower().startswith("readme."):
            continue  # README_old.txt and the like
        text = repository.text(entry)
        if text is not None and text.strip():
            return entry.path, _cut(_with_newline(text), README_MAX_BYTES)
    return None


def _bm25_picks(repository: _Repository, snapshot: list[_SnapshotEntry], message: str,
                count: int) -> list[tuple[str, str]]:
    """The `count` files of the snapshot with the highest positive BM25 score against the message, best first."""
    if count <= 0 or not snapshot:
        return []
    query = list(dict.fromkeys(_words(message)))  # each message term once: a long message does not repeat-weight
    if not query:
        return []
    bm25 = repository.bm25
    documents: dict[tuple[str, str], tuple[dict[str, int], int]] = {}
    not_candidates: set[tuple[str, str]] = set()
    for entry in snapshot:  # statistics of files the last snapshot had are reused, not recomputed
        key = (entry.path, entry.sha)
        if key in bm25.documents:
            documents[key] = bm25.documents[key]
        elif key in repository.not_candidates:
            not_candidates.add(key)
        elif (terms := repository.document_terms(entry)) is not None:
            documents[key] = terms
        else:
            not_candidates.add(key)
    bm25.update(documents)
    repository.not_candidates = not_candidates
    candidates = [entry for entry in snapshot if (entry.path, entry.sha) in documents]
    if not candidates:
        return []
    scores = bm25.scores([(entry.path, entry.sha) for entry in candidates], query)
    order = sorted((index for index in range(len(candidates)) if scores[index] > 0),
                   key=lambda index: (-scores[index], candidates[index].path))
    picks = []
    for index in order[:count]:
        text = repository.text(candidates[index])
        if text is not None:
            picks.append((candidates[index].path, _cut(_with_newline(text), CONTEXT_FILE_MAX_BYTES)))
    return picks


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _render(repo: str, message: str, context: Sequence[str], target: str) -> str:
    return f"<repository> {_show(repo)}\n<commit_message>\n{_with_newline(message)}" + "".join(context) + target


def commit_samples(
    repo_dir: str,
    *,
    repo: str | None = None,
    max_commits: int | None = None,
    max_diff_bytes: int = 64_000,
    max_sample_bytes: int = 256_000,
    context_files: int = 5,
    max_changed_files: int = MAX_CHANGED_FILES,
    on_skip: Callable[[dict], None] | None = None,
) -> Iterator[dict]:
    """One row per non-merge commit of HEAD's history (oldest first); see the module docstring for the template.

    Rows: id, repo, path (= commit sha), language ("commit"), text, source ("commit"), commit_sha, message,
    changed_paths (list[str], the new path of renames), target_start (offset of "<changed_paths>" in text).
    A commit over a limit is not yielded; `on_skip` gets the same row with text "" and a `drop_reason`
    "<code>: <detail>" (codes: SKIP_REASONS). `repo` defaults to the folder's name (without ".git").
    """
    for name, value, minimum in (("max_diff_bytes", max_diff_bytes, 1), ("max_sample_bytes", max_sample_bytes, 1),
                                 ("context_files", context_files, 0), ("max_changed_files", max_changed_files, 1),
                                 ("max_commits", 0 if max_commits is None else max_commits, 0)):
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"commit_samples: {name} must be an integer >= {minimum}, got {value!r}")
    repo_dir = os.fspath(repo_dir)
    if repo is None:
        name = os.path.basename(os.path.normpath(os.path.abspath(repo_dir)))
        repo = name[: -len(".git")] if name.endswith(".git") and len(name) > 4 else name
    repository = _Repository(repo_dir)
    try:
        repository.check()
        commits = repository.commits(max_commits)
        for sha, parents in commits:
            row, reason = _commit_sample(repository, repo, sha, parents[0] if parents else None, max_diff_bytes,
                                         max_sample_bytes, context_files, max_changed_files)
            if reason is None:
                yield row
            elif on_skip is not None:
                on_skip({**row, "text": "", "target_start": 0, "drop_reason": reason})
    finally:
        repository.close()


def _commit_sample(repository: _Repository, repo: str, sha: str, parent: str | None, max_diff_bytes: int,
                   max_sample_bytes: int, context_files: int, max_changed_files: int) -> tuple[dict, str | None]:
    """(row, None) for a kept commit, (row without text, "<code>: <detail>") for a skipped one."""
    message = repository.message(sha)
    changes = repository.changes(sha)
    row = {
        "id": hashlib.sha256(f"{repo}\n{sha}".encode()).hexdigest(),
        "repo": repo, "path": sha, "language": "commit", "text": "", "source": "commit",
        "commit_sha": sha, "message": message,
        "changed_paths": [change.old_path if change.status == "D" else change.new_path for change in changes],
        "target_start": 0,
    }
    if not changes:
        return row, "empty_commit: the commit changes no file"
    if not message:
        return row, "empty_message: the commit has no message"
    if len(changes) > max_changed_files:
        return row, f"too_many_files: {len(changes)} changed files > max_changed_files={max_changed_files}"
    # git's patch = our hunks + a few header lines per file (paths, modes, index): past this bound, ours is too big
    header_bound = sum(512 + 8 * _size(change.old_path + change.new_path) for change in changes)
    if not repository.attach_diffs(sha, changes, limit=max_diff_bytes + header_bound):
        return row, f"diff_too_large: git's patch is over max_diff_bytes={max_diff_bytes} + its header lines"
    if not any(change.textual for change in changes):
        return row, "no_text_diff: only binary, submodule or non-UTF-8 changes"
    diffs = "".join(f"<diff> {change.label}\n{change.diff}" for change in changes)
    if _size(diffs) > max_diff_bytes:
        return row, f"diff_too_large: {_size(diffs)} bytes > max_diff_bytes={max_diff_bytes}"
    target = "<changed_paths>\n" + "".join(f"{change.label}\n" for change in changes) + diffs
    required = _size(_render(repo, message, [], target))
    if required > max_sample_bytes:
        return row, f"sample_too_large: message + diffs are {required} bytes > max_sample_bytes={max_sample_bytes}"

    snapshot = repository.snapshot(parent)
    readme = _readme(repository, snapshot)
    picks = _bm25_picks(repository, snapshot, message, context_files)
    sections = [  # in priority order, which is also their order in the text
        f"<readme> {_show(readme[0])}\n{readme[1]}" if readme else "",
        "<tree>\n" + render_tree([entry.path for entry in snapshot]),
        *(f"<file> {_show(path)}\n{text}" for path, text in picks),
    ]
    budget = max_sample_bytes - required
    for index, section in enumerate(sections):  # each section whole if it still fits, else left out
        if _size(section) <= budget:
            budget -= _size(section)
        else:
            sections[index] = ""
    text = _render(repo, message, sections, target)
    row["text"] = text
    row["target_start"] = len(text) - len(target)
    return row, None


# ------------------------------------------------------------------------------------------ the step
COMMIT_SCHEMA = pa.schema([("commit_sha", pa.string()), ("message", pa.string()),
                           ("changed_paths", pa.list_(pa.string())), ("target_start", pa.int64()),
                           ("size_bytes", pa.int64())])


def commits_task(out_dir: str, index: int, repo_dir: str, repo: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Commit samples of one repository -> part `index`; a broken repository becomes one dropped row."""
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


def run_commits(ctx: StepContext) -> dict[str, Any]:
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
        tasks.append(Task(key=f"part-{index:05d}", function="seedcoder.curate.commits:commits_task",
                          args={"out_dir": ctx.out_dir, "index": index, "repo_dir": path, "repo": name,
                                "options": ctx.options}, marker=ds.marker_path(ctx.out_dir, index)))
    return ctx.finish(ctx.run(tasks))


def _git_head(path: str) -> str | None:
    try:
        result = subprocess.run(["git", "-c", "safe.directory=*", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=False)
    except FileNotFoundError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


STEP = StepKind("commits", "commit samples (message + context -> changed paths + diffs)", run_commits, {
    "repos": Option([], "git repositories (default in a pipeline: the git repositories ingest read)"),
    "max_commits": Option(None, "newest commits per repository (default: all)", NONE_INT),
    "max_diff_bytes": Option(64_000, "commits with larger diffs are skipped"),
    "max_sample_bytes": Option(256_000, "largest sample; context is cut to fit"),
    "context_files": Option(5, "BM25-picked files of the snapshot"),
    "max_changed_files": Option(50, "commits touching more files are skipped"),
}, reads=(), line="commits")


__all__ = ["COMMIT_SCHEMA", "SKIP_REASONS", "STEP", "SnapshotBM25", "commit_samples", "commits_task", "render_tree",
           "run_commits"]

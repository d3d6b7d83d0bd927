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

Order and ids: HEAD's history without merges, oldest first, parents before children; `max_commits` keeps the
newest that many of them. `id` = sha256 hex of "<repo>\\n<commit sha>". The history is read by
`curate/git_history.py` (the git CLI, without the user's or the system's config, never fetching), so the output
does not depend on the machine.

Errors: a path that is not the top of a git repository, a HEAD that names no commit (an empty repository) or
missing/corrupt objects raise `CurateInputError` with the path and git's message; objects are read lazily, so
a corrupt object can raise after some rows were yielded: treat the exception as a failure of the whole repository.

BM25 statistics are updated from one snapshot to the next (`SnapshotBM25`), so a commit costs its changed blobs,
the tree listing and the query's terms, not the snapshot.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError, CurateInputError
from seedcoder.curate.executor import Task
from seedcoder.curate.git_history import Change, Repository, SnapshotEntry, git_head
from seedcoder.curate.step import StepContext, StepKind

README_MAX_BYTES = 16_000  # a README longer than this is cut at a line boundary
TREE_MAX_BYTES = 16_000  # the directory tree listing is cut after this many bytes, with a count of the rest
CONTEXT_FILE_MAX_BYTES = 32_000  # each BM25-picked file is cut at this many bytes
CANDIDATE_MAX_BYTES = 1_000_000  # bigger files of the snapshot are not BM25 candidates (generated data, dumps)
MAX_CHANGED_FILES = 50

SKIP_REASONS = ("empty_commit", "empty_message", "too_many_files", "diff_too_large", "no_text_diff", "sample_too_large")

_CUT_NOTE = "(... cut: {} more bytes)\n"
_README_NAMES = ("readme.md", "readme.rst", "readme.txt", "readme")  # preferred first; other README.* after them
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")  # splits snake_case, camelCase and HTTPServer


def _show(path: str) -> str:
    return path.replace("\r", "\\r").replace("\n", "\\n")


def _label(change: Change) -> str:
    """A change as the sample shows it: "M path", "R old -> new" (a deletion shows the old path)."""
    if change.status == "R":
        return f"R {_show(change.old_path)} -> {_show(change.new_path)}"
    return f"{change.status} {_show(change.new_path if change.status != 'D' else change.old_path)}"


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


@dataclass
class _BM25Cache:
    """The last BM25'd snapshot of a repository: its candidate files in `bm25`, keyed (path, blob sha), and the
    files that are no candidate (binary, huge, non-UTF-8, no terms); the next commit's snapshot reuses both."""

    bm25: SnapshotBM25 = field(default_factory=SnapshotBM25)
    not_candidates: set[tuple[str, str]] = field(default_factory=set)


def _document_terms(repository: Repository, entry: SnapshotEntry) -> tuple[dict[str, int], int] | None:
    """BM25 statistics of a snapshot file: (term frequencies, length), or None for a file that is no candidate."""
    text = None if entry.size > CANDIDATE_MAX_BYTES else repository.text(entry)
    words = _words(entry.path) + _words(text) if text is not None else []
    return (_term_frequencies(words), len(words)) if words else None


def _readme(repository: Repository, snapshot: list[SnapshotEntry]) -> tuple[str, str] | None:
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


def _bm25_picks(repository: Repository, cache: _BM25Cache, snapshot: list[SnapshotEntry], message: str,
                count: int) -> list[tuple[str, str]]:
    """The `count` files of the snapshot with the highest positive BM25 score against the message, best first."""
    if count <= 0 or not snapshot:
        return []
    query = list(dict.fromkeys(_words(message)))  # each message term once: a long message does not repeat-weight
    if not query:
        return []
    bm25 = cache.bm25
    documents: dict[tuple[str, str], tuple[dict[str, int], int]] = {}
    not_candidates: set[tuple[str, str]] = set()
    for entry in snapshot:  # statistics of files the last snapshot had are reused, not recomputed
        key = (entry.path, entry.sha)
        if key in bm25.documents:
            documents[key] = bm25.documents[key]
        elif key in cache.not_candidates:
            not_candidates.add(key)
        elif (terms := _document_terms(repository, entry)) is not None:
            documents[key] = terms
        else:
            not_candidates.add(key)
    bm25.update(documents)
    cache.not_candidates = not_candidates
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
    repository = Repository(repo_dir)
    cache = _BM25Cache()
    try:
        repository.check()
        commits = repository.commits(max_commits)
        for sha, parents in commits:
            row, reason = _commit_sample(repository, cache, repo, sha, parents[0] if parents else None, max_diff_bytes,
                                         max_sample_bytes, context_files, max_changed_files)
            if reason is None:
                yield row
            elif on_skip is not None:
                on_skip({**row, "text": "", "target_start": 0, "drop_reason": reason})
    finally:
        repository.close()


def _commit_sample(repository: Repository, cache: _BM25Cache, repo: str, sha: str, parent: str | None,
                   max_diff_bytes: int, max_sample_bytes: int, context_files: int,
                   max_changed_files: int) -> tuple[dict, str | None]:
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
    diffs = "".join(f"<diff> {_label(change)}\n{change.diff}" for change in changes)
    if _size(diffs) > max_diff_bytes:
        return row, f"diff_too_large: {_size(diffs)} bytes > max_diff_bytes={max_diff_bytes}"
    target = "<changed_paths>\n" + "".join(f"{_label(change)}\n" for change in changes) + diffs
    required = _size(_render(repo, message, [], target))
    if required > max_sample_bytes:
        return row, f"sample_too_large: message + diffs are {required} bytes > max_sample_bytes={max_sample_bytes}"

    snapshot = repository.snapshot(parent)
    readme = _readme(repository, snapshot)
    picks = _bm25_picks(repository, cache, snapshot, message, context_files)
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
    heads = [git_head(path) for path in repos]
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


@dataclass
class CommitsOptions:
    repos: list[str] = option([], "git repositories (default in a pipeline: the git repositories ingest read)")
    max_commits: int | None = option(None, "newest commits per repository (default: all)")
    max_diff_bytes: int = option(64_000, "commits with larger diffs are skipped")
    max_sample_bytes: int = option(256_000, "largest sample; context is cut to fit")
    context_files: int = option(5, "BM25-picked files of the snapshot")
    max_changed_files: int = option(50, "commits touching more files are skipped")


STEP = StepKind("commits", "commit samples (message + context -> changed paths + diffs)", run_commits, CommitsOptions,
                reads=(), line="commits")


__all__ = ["COMMIT_SCHEMA", "SKIP_REASONS", "STEP", "CommitsOptions", "SnapshotBM25", "commit_samples", "commits_task",
           "render_tree", "run_commits"]

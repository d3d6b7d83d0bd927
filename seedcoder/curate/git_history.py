"""Reading a git repository's history through the git CLI: commits, their messages and changes (with diffs), the
files of a snapshot and their blobs. `curate/commits.py` turns these into commit samples.

    repository = Repository("path/to/repo")
    repository.check()                                   # CurateInputError unless it is the top of a git repository
    for sha, parents in repository.commits(max_commits=None):            # oldest first, no merges
        changes = repository.changes(sha)                # [Change(status "M", old_path, new_path, ...)]
        repository.attach_diffs(sha, changes, limit=64_000)              # False: the patch is over the limit
        files = repository.snapshot(parents[0] if parents else None)     # [SnapshotEntry(path, mode, sha, ...)]
    repository.close()

Order: HEAD's history without merges, oldest first, parents before children (`git rev-list --no-merges
--date-order --reverse`); `max_commits` keeps the newest that many of them. The output does not depend on the
machine: git runs without the user's and the system's config (GIT_CONFIG_GLOBAL=/dev/null, GIT_CONFIG_NOSYSTEM=1)
and with explicit diff options, and it may not fetch anything (a partial clone's missing objects are an error, not
a download). Per commit: `git diff-tree` twice and `git ls-tree` of the parent; blobs through one long-lived
`git cat-file --batch`.

Errors: a path that is not the top of a git repository, a HEAD that names no commit (an empty repository) or
missing/corrupt objects raise `CurateInputError` with the path and git's message; objects are read lazily, so a
corrupt object can raise after some commits were read.
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from seedcoder.curate.errors import CurateInputError

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
class Change:
    status: str  # git's letter: A, D, M, R, T (C, U, X do not occur with our options)
    old_path: str
    new_path: str
    old_mode: bytes
    new_mode: bytes
    diff: str = ""  # the hunks, or a one-line note
    textual: bool = True  # False: binary, submodule or non-UTF-8 (diff omitted)


@dataclass
class SnapshotEntry:
    path: str
    mode: bytes
    object_type: bytes
    sha: str
    size: int


def _decode_path(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _is_text(data: bytes) -> bool:
    return b"\0" not in data[:8000]  # git's own binary test


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


def _parse_raw(output: bytes) -> list[Change]:
    """`git diff-tree -r -z --raw` records: ":old_mode new_mode old_sha new_sha status\\0path\\0[new_path\\0]"."""
    fields = output.split(b"\0")
    changes: list[Change] = []
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
        changes.append(Change(letter, old_path, new_path, old_mode, new_mode))
    return changes


def _attach_diffs(changes: list[Change], patch: bytes) -> None:
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
                diff = b"".join(bodies).decode("utf-8")
            except UnicodeDecodeError:
                change.diff, change.textual = "(not UTF-8, diff omitted)\n", False
            else:  # every diff ends in a newline, as every section of a sample does
                change.diff = diff if not diff or diff.endswith("\n") else diff + "\n"


class Repository:
    """Reads one repository: commits, their messages and changes, snapshots, blobs."""

    def __init__(self, repo_dir: str):
        self.git = _Git(repo_dir)
        self.objects = _ObjectReader(self.git)

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

    def snapshot(self, commit: str | None) -> list[SnapshotEntry]:
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
            entries.append(SnapshotEntry(_decode_path(path), mode, object_type, sha.decode("ascii"),
                                          int(size) if size != b"-" else 0))
        return entries

    def text(self, entry: SnapshotEntry) -> str | None:
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

    def changes(self, sha: str) -> list[Change]:
        output = self.git.run(["diff-tree", "-z", "--raw", *_DIFF_OPTIONS, sha]).stdout
        try:
            return _parse_raw(output)
        except (ValueError, IndexError) as error:  # git printed something we do not parse: name the commit
            raise CurateInputError(f"{self.git.repo_dir}: cannot read the changes of commit {sha}: {error}") from None

    def attach_diffs(self, sha: str, changes: list[Change], limit: int) -> bool:
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


def git_head(path: str) -> str | None:
    """The commit HEAD names in the repository at `path`, or None (no git, no commit)."""
    try:
        result = subprocess.run(["git", "-c", "safe.directory=*", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=False)
    except FileNotFoundError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


__all__ = ["Change", "Repository", "SnapshotEntry", "git_head"]

"""Step 2, exact dedup: SHA-256 of each file's content, at repository level and at file level.

    digests = content_digests(texts)                            # [32-byte SHA-256 digest of each text]
    keep, reasons = exact_duplicates(digests, repos, ids, paths)  # over rows in their stable (dataset) order

Repository level first: a repository whose set of file digests equals that of a repository seen earlier is
dropped whole ("duplicate_repository: same files as repository R"); rows without a repository (repo "") take
no part in it. Then file level over the rows that remain: the first row with a digest is kept, every later one
is dropped ("exact_duplicate: same content as ID (REPO/PATH)"). "First" is the dataset's order: shard by
shard, row by row, which ingest makes deterministic, so the kept copy is the same on every run.

In the pipeline this is a global step (`seedcoder.curate.step.run_global_step`): `hash_part` writes each
shard's digests to `_work/` (resumable), `decide` reads all of them and returns each shard's decisions (keep,
reason and the `sha256` column the kept rows gain). Memory: about 100 bytes per row in `decide`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate.dataset import DROP_REASON, read_part, read_table, write_table
from seedcoder.curate.step import StepContext, StepKind, run_global_step


def content_digests(texts: Sequence[str]) -> list[bytes]:
    """SHA-256 of each text's UTF-8 bytes (32-byte digests)."""
    return [hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest() for text in texts]


def duplicate_repositories(digests: Sequence[bytes], repos: Sequence[str]) -> dict[str, str]:
    """{repository: the earlier repository with exactly the same set of file digests} (repo "" is skipped)."""
    by_repo: dict[str, set[bytes]] = {}
    for digest, repo in zip(digests, repos):
        if repo:
            by_repo.setdefault(repo, set()).add(digest)
    seen: dict[bytes, str] = {}
    duplicates = {}
    for repo, members in by_repo.items():  # dicts keep first-appearance order: the earlier repository wins
        fingerprint = hashlib.sha256(b"".join(sorted(members))).digest()
        if fingerprint in seen:
            duplicates[repo] = seen[fingerprint]
        else:
            seen[fingerprint] = repo
    return duplicates


def exact_duplicates(digests: Sequence[bytes], repos: Sequence[str], ids: Sequence[str],
                     paths: Sequence[str] | None = None, *, repo_level: bool = True,
                     file_level: bool = True) -> tuple[np.ndarray, list[str | None]]:
    """(keep flags, drop reasons) for rows in dataset order; see the module docstring."""
    count = len(digests)
    if not len(repos) == len(ids) == count or (paths is not None and len(paths) != count):
        raise ValueError(f"exact_duplicates: {count} digests but {len(repos)} repos, {len(ids)} ids")
    keep = np.ones(count, dtype=bool)
    reasons: list[str | None] = [None] * count
    if repo_level:
        duplicates = duplicate_repositories(digests, repos)
        for row, repo in enumerate(repos):
            if repo in duplicates:
                keep[row] = False
                reasons[row] = f"duplicate_repository: same files as repository {duplicates[repo]}"
    if file_level:
        first: dict[bytes, int] = {}
        for row in np.flatnonzero(keep).tolist():
            original = first.setdefault(digests[row], row)
            if row != original:
                keep[row] = False
                where = f" ({repos[original]}/{paths[original]})" if paths is not None else ""
                reasons[row] = f"exact_duplicate: same content as {ids[original]}{where}"
    return keep, reasons


# ------------------------------------------------------------------------------------------ the step
def hash_part(in_dir: str, index: int, out_path: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map phase: shard `index` of `in_dir` -> `out_path` (Parquet: sha256, id, repo, path)."""
    table = read_part(in_dir, index, ["id", "repo", "path", "text"])
    digests = content_digests(table.column("text").to_pylist())
    result = pa.table({"sha256": pa.array(digests, pa.binary(32)), "id": table.column("id"),
                       "repo": table.column("repo"), "path": table.column("path")})
    write_table(out_path, result)
    return {"rows": table.num_rows}


def decide(map_paths: Sequence[str], parts: Sequence[int], options: Mapping[str, Any]
           ) -> tuple[list[pa.Table], dict[str, Any]]:
    """Reduce phase: every shard's digests -> per-shard decisions (keep, drop_reason, sha256) and a summary."""
    tables = [read_table(path) for path in map_paths]
    sizes = [table.num_rows for table in tables]
    digests = [digest for table in tables for digest in table.column("sha256").to_pylist()]
    ids = [value for table in tables for value in table.column("id").to_pylist()]
    repos = [value or "" for table in tables for value in table.column("repo").to_pylist()]
    paths = [value or "" for table in tables for value in table.column("path").to_pylist()]
    keep, reasons = exact_duplicates(digests, repos, ids, paths, repo_level=bool(options.get("repo_level", True)),
                                     file_level=bool(options.get("file_level", True)))
    decisions, start = [], 0
    for size in sizes:
        stop = start + size
        decisions.append(pa.table({
            "keep": pa.array(keep[start:stop]),
            DROP_REASON: pa.array(reasons[start:stop], pa.string()),
            "sha256": pa.array([digest.hex() for digest in digests[start:stop]], pa.string()),
        }))
        start = stop
    summary = {"rows": len(ids), "unique_digests": len(set(digests)),
               "duplicate_repositories": len({r for r in reasons if r and r.startswith("duplicate_repository")})}
    return decisions, summary



def run_exact_dedup(ctx: StepContext) -> dict[str, Any]:
    return run_global_step(ctx, "seedcoder.curate.exact_dedup:hash_part", decide)


@dataclass
class ExactDedupOptions:
    repo_level: bool = option(True, "drop a repository whose set of file digests equals an earlier one's")
    file_level: bool = option(True, "drop every file whose content an earlier file has")


STEP = StepKind("exact_dedup", "SHA-256 exact dedup, repository level then file level", run_exact_dedup,
                ExactDedupOptions)


__all__ = ["STEP", "ExactDedupOptions", "content_digests", "decide", "duplicate_repositories", "exact_duplicates", "hash_part",
           "run_exact_dedup"]

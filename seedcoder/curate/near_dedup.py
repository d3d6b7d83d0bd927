"""Near dedup (curation step 3): MinHash signatures, LSH banding and union-find clusters, in C++ (seedcoder._minhash).

    sigs = minhash_signatures(texts)                 # (n, 256) uint32; shards' signatures can be np.concatenate'd
    clusters = near_duplicate_clusters(sigs, threshold=0.8)
    keep = clusters == np.arange(len(clusters))      # one survivor per cluster: its lowest row index

Shingles are **word 5-grams after normalization**, as in datatrove and the BigCode / DeepSeek-Coder / Seed-Coder
style pipelines: a word is a maximal run of ASCII letters, digits and `_` or of non-ASCII characters, ASCII letters
are lower-cased, everything else (whitespace, punctuation, operators) separates words. Word shingles ignore
formatting (indentation, spacing, line breaks, quote style) that character shingles would count as differences, the
0.7-0.85 thresholds of those pipelines refer to word shingles, and a text has ~5x fewer of them than character
5-grams to hash. A text of 1-4 words is one shingle of all its words; a text without words has no shingles, gets
the all-0xFFFFFFFF signature and is never a near-duplicate of anything (exact dedup handles identical ones).
Unicode is not case-folded or NFC-normalized.

Signatures are datasketch's (2.x) default scheme, bit for bit: MinHash(num_perm, seed, hashfunc=shingle_hash)
updated with `shingles(text)` has the same `hashvalues` as our row. Each shingle's UTF-8 bytes are hashed once with
MurmurHash3_x86_32 (seed 0), pre-mixed with the MurmurHash3 finalizer, then permuted num_perm times as
(a*h + b) mod 2^32 with odd a (a bijection), keeping the minimum; a and b come from numpy's RandomState(seed)
exactly as datasketch draws them. The C++ kernel does this for 32 permutations at a time in AVX2 registers (chosen
at run time; a generic loop elsewhere), streams each text without copying it, and releases the GIL. dtype: uint32.

Clustering: bands x rows of the first bands*rows values, chosen by `lsh_bands_rows` to minimize the false
positive + false negative probability (equal weights) as datasketch's MinHashLSH does; rows sharing one band's
values exactly are candidates. With `verify=True` (the default) a candidate pair is joined only if its estimated
Jaccard (share of equal values over all num_perm) is >= threshold. This removes the LSH false positives below the
threshold: 8% of the candidate pairs at 0.8 on the planted corpus of tests/test_near_dedup.py, where pairwise
precision against exact Jaccard goes from 0.90 to 0.99 and recall from 0.99 to 0.98 (the estimate's own noise near
the threshold). Clusters are the connected components (union-find) of the joined pairs, so a chain A~B~C is one
cluster even if A and C are not similar. `verify=False` gives datasketch's MinHashLSH candidates unfiltered.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.step import StepContext, StepKind, run_global_step, split_decisions

try:
    from seedcoder import _minhash
except ImportError as error:  # the extension is built by setup.py; the pipeline's other steps run without it
    _minhash = None
    _MINHASH_ERROR = error


def _kernel():
    if _minhash is None:
        raise ImportError("seedcoder._minhash (C++, csrc/minhash/) is not built: in the repository run "
                          "`pip install --no-build-isolation -e .` or `python setup.py build_ext --inplace`"
                          ) from _MINHASH_ERROR
    return _minhash

SIGNATURE_DTYPE = np.uint32
EMPTY_VALUE = 0xFFFFFFFF  # every value of a text without shingles


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) uint32 permutation parameters: datasketch's affine32 draw (a odd), read-only and cached."""
    if isinstance(num_perm, bool) or not isinstance(num_perm, (int, np.integer)) or num_perm < 1:
        raise ValueError(f"num_perm must be an integer >= 1, got {num_perm!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return _permutations(int(num_perm), int(seed))


@functools.lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.RandomState(seed)  # RandomState's stream is frozen across numpy versions (NEP 19)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def _check_ngram(ngram) -> int:
    if isinstance(ngram, bool) or not isinstance(ngram, (int, np.integer)) or ngram < 1:
        raise ValueError(f"ngram must be an integer >= 1, got {ngram!r}")
    return int(ngram)


def minhash_signatures(texts: Sequence[str], *, num_perm: int = 256, ngram: int = 5, seed: int = 1) -> np.ndarray:
    """MinHash signatures of `texts` (a sequence of str, or a pyarrow string array): uint32, (len(texts), num_perm).

    A row depends only on its own text, so signatures of separate shards can be concatenated. A non-str item
    raises TypeError naming it (`texts[3] must be str, got NoneType`).
    """
    ngram = _check_ngram(ngram)
    a, b = permutations(num_perm, seed)
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"texts must be a sequence of str, got a single {type(texts).__name__}")
    if hasattr(texts, "to_pylist"):  # a pyarrow (chunked) array: nulls become None and are reported by index
        texts = texts.to_pylist()
    if not isinstance(texts, (list, tuple)):
        try:
            texts = list(texts)
        except TypeError:
            raise TypeError(f"texts must be a sequence of str, got {type(texts).__name__}") from None
    out = np.empty((len(texts), len(a)), dtype=SIGNATURE_DTYPE)
    _kernel().signatures(texts, ngram, a, b, out)
    return out


def shingles(text: str, ngram: int = 5) -> list[bytes]:
    """The shingles of `text` as UTF-8 bytes (words joined by one space), in text order, repeats kept."""
    return _kernel().shingles(text, _check_ngram(ngram))


def shingle_hash(shingle: bytes) -> int:
    """MurmurHash3_x86_32 (seed 0) of a shingle: the `hashfunc` that makes datasketch's MinHash equal ours."""
    return _kernel().murmur3_32(shingle)


def estimated_jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """Share of equal values of two signatures (datasketch's MinHash.jaccard)."""
    first, second = np.asarray(first), np.asarray(second)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"need two signatures of the same length, got shapes {first.shape} and {second.shape}")
    return float(np.count_nonzero(first == second)) / float(len(first))


def _gauss_legendre(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1] by Newton's method on the Legendre recurrence (elementwise numpy:
    np.polynomial.legendre.leggauss goes through LAPACK, whose threads take ~100 ms on a busy machine)."""
    index = np.arange(1, count + 1)
    nodes = np.cos(np.pi * (index - 0.25) / (count + 0.5))  # the classic starting guesses, one per root
    for _ in range(100):
        previous, current = np.ones_like(nodes), nodes.copy()
        for degree in range(2, count + 1):
            previous, current = current, ((2 * degree - 1) * nodes * current - (degree - 1) * previous) / degree
        derivative = count * (nodes * current - previous) / (nodes * nodes - 1)
        step = current / derivative
        nodes = nodes - step
        if np.max(np.abs(step)) < 1e-15:
            break
    return nodes, 2 / ((1 - nodes * nodes) * derivative * derivative)


@functools.lru_cache(maxsize=64)
def _bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """The (bands, rows), bands * rows <= num_perm, of least 0.5 * P(false positive) + 0.5 * P(false negative).

    The integrands 1-(1-s^r)^b and (1-s^r)^b are polynomials of degree r*b <= num_perm, so Gauss-Legendre with
    num_perm//2 + 1 nodes integrates them exactly up to rounding (datasketch uses scipy's adaptive quad). Pairs are
    listed in datasketch's order (bands, then rows, ascending) and the first minimum wins, as there.
    """
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)
    bands, rows = pairs[:, :1], pairs[:, 1:]
    nodes, weights = _gauss_legendre(num_perm // 2 + 1)
    below = (nodes + 1) * threshold / 2  # the nodes mapped to [0, threshold] and to [threshold, 1]
    above = threshold + (nodes + 1) * (1 - threshold) / 2
    # P(not a candidate) = (1 - s^r)^b, as exp(b * log1p(-exp(r * log s))): vectorized exp/log beat float powers
    miss_below = np.exp(bands * np.log1p(-np.exp(rows * np.log(below))))
    miss_above = np.exp(bands * np.log1p(-np.exp(rows * np.log(above))))
    false_positive = threshold / 2 * ((1 - miss_below) * weights).sum(axis=1)  # sum, not @: no BLAS threads
    false_negative = (1 - threshold) / 2 * (miss_above * weights).sum(axis=1)
    best = int(np.argmin(0.5 * false_positive + 0.5 * false_negative))
    return int(pairs[best, 0]), int(pairs[best, 1])


def lsh_bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimizing the false positive + false negative probability at `threshold` (equal weights),
    as datasketch's MinHashLSH chooses them; e.g. (17, 15) for 0.8 and 256 permutations."""
    if not isinstance(threshold, (int, float, np.floating)) or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be in (0, 1) (the paper uses 0.7-0.85), got {threshold!r}")
    if isinstance(num_perm, bool) or not isinstance(num_perm, (int, np.integer)) or num_perm < 1:
        raise ValueError(f"num_perm must be an integer >= 1, got {num_perm!r}")
    return _bands_rows(float(threshold), int(num_perm))


def _as_signatures(signatures) -> np.ndarray:
    array = np.asarray(signatures)
    if array.ndim != 2:
        raise ValueError(f"signatures must be a 2-D array (rows, num_perm), got shape {array.shape}")
    if array.shape[1] < 1:
        raise ValueError("signatures must have at least one value per row")
    if array.dtype == SIGNATURE_DTYPE:
        return np.ascontiguousarray(array)
    if array.dtype.kind not in "iu":
        raise TypeError(f"signatures must be unsigned integers (uint32 from minhash_signatures), got {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > EMPTY_VALUE):
        raise ValueError(f"signature values must fit in uint32 (minhash_signatures' dtype), got range "
                         f"[{int(array.min())}, {int(array.max())}]")
    return np.ascontiguousarray(array, dtype=SIGNATURE_DTYPE)


def near_duplicate_clusters(signatures: np.ndarray, *, threshold: float = 0.8, bands: int | None = None,
                            rows: int | None = None, verify: bool = True) -> np.ndarray:
    """Cluster representative of every row (int64): the lowest row index of its cluster; row i is kept iff
    result[i] == i. bands and rows default to `lsh_bands_rows(threshold, num_perm)`; give both or neither."""
    array = _as_signatures(signatures)
    num_perm = array.shape[1]
    if (bands is None) != (rows is None):
        raise ValueError(f"give both bands and rows or neither, got bands={bands!r}, rows={rows!r}")
    if bands is None:
        bands, rows = lsh_bands_rows(threshold, num_perm)
    else:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1) (the paper uses 0.7-0.85), got {threshold!r}")
        for name, value in (("bands", bands), ("rows", rows)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if bands * rows > num_perm:
            raise ValueError(f"bands * rows = {bands} * {rows} exceeds the {num_perm} values of a signature")
    out = np.empty(len(array), dtype=np.int64)
    _kernel().cluster(array, num_perm, int(bands), int(rows), bool(verify), float(threshold), out)
    return out


# ------------------------------------------------------------------------------------------ the step
def near_dedup_map(in_dir: str, index: int, out_path: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map phase: MinHash signatures of shard `index` (with id, repo, path) -> out_path."""
    table = ds.read_part(in_dir, index, ["id", "repo", "path", "text"])
    signatures = np.asarray(minhash_signatures(table.column("text").to_pylist(), num_perm=options["num_perm"],
                                               ngram=options["ngram"], seed=options["seed"]))
    if signatures.ndim != 2 or signatures.shape[0] != table.num_rows:
        raise CurateStateError(f"minhash_signatures returned shape {signatures.shape} for {table.num_rows} texts")
    flat = pa.array(signatures.reshape(-1))
    result = pa.table({"id": table.column("id"), "repo": table.column("repo"), "path": table.column("path"),
                       "signature": pa.FixedSizeListArray.from_arrays(flat, signatures.shape[1])})
    ds.write_table(out_path, result)
    return {"rows": table.num_rows}


def _clusters(signatures: np.ndarray, threshold: float, options: Mapping[str, Any]) -> np.ndarray:
    if len(signatures) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(near_duplicate_clusters(signatures, threshold=threshold, bands=options["bands"],
                                              rows=options["rows"]), dtype=np.int64)


def near_dedup_reduce(map_paths: Sequence[str], parts: Sequence[int], options: Mapping[str, Any]
                      ) -> tuple[list[pa.Table], dict[str, Any]]:
    """Reduce phase: every shard's signatures -> per-shard decisions (repository level, then file level)."""
    tables = [ds.read_table(path) for path in map_paths]
    sizes = [table.num_rows for table in tables]
    ids = [value for table in tables for value in table.column("id").to_pylist()]
    repos = [value or "" for table in tables for value in table.column("repo").to_pylist()]
    paths = [value or "" for table in tables for value in table.column("path").to_pylist()]
    width = options["num_perm"]
    chunks = [table.column("signature").combine_chunks().flatten().to_numpy().reshape(-1, width) for table in tables
              if table.num_rows]
    signatures = np.concatenate(chunks) if chunks else np.zeros((0, width), dtype=np.uint64)
    count = len(ids)
    keep = np.ones(count, dtype=bool)
    reasons: list[str | None] = [None] * count
    cluster_size = np.ones(count, dtype=np.int64)
    duplicate_repos = 0
    if options["repo_level"]:
        names = list(dict.fromkeys(repo for repo in repos if repo))  # first-appearance order: earlier repo wins
        if len(names) > 1:
            position = {name: i for i, name in enumerate(names)}
            repo_rows = np.array([position.get(repo, -1) for repo in repos], dtype=np.int64)
            # MinHash of a union = element-wise minimum of the members' MinHashes: a repository's signature
            members = np.flatnonzero(repo_rows >= 0)
            order = members[np.argsort(repo_rows[members], kind="stable")]
            starts = np.searchsorted(repo_rows[order], np.arange(len(names)))
            repo_signatures = np.minimum.reduceat(signatures[order], starts, axis=0)
            representative = _clusters(repo_signatures, options["repo_threshold"] or options["threshold"], options)
            for row, code in enumerate(repo_rows.tolist()):
                if code >= 0 and representative[code] != code:
                    keep[row] = False
                    reasons[row] = f"near_duplicate_repository: of repository {names[representative[code]]}"
            duplicate_repos = int(np.sum(representative != np.arange(len(names))))
    clusters = 0
    if options["file_level"]:
        remaining = np.flatnonzero(keep)
        representative = _clusters(signatures[remaining], options["threshold"], options)
        clusters = int(np.sum(representative == np.arange(len(remaining))))
        sizes_of = np.bincount(representative, minlength=len(remaining)) if len(remaining) else np.zeros(0, np.int64)
        for local, row in enumerate(remaining.tolist()):
            rep = int(representative[local])
            if rep != local:
                original = int(remaining[rep])
                keep[row] = False
                reasons[row] = f"near_duplicate: of {ids[original]} ({repos[original]}/{paths[original]})"
            else:
                cluster_size[row] = sizes_of[local]
    decisions = split_decisions(sizes, {"keep": pa.array(keep), ds.DROP_REASON: pa.array(reasons, pa.string()),
                                        "near_dup_cluster_size": pa.array(cluster_size)})
    return decisions, {"rows": count, "file_clusters": clusters, "duplicate_repositories": duplicate_repos}


def run_near_dedup(ctx: StepContext) -> dict[str, Any]:
    return run_global_step(ctx, "seedcoder.curate.near_dedup:near_dedup_map", near_dedup_reduce)


@dataclass
class NearDedupOptions:
    num_perm: int = option(256, "MinHash permutations")
    ngram: int = option(5, "shingle size")
    seed: int = option(1, "MinHash seed")
    threshold: float = option(0.8, "Jaccard similarity threshold (0.7-0.85 in the paper)")
    repo_threshold: float | None = option(None, "threshold at repository level (default: threshold)")
    bands: int | None = option(None, "LSH bands (default: chosen for the threshold)")
    rows: int | None = option(None, "LSH rows per band (default: chosen for the threshold)")
    repo_level: bool = option(True, "cluster repositories (MinHash of the union of their files) first")
    file_level: bool = option(True, "cluster files")

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold: must be in (0, 1) (the paper's range: 0.7-0.85), got {self.threshold}")


STEP = StepKind("near_dedup", "MinHash LSH near dedup, repository level then file level", run_near_dedup,
                NearDedupOptions)

"""The training data loader: scored code shards -> packed batches of token ids, in C++ (`seedcoder._C`).

    from seedcoder.data.loader import ShardLoader
    loader = ShardLoader("data/", seq_len=4096, batch_size=8, mixture={"file": 0.8, "commit": 0.2},
                         min_score=3.0, fim_rate=0.5, seed=1234)          # rank / world size from torch.distributed
    for step, batch in enumerate(loader):
        model(batch["input_ids"].cuda(non_blocking=True), ...)
        if step % 1000 == 0:
            checkpoint["loader"] = loader.state_dict()                     # {"epoch": 3, "row": 81920, ...}
    loader.load_state_dict(checkpoint["loader"])                           # exact, also with another world size

Everything below happens in C++ threads with the GIL released; Python only wraps finished batches.

Shards. Every shard is memory-mapped read-only and validated when the loader opens it (docs/shard_format.md:
header, bounds, sizes, CRC32C of every section with the SSE4.2 instruction, token ids < vocab, offsets,
columns). A truncated, corrupted or tokenizer-mismatched shard raises `ShardError("<path>: <problem>")`
before any batch is made; the loader never reads outside a mapping.

Kept set (once per loader). Mixture keys name groups of documents: `"file"` (a source), `"python"`
(a language), `"file/python"` (both), `"*/python"`, `"file/*"`, `"*"` (everything else). Source names:
file, repo, commit, web, sft; language names: `seedcoder.data.shards.Language`. A document belongs to the most
specific key that matches it (source+language > language > source > "*"); documents no key matches, or
whose key has weight 0, are not used. Without a mixture every document is in one group. Then the score
policy: `min_score` drops documents scoring below it, then `drop_bottom=p` drops the floor(p * n) lowest
scores of the n documents left (over all groups together; ties: the lower document id goes first). A user
changes the cut without re-tokenizing.

Plan (per epoch, a pure function of the shards, the options and (seed, epoch)). Documents are emitted until
the epoch's token budget is met: `tokens_per_epoch`, by default the kept set's tokens. Weights are token
proportions: each next document comes from the group g that lags its target most, argmax_g w_g * T - t_g
(T tokens emitted so far, t_g by group g): Megatron's largest-error blending, counted in tokens, so every
group stays within about one document of its share at every point of the epoch. Within a group:
  * plain policy: the group's documents in a seeded random order; a group that runs out starts its next
    pass with a fresh permutation (an up-weighted group repeats, a down-weighted one is cut short). With
    no mixture and no weighting, every kept document appears exactly once per epoch.
  * `score_temperature=T`: draws with replacement, p(document) ∝ exp(score / T) (an alias table, O(1) a
    draw). Weighting without replacement would only reorder a full epoch, so it is not offered.
Best-fit mode then packs the epoch's documents (below); concat mode concatenates them in plan order.

Document streams. A document's stream is its stored tokens plus `<eos>` when it does not already end with
one (`eos_id`, from the tokenizer; `append_eos=False` turns this off). Fill-in-the-middle (`fim_rate`,
0.5 in pretraining, 0.1 in continued pretraining) turns a selected document into Seed-Coder's SPM form
`<fim_suffix> S <fim_prefix> P <fim_middle> M <eos>`, split at two random character positions, with the
tokens that straddle a split re-encoded from their bytes by the tokenizer's byte-level BPE in C++
(csrc/loader/fim.cpp; `fim_token_level=True` splits at token boundaries instead: faster, coarser). Only
documents without the REPO_LEVEL flag and without their own loss mask get FIM. The decision and the split
points are a pure function of (seed, epoch, key), key = (occurrence << 32) | document id (occurrence:
the group's pass, or the draw number under weighted sampling), so resume is exact and a document seen
twice in an epoch gets two different samples. The plan counts a FIM document as its text tokens + 4 (it
knows the decision in O(1)); when re-encoding a split token makes the sample longer (a few tokens), the
surplus is cut from the end of S, then from the start of P (both context), and only when those are empty
from the end of M, the middle the model learns to write. That keeps row boundaries a pure function of the
plan: no rank transforms a document to learn where its rows start, and a seek stays O(log n).

Packing to rows of `seq_len` tokens:
  * concat (default): the epoch's streams laid end to end and cut every seq_len tokens, documents cut
    across rows; the last row of an epoch is completed with padding. Every token of every planned document
    appears exactly once per epoch.
  * best_fit: documents longer than seq_len are split into seq_len chunks; each window of
    `best_fit_window` chunks (in plan order) is packed by best-fit decreasing (the fullest row that still
    fits), so no chunk is ever cut; the rest of a row is padding; the window's rows are then shuffled.

A batch (per rank: `batch_size` rows) is a dict of CPU tensors (pinned when CUDA is available):
  input_ids     [B, L] int64 (int32 with index_dtype=torch.int32): token ids, `pad_id` on padding
                (default: the <eos> id when known, else 0; padding is never a label)
  labels        [B, L]: the next token of the same document (also across a row end: a document cut by
                concat still predicts its next token), -100 (ignore) at a document's last token, on padding,
                and where the shard's loss mask is 0 for the target token
  loss_mask     [B, L] bool: labels != -100
  position_ids  [B, L]: 0, 1, ... restarting at every segment (a document's piece in a row) and padding
  cu_seqlens    [S + 1] int32: segment boundaries over the flattened B * L tokens (0 ... B * L), padding
                being a segment of its own, as varlen attention (flash_attn_varlen_func) wants
  max_seqlen    int: the longest segment
  row_epoch, row_index  [B] int64: which plan row each row is (-1 for the padding rows below)

Ranks and resume. The global row stream is epoch 0's rows, then epoch 1's, ...; global step s takes the next
world_size * batch_size rows and rank r gets the r-th run of batch_size consecutive rows of it. The state is
that stream's position: `{"epoch", "row", "fingerprint"}` (a hash of everything that shapes the stream, not
of world size, batch size or threads). `load_state_dict` seeks there in O(log n) (a plan build when the
epoch changes) and continues the same global order, with any world size. All ranks hold the same state at
the same step. With `epochs=N` the run ends after epoch N-1; its last step is completed with padding rows
(row_index -1) so that every rank makes the same number of steps.

Threads. `threads` C++ workers build batches into a ring of `prefetch` slots, in step order; buffers are
pooled and recycled when the last tensor viewing one is freed. An error in a worker (e.g. a bad FIM table)
is raised by the next `next()`. `close()` (also on `with`, garbage collection and interpreter exit) stops
and joins the workers.
"""

from __future__ import annotations

import atexit
import json
import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from seedcoder.data.manifest import load_manifest
from seedcoder.data.shards import Language, ShardError, Source, sha256_bytes
from seedcoder.data.tokenizer_tables import load_tokenizer_tables
from seedcoder.tokenizer import EOS_NAMES

STATE_FORMAT = "seedcoder-loader-state"
STATE_VERSION = 1
IGNORE_INDEX = -100

# Special-token spellings tried in order when the caller does not give ids (Seed-Coder's first).
FIM_NAMES = {
    "suffix": ("<[fim-suffix]>", "<fim_suffix>", "<|fim_suffix|>", "<FIM_SUFFIX>"),
    "prefix": ("<[fim-prefix]>", "<fim_prefix>", "<|fim_prefix|>", "<FIM_PREFIX>"),
    "middle": ("<[fim-middle]>", "<fim_middle>", "<|fim_middle|>", "<FIM_MIDDLE>"),
}


def _extension():
    try:
        from seedcoder import _C
    except ImportError as error:  # pragma: no cover - a broken install
        raise ImportError(
            "seedcoder._C (the C++ data loader) is not built: run `pip install --no-build-isolation -e .`"
        ) from error
    return _C


def parse_mixture(mixture: Mapping[str, float]) -> list[tuple[str, int, int, float]]:
    """{"file": 0.8, "*/python": 0.2} -> [(key, source id or -1, language id or -1, weight)] (see the module doc)."""

    def source_of(name: str) -> int:
        try:
            return int(Source[name.upper()])
        except KeyError:
            known = ", ".join(source.name.lower() for source in Source)
            raise ValueError(f"mixture key {key!r}: unknown source {name!r} (sources: {known})") from None

    def language_of(name: str) -> int:
        try:
            return int(Language[name.upper()])
        except KeyError:
            raise ValueError(f"mixture key {key!r}: unknown language {name!r} (see seedcoder.data.shards.Language)") from None

    groups, seen = [], {}
    for key, weight in mixture.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"mixture keys are strings like 'file', 'python' or 'file/python', got {key!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
            raise ValueError(f"mixture weight of {key!r} must be a finite number >= 0, got {weight!r}")
        parts = key.split("/")
        if len(parts) == 1:
            name = parts[0]
            if name == "*":
                source, language = -1, -1
            elif name.upper() in Source.__members__:
                source, language = source_of(name), -1
            else:
                source, language = -1, language_of(name)
        elif len(parts) == 2:
            source = -1 if parts[0] == "*" else source_of(parts[0])
            language = -1 if parts[1] == "*" else language_of(parts[1])
        else:
            raise ValueError(f"mixture key {key!r}: expected 'source', 'language' or 'source/language'")
        if (source, language) in seen:
            raise ValueError(f"mixture keys {seen[(source, language)]!r} and {key!r} name the same group")
        seen[(source, language)] = key
        groups.append((key, source, language, float(weight)))
    if not groups or sum(weight for *_, weight in groups) <= 0:
        raise ValueError("a mixture needs at least one key with a positive weight")
    return groups


def _read_tokenizer(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _token_ids(tokenizer: Mapping[str, Any]) -> dict[str, int]:
    """Every token's id: the BPE vocabulary and the added tokens."""
    ids = dict((tokenizer.get("model") or {}).get("vocab") or {})
    for entry in tokenizer.get("added_tokens") or []:
        ids[entry["content"]] = int(entry["id"])
    return ids


def _find_token(ids: Mapping[str, int], names: Sequence[str]) -> int | None:
    return next((ids[name] for name in names if name in ids), None)


def _default_rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


_OPEN_LOADERS: weakref.WeakSet[ShardLoader] = weakref.WeakSet()


@atexit.register
def _close_open_loaders() -> None:
    # Worker threads must be joined before the interpreter (and torch's allocators) go away.
    for loader in list(_OPEN_LOADERS):
        loader.close()


class ShardLoader:
    """Packed batches from a shard dataset. See the module docstring for every convention.

    `source`: a dataset directory or manifest.json (shards, expected tokenizer SHA-256 and tokenizer.json come
    from the manifest), a list of dataset directories made with one tokenizer (their shards together), or a list of
    shard paths. `tokenizer`: a tokenizer.json, for the <eos> id (appended to
    documents) and, with `fim_rate > 0`, the FIM special tokens and BPE merges; default: the manifest's.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        seq_len: int,
        batch_size: int = 1,
        mode: str = "concat",
        seed: int = 0,
        mixture: Mapping[str, float] | None = None,
        min_score: float | None = None,
        drop_bottom: float = 0.0,
        score_temperature: float | None = None,
        tokens_per_epoch: int | None = None,
        fim_rate: float = 0.0,
        fim_token_level: bool = False,
        tokenizer: str | os.PathLike | None = None,
        append_eos: bool = True,
        eos_id: int | None = None,
        fim_token_ids: tuple[int, int, int] | None = None,
        pad_id: int | None = None,
        best_fit_window: int = 8192,
        epochs: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        threads: int = 2,
        prefetch: int = 4,
        index_dtype: torch.dtype = torch.int64,
        pin_memory: bool | None = None,
        verify_checksums: bool = True,
        expected_tokenizer_sha256: str | bytes | None = None,
    ):
        _C = _extension()
        shard_paths, manifest_sha, manifest_tokenizer = self._resolve_source(source)
        expected = expected_tokenizer_sha256 if expected_tokenizer_sha256 is not None else manifest_sha
        tokenizer_path = os.fspath(tokenizer) if tokenizer is not None else manifest_tokenizer
        if rank is None or world_size is None:
            default_rank, default_world = _default_rank_and_world()
            rank = default_rank if rank is None else rank
            world_size = default_world if world_size is None else world_size
        if index_dtype not in (torch.int64, torch.int32):
            raise ValueError(f"index_dtype must be torch.int64 or torch.int32, got {index_dtype}")
        if not 0.0 <= fim_rate <= 1.0:
            raise ValueError(f"fim_rate must be in [0, 1], got {fim_rate}")
        if pin_memory is None:
            pin_memory = torch.cuda.is_available()

        tokenizer_json = _read_tokenizer(tokenizer_path) if tokenizer_path is not None else None
        ids = _token_ids(tokenizer_json) if tokenizer_json is not None else {}
        if eos_id is None and ids:
            eos_id = _find_token(ids, EOS_NAMES)

        bpe, fim_ids = None, []
        if fim_rate > 0:
            if tokenizer_json is None:
                raise ValueError(
                    "fim_rate > 0 needs the tokenizer (tokenizer=... or a manifest naming one): FIM re-encodes with its BPE"
                )
            bpe, fim_ids = self._fim_tables(tokenizer_path, tokenizer_json, ids, fim_token_ids, eos_id)
            eos_id = fim_ids[3]
        self.eos_id = eos_id
        self.pad_id = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)

        self.dataset = _C.Dataset(
            [os.fspath(path) for path in shard_paths],
            None if expected is None else sha256_bytes(expected, "expected_tokenizer_sha256"),
            verify_checksums,
            len(Language),
            len(Source),
            max(1, threads),
        )
        config = {
            "seq_len": int(seq_len),
            "batch_size": int(batch_size),
            "mode": mode,
            "seed": int(seed),
            "best_fit_window": int(best_fit_window),
            "mixture": parse_mixture(mixture) if mixture else [],
            "drop_bottom_fraction": float(drop_bottom),
            "score_temperature": float(score_temperature or 0.0),
            "tokens_per_epoch": int(tokens_per_epoch or 0),
            "eos_id": -1 if eos_id is None or not append_eos else int(eos_id),
            "pad_id": int(self.pad_id),
            "rank": int(rank),
            "world_size": int(world_size),
            "epochs": -1 if epochs is None else int(epochs),
            "threads": int(threads),
            "prefetch": int(prefetch),
            "index_dtype": "int64" if index_dtype == torch.int64 else "int32",
            "pin_memory": bool(pin_memory),
            "fim_rate": float(fim_rate),
            "fim_token_level": bool(fim_token_level),
            "fim_ids": fim_ids,
        }
        if min_score is not None:
            config["min_score"] = float(min_score)
        self._loader = _C.Loader(self.dataset, config, bpe)
        self.seq_len, self.batch_size, self.rank, self.world_size = int(seq_len), int(batch_size), int(rank), int(world_size)
        self.fim_token_ids = tuple(fim_ids[:3]) if fim_ids else None
        self._closed = False
        _OPEN_LOADERS.add(self)

    @staticmethod
    def _resolve_source(source) -> tuple[list[str], str | None, str | None]:
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if os.path.isdir(path) or path.endswith(".json"):
                manifest = load_manifest(path)
                dataset_dir = manifest["dataset_dir"]
                shards = [os.path.join(dataset_dir, entry["path"]) for entry in manifest["shards"]]
                tokenizer = manifest["tokenizer"]
                tokenizer_path = None
                if tokenizer.get("path"):
                    candidate = os.path.join(dataset_dir, tokenizer["path"])
                    tokenizer_path = candidate if os.path.exists(candidate) else None
                return shards, tokenizer.get("sha256"), tokenizer_path
            return [path], None, None
        paths = [os.fspath(p) for p in source]
        if not paths:
            raise ValueError("no shards given")
        datasets = [os.path.isdir(path) or path.endswith(".json") for path in paths]
        if not any(datasets):
            return paths, None, None
        if not all(datasets):
            raise ValueError(f"give dataset directories or shard files, not both: {paths}")
        shards, sha, tokenizer_path = [], None, None
        for path in paths:  # several datasets made with one tokenizer, e.g. curated files + the high-quality set
            found, found_sha, found_tokenizer = ShardLoader._resolve_source(path)
            if sha is not None and found_sha != sha:
                raise ValueError(f"{path}: made with another tokenizer (SHA-256 {found_sha}) than {paths[0]} ({sha})")
            shards += found
            sha = found_sha
            tokenizer_path = tokenizer_path or found_tokenizer
        return shards, sha, tokenizer_path

    @staticmethod
    def _fim_tables(tokenizer_path, tokenizer_json, ids, fim_token_ids, eos_id):
        """The byte-level BPE (for re-encoding split tokens) and the (suffix, prefix, middle, eos) ids."""
        names_by_id = {token_id: name for name, token_id in ids.items()}

        def name_for(role: str, given: int | None, candidates: Sequence[str]) -> str:
            if given is not None:
                if given not in names_by_id:
                    raise ValueError(f"{tokenizer_path}: no token has id {given} (given for {role})")
                return names_by_id[given]
            found = next((name for name in candidates if name in ids), None)
            if found is None:
                raise ValueError(f"{tokenizer_path}: no {role} token found (tried {', '.join(candidates)}); pass its id")
            return found

        given = fim_token_ids or (None, None, None)
        tables = load_tokenizer_tables(
            tokenizer_json,
            eos_token=name_for("<eos>", eos_id, EOS_NAMES),
            fim_suffix_token=name_for("<fim_suffix>", given[0], FIM_NAMES["suffix"]),
            fim_prefix_token=name_for("<fim_prefix>", given[1], FIM_NAMES["prefix"]),
            fim_middle_token=name_for("<fim_middle>", given[2], FIM_NAMES["middle"]),
        )
        bpe = _extension().ByteLevelBPE(tables.id_to_bytes, tables.merges, tables.ignore_merges)
        return bpe, [tables.fim_suffix_id, tables.fim_prefix_id, tables.fim_middle_id, tables.eos_id]

    # -- iteration ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("the loader is closed")
        batch = self._loader.next()
        if batch is None:
            raise StopIteration
        return batch

    # -- resume -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int | str]:
        """The position of the next batch in the global row stream: the same on every rank, any world size."""
        epoch, row = self._loader.position()
        fingerprint = self._loader.fingerprint
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "epoch": epoch, "row": row, "fingerprint": fingerprint}

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True) -> None:
        """Continue from `state` (from any rank, any world size). strict: refuse a state made with other data or options."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a loader state (format {STATE_FORMAT!r} version {STATE_VERSION}): {dict(state)!r}")
        if strict and state.get("fingerprint") != self._loader.fingerprint:
            raise ValueError(
                "the loader state was made with other shards or options (seq_len, mode, seed, mixture, score policy, FIM, "
                "eos/pad): its global row stream differs; pass strict=False to seek anyway"
            )
        self._loader.seek(int(state["epoch"]), int(state["row"]))

    # -- tools --------------------------------------------------------------------------------------------
    def rows(self, epoch: int, row: int, count: int) -> dict[str, Any]:
        """`count` consecutive global rows from (epoch, row), made on this thread (no rank split)."""
        return self._loader.rows(epoch, row, count)

    def row_count(self, epoch: int = 0) -> int:
        return self._loader.row_count(epoch)

    def plan(self, epoch: int = 0) -> dict[str, Any]:
        """The epoch's plan: documents (global ids), occurrences, fim flags, stream_begin (+ best-fit rows)."""
        return self._loader.plan(epoch)

    def kept_groups(self) -> list[tuple[str, float, int, int]]:
        """(key, normalized weight, documents, tokens) per mixture group after the score policy."""
        return self._loader.kept_groups()

    def kept_documents(self) -> torch.Tensor:
        return self._loader.kept_documents()

    def locate(self, document: int) -> tuple[str, int]:
        """(shard path, index in the shard) of a global document id."""
        shard, index = self.dataset.locate(document)
        return self.dataset.shard_path(shard), index

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._loader.close()

    def __enter__(self) -> ShardLoader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter teardown
            pass


__all__ = ["IGNORE_INDEX", "ShardError", "ShardLoader", "parse_mixture"]

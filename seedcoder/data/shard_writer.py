"""`ShardWriter`: builds one shard (docs/shard_format.md) in memory, checking every document, and writes it atomically."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from enum import IntEnum
from typing import IO, Any

import numpy as np

from seedcoder.data.crc32c import crc32c
from seedcoder.data.shards import (
    ALIGNMENT,
    DOCUMENT_DTYPE,
    FORMAT_VERSION,
    HEADER_CRC_OFFSET,
    HEADER_DTYPE,
    HEADER_SIZE,
    KNOWN_DOC_FLAGS,
    MAGIC,
    SECTION_COUNT,
    SHARD_HAS_LOSS_MASK,
    DocFlag,
    Language,
    Source,
    align_up,
    sha256_bytes,
    token_dtype_for_vocab,
)
from seedcoder.fileio import atomic_write


def _lookup_enum(enum_type: type[IntEnum], value: int | str, what: str, where: str) -> int:
    if len(enum_type) > 8:
        known = f"see seedcoder.data.shards.{enum_type.__name__}"
    else:
        known = ", ".join(member.name.lower() for member in enum_type)
    if isinstance(value, str):
        try:
            return int(enum_type[value.upper()])
        except KeyError:
            raise ValueError(f"{where}: unknown {what} {value!r} ({known})") from None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        try:
            return int(enum_type(int(value)))
        except ValueError:
            raise ValueError(f"{where}: unknown {what} id {int(value)} (ids 0..{len(enum_type) - 1}: {known})") from None
    raise TypeError(f"{where}: {what} must be a name or an integer id, got {type(value).__name__}")


class _GrowableArray:
    """An append-only numpy array with amortized doubling, so a shard's tokens end up contiguous without a final concatenate."""

    def __init__(self, dtype: np.dtype):
        self._buffer = np.empty(1024, dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        needed = self.size + len(values)
        if needed > len(self._buffer):
            grown = np.empty(max(needed, 2 * len(self._buffer)), dtype=self._buffer.dtype)
            grown[: self.size] = self._buffer[: self.size]
            self._buffer = grown
        self._buffer[self.size : needed] = values
        self.size = needed

    def view(self) -> np.ndarray:
        return self._buffer[: self.size]


class ShardWriter:
    """Collects documents in memory and writes one shard atomically on `close()` (or leaving a `with` block).

        with ShardWriter("data/shard-00000.scs", vocab_size=tokenizer_vocab, tokenizer_sha256=sha) as writer:
            writer.add(tokens, score=7.5, language="python", source="file", content_hash=content_hash64(text),
                       metadata={"repo": "a/b", "path": "x.py"})

    Every argument is checked in `add` (ValueError / TypeError naming the document), so a bad document never
    reaches the file. Leaving the `with` block by an exception writes nothing. A shard must hold at least one
    document, and documents must not be empty.
    """

    def __init__(self, path: str | os.PathLike, *, vocab_size: int, tokenizer_sha256: str | bytes):
        if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool) or not 1 <= vocab_size < 2**32:
            raise ValueError(f"vocab_size must be an integer in [1, 2**32), got {vocab_size!r}")
        self.path = os.fspath(path)
        self.vocab_size = int(vocab_size)
        self.tokenizer_sha256 = sha256_bytes(tokenizer_sha256, "tokenizer_sha256")
        self.token_dtype = token_dtype_for_vocab(self.vocab_size)
        self._tokens = _GrowableArray(self.token_dtype)
        self._document_ends: list[int] = []
        self._records: list[tuple[float, int, int, int, int]] = []
        self._masks: dict[int, np.ndarray] = {}  # document index -> its mask; the rest get ones if any mask exists
        self._metadata: list[bytes] = []
        self._closed = False

    def __len__(self) -> int:
        return len(self._records)

    @property
    def token_count(self) -> int:
        return self._tokens.size

    def add(
        self,
        tokens,
        *,
        score: float,
        language: int | str,
        source: int | str,
        content_hash: int,
        flags: int = 0,
        metadata: Mapping[str, Any] | None = None,
        loss_mask=None,
    ) -> int:
        """Append one document; returns its index. `flags` may set DocFlag.REPO_LEVEL; HAS_LOSS_MASK follows `loss_mask`."""
        if self._closed:
            raise ValueError(f"{self.path}: the writer is closed")
        index = len(self._records)
        where = f"document {index}"

        token_array = np.asarray(tokens)
        if token_array.ndim != 1:
            raise ValueError(f"{where}: tokens must be 1-D, got shape {token_array.shape}")
        if len(token_array) == 0:  # before the dtype check: np.asarray([]) is float64
            raise ValueError(f"{where}: empty document (documents must hold at least one token)")
        if token_array.dtype.kind not in "iu":  # bool, float, object... are refused, not silently cast
            raise TypeError(f"{where}: tokens must be an integer array, got dtype {token_array.dtype}")
        if token_array.dtype.kind == "i" and int(token_array.min()) < 0:
            position = int(np.argmax(token_array < 0))
            raise ValueError(f"{where}: negative token id {int(token_array[position])} at position {position}")
        largest = int(token_array.max())
        if largest >= self.vocab_size:
            position = int(np.argmax(token_array >= self.vocab_size))
            raise ValueError(
                f"{where}: token id {int(token_array[position])} at position {position} is >= vocab_size {self.vocab_size}"
            )

        if isinstance(score, bool) or not isinstance(score, (int, float, np.integer, np.floating)):
            raise TypeError(f"{where}: score must be a number, got {type(score).__name__}")
        with np.errstate(over="ignore"):  # a score beyond float32 becomes inf and is refused just below
            score_f32 = np.float32(score)
        if not math.isfinite(float(score)) or not np.isfinite(score_f32):
            raise ValueError(f"{where}: score must be finite (and fit in float32), got {score!r}")

        language_id = _lookup_enum(Language, language, "language", where)
        source_id = _lookup_enum(Source, source, "source", where)

        if isinstance(flags, bool) or not isinstance(flags, (int, np.integer)) or not 0 <= int(flags) <= 0xFF:
            raise ValueError(f"{where}: flags must be an integer in [0, 255], got {flags!r}")
        flags = int(flags)
        if flags & ~KNOWN_DOC_FLAGS:
            raise ValueError(f"{where}: unknown flag bits {flags & ~KNOWN_DOC_FLAGS:#x} (known: {KNOWN_DOC_FLAGS:#x})")
        if flags & DocFlag.HAS_LOSS_MASK and loss_mask is None:
            raise ValueError(f"{where}: flag HAS_LOSS_MASK is set but no loss_mask was given (the writer sets it from loss_mask)")

        if isinstance(content_hash, bool) or not isinstance(content_hash, (int, np.integer)) or not 0 <= content_hash < 2**64:
            raise ValueError(f"{where}: content_hash must be an integer in [0, 2**64), got {content_hash!r}")

        mask_array = None
        if loss_mask is not None:
            mask_array = np.asarray(loss_mask)
            if mask_array.dtype.kind not in "biu":
                raise TypeError(f"{where}: loss_mask must be a bool or integer array, got dtype {mask_array.dtype}")
            if mask_array.shape != token_array.shape:
                raise ValueError(f"{where}: loss_mask has shape {mask_array.shape} but tokens have shape {token_array.shape}")
            if mask_array.dtype.kind != "b" and ((mask_array < 0) | (mask_array > 1)).any():
                raise ValueError(f"{where}: loss_mask values must be 0 or 1")
            mask_array = mask_array.astype(np.uint8)
            flags |= int(DocFlag.HAS_LOSS_MASK)

        if metadata is None:
            metadata = {}
        if not isinstance(metadata, Mapping) or not all(isinstance(key, str) for key in metadata):
            raise TypeError(f"{where}: metadata must be a mapping with str keys")
        try:
            metadata_bytes = json.dumps(
                dict(metadata), ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: metadata is not JSON-serializable: {error}") from None

        # Everything is checked: only now does the document change the writer's state.
        self._tokens.extend(token_array.astype(self.token_dtype, copy=False))
        self._document_ends.append(self._tokens.size)
        self._records.append((float(score_f32), language_id, source_id, flags, int(content_hash)))
        if mask_array is not None:
            self._masks[index] = mask_array
        self._metadata.append(metadata_bytes)
        return index

    def _build_sections(self) -> list[np.ndarray]:
        document_count = len(self._records)
        doc_offsets = np.zeros(document_count + 1, dtype="<u8")
        doc_offsets[1:] = self._document_ends
        documents = np.array(self._records, dtype=DOCUMENT_DTYPE)
        if self._masks:
            loss_mask = np.ones(self._tokens.size, dtype=np.uint8)
            for index, mask in self._masks.items():
                loss_mask[doc_offsets[index] : doc_offsets[index + 1]] = mask
        else:
            loss_mask = np.zeros(0, dtype=np.uint8)
        metadata_offsets = np.zeros(document_count + 1, dtype="<u8")
        metadata_offsets[1:] = np.cumsum([len(blob) for blob in self._metadata])
        metadata = np.frombuffer(b"".join(self._metadata), dtype=np.uint8)
        return [doc_offsets, documents, loss_mask, metadata_offsets, metadata, self._tokens.view()]

    def close(self) -> None:
        """Write the shard (atomically) and release the buffers. Idempotent."""
        if self._closed:
            return
        if not self._records:
            raise ValueError(f"{self.path}: no documents were added (a shard holds at least one)")
        sections = self._build_sections()
        header = np.zeros((), dtype=HEADER_DTYPE)
        header["magic"] = np.frombuffer(MAGIC, dtype=np.uint8)
        header["version"] = FORMAT_VERSION
        header["header_size"] = HEADER_SIZE
        header["token_width"] = self.token_dtype.itemsize
        header["vocab_size"] = self.vocab_size
        header["document_count"] = len(self._records)
        header["token_count"] = self._tokens.size
        header["shard_flags"] = SHARD_HAS_LOSS_MASK if self._masks else 0
        header["section_count"] = SECTION_COUNT
        header["tokenizer_sha256"] = np.frombuffer(self.tokenizer_sha256, dtype=np.uint8)
        position = ALIGNMENT  # the header page
        for index, section in enumerate(sections):
            entry = header["sections"][index]
            entry["offset"] = position
            entry["length"] = section.nbytes
            entry["crc32c"] = crc32c(section)
            position = align_up(position + section.nbytes)
        header["file_size"] = position
        header_bytes = bytearray(header.tobytes())
        header_bytes[HEADER_CRC_OFFSET:] = crc32c(header_bytes[:HEADER_CRC_OFFSET]).to_bytes(4, "little")

        def write_body(file: IO[bytes]) -> None:
            file.write(header_bytes)
            written = HEADER_SIZE
            for index, section in enumerate(sections):
                offset = int(header["sections"][index]["offset"])
                file.write(bytes(offset - written))
                file.write(memoryview(np.ascontiguousarray(section)).cast("B"))
                written = offset + section.nbytes
            file.write(bytes(position - written))

        atomic_write(self.path, write_body)
        self._closed = True
        self._tokens = _GrowableArray(self.token_dtype)
        self._masks.clear()
        self._metadata.clear()

    def abort(self) -> None:
        """Drop everything added; nothing is written."""
        self._closed = True
        self._records.clear()
        self._masks.clear()
        self._metadata.clear()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

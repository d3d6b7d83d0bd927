"""`ShardReader`: memory-maps one shard and validates it on open (header, bounds, CRC32C, offsets, columns).

`read_header` / `parse_header` check only the 256-byte header against the file's size (the manifest uses them).
Every problem raises `ShardError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
    SECTION_NAMES,
    SHARD_HAS_LOSS_MASK,
    DocFlag,
    Language,
    Section,
    ShardError,
    Source,
    align_up,
    sha256_bytes,
    token_dtype_for_vocab,
)


@dataclass(frozen=True)
class ShardHeader:
    """The header's fields, as Python values, after validation."""

    version: int
    token_width: int
    vocab_size: int
    document_count: int
    token_count: int
    file_size: int
    has_loss_mask: bool
    tokenizer_sha256: str  # hex
    sections: tuple[tuple[int, int, int], ...]  # (offset, length, crc32c) per Section
    header_crc32c: int

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype("<u2") if self.token_width == 2 else np.dtype("<u4")


def parse_header(path: str | os.PathLike, header_bytes: bytes, actual_file_size: int) -> ShardHeader:
    """Validate a shard header against the file's size; raises ShardError naming the first problem found.

    The checks run from the outside in (magic, version, header CRC, then the fields), so each kind of damage
    gets its own message: a file that is not a shard, a newer format, a corrupted header, a truncated file.
    """
    if len(header_bytes) < HEADER_SIZE:
        raise ShardError(path, f"truncated: the file is {actual_file_size} bytes, smaller than the {HEADER_SIZE}-byte header")
    raw = header_bytes[:HEADER_SIZE]
    if raw[:8] != MAGIC:
        raise ShardError(path, f"not a shard: bad magic {raw[:8].hex(' ')} (expected {MAGIC.hex(' ')})")
    fields = np.frombuffer(raw, dtype=HEADER_DTYPE)[0]
    version = int(fields["version"])
    if version != FORMAT_VERSION:
        raise ShardError(path, f"unsupported format version {version} (this reader reads version {FORMAT_VERSION})")
    stored_crc = int(fields["header_crc32c"])
    computed_crc = crc32c(raw[:HEADER_CRC_OFFSET])
    if stored_crc != computed_crc:
        raise ShardError(
            path, f"header checksum mismatch (stored {stored_crc:#010x}, computed {computed_crc:#010x}): corrupted header"
        )

    def bad(problem: str) -> ShardError:
        return ShardError(path, f"bad header: {problem}")

    if int(fields["header_size"]) != HEADER_SIZE:
        raise bad(f"header_size {int(fields['header_size'])} (expected {HEADER_SIZE})")
    if int(fields["section_count"]) != SECTION_COUNT:
        raise bad(f"section_count {int(fields['section_count'])} (expected {SECTION_COUNT})")
    if any(fields["reserved"]) or any(fields["sections"]["reserved"]):
        raise bad("reserved bytes are not zero")
    vocab_size = int(fields["vocab_size"])
    token_width = int(fields["token_width"])
    if vocab_size == 0:
        raise bad("vocab_size is 0")
    expected_width = token_dtype_for_vocab(vocab_size).itemsize
    if token_width != expected_width:
        raise bad(f"token_width {token_width} for vocab_size {vocab_size} (expected {expected_width})")
    shard_flags = int(fields["shard_flags"])
    if shard_flags & ~SHARD_HAS_LOSS_MASK:
        raise bad(f"unknown shard_flags bits {shard_flags:#x}")
    has_loss_mask = bool(shard_flags & SHARD_HAS_LOSS_MASK)
    document_count = int(fields["document_count"])
    token_count = int(fields["token_count"])
    file_size = int(fields["file_size"])
    if document_count == 0:
        raise bad("document_count is 0 (a shard holds at least one document)")
    if token_count < document_count:
        raise bad(f"token_count {token_count} < document_count {document_count} (documents are never empty)")
    if file_size % ALIGNMENT:
        raise bad(f"file_size {file_size} is not a multiple of {ALIGNMENT}")

    expected_lengths = {
        Section.DOC_OFFSETS: (document_count + 1) * 8,
        Section.DOCUMENTS: document_count * DOCUMENT_DTYPE.itemsize,
        Section.LOSS_MASK: token_count if has_loss_mask else 0,
        Section.METADATA_OFFSETS: (document_count + 1) * 8,
        Section.TOKENS: token_count * token_width,
    }
    sections = tuple((int(e["offset"]), int(e["length"]), int(e["crc32c"])) for e in fields["sections"])
    previous_end = ALIGNMENT  # the header page
    for section in Section:
        offset, length, _ = sections[section]
        name = SECTION_NAMES[section]
        if section in expected_lengths and length != expected_lengths[section]:
            raise bad(f"section '{name}' has length {length} (expected {expected_lengths[section]} from the counts)")
        if offset % ALIGNMENT:
            raise bad(f"section '{name}' offset {offset} is not a multiple of {ALIGNMENT}")
        if offset < previous_end:
            raise bad(f"section '{name}' at offset {offset} overlaps the header or the section before (ending at {previous_end})")
        if offset + length > file_size:
            raise bad(f"section '{name}' [{offset}, {offset + length}) runs past file_size {file_size}")
        previous_end = offset + length
    if file_size != align_up(previous_end):
        raise bad(f"file_size {file_size} does not end the last section (expected {align_up(previous_end)})")

    if actual_file_size != file_size:
        if actual_file_size > file_size:
            raise ShardError(path, f"size mismatch: the file is {actual_file_size} bytes, the header says {file_size}")
        cut = next((s for s in Section if sections[s][0] + sections[s][1] > actual_file_size), None)
        where = "" if cut is None else f" inside section '{SECTION_NAMES[cut]}'"
        raise ShardError(path, f"truncated{where}: the file is {actual_file_size} bytes, the header says {file_size}")

    return ShardHeader(
        version=version,
        token_width=token_width,
        vocab_size=vocab_size,
        document_count=document_count,
        token_count=token_count,
        file_size=file_size,
        has_loss_mask=has_loss_mask,
        tokenizer_sha256=bytes(fields["tokenizer_sha256"]).hex(),
        sections=sections,
        header_crc32c=stored_crc,
    )


def read_header(path: str | os.PathLike) -> ShardHeader:
    """Read and validate only the header (cheap: 256 bytes and a stat)."""
    try:
        with open(path, "rb") as file:
            actual_size = os.fstat(file.fileno()).st_size
            header_bytes = file.read(HEADER_SIZE)
    except OSError as error:
        raise ShardError(path, f"cannot open: {error.strerror or error}") from None
    return parse_header(path, header_bytes, actual_size)


@dataclass(frozen=True)
class Document:
    """One document of a shard. `tokens` and `loss_mask` are read-only views into the memory map."""

    index: int
    tokens: np.ndarray
    score: float
    language: Language
    source: Source
    flags: DocFlag
    content_hash: int
    metadata: dict[str, Any]
    loss_mask: np.ndarray | None  # None when the shard has no loss mask (every token counts)

    @property
    def is_repo_level(self) -> bool:
        return bool(self.flags & DocFlag.REPO_LEVEL)


class ShardReader:
    """A memory-mapped shard, validated on open.

    Always checked: magic, version, header CRC32C and fields, section bounds, file size, the optional expected
    tokenizer SHA-256, document and metadata offsets, and the per-document columns (finite scores, known
    language/source/flag values). With `verify_checksums=True` (the default) also every section's CRC32C,
    token ids < vocab_size and loss-mask values in {0, 1}: one pass over the file, ~10 GB/s with the `crc32c`
    package. Any failure raises ShardError naming the file and the problem.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        expected_tokenizer_sha256: str | bytes | None = None,
        verify_checksums: bool = True,
    ):
        self.path = os.fspath(path)
        self.header = read_header(self.path)
        header = self.header
        if expected_tokenizer_sha256 is not None:
            expected = sha256_bytes(expected_tokenizer_sha256, "expected_tokenizer_sha256").hex()
            if expected != header.tokenizer_sha256:
                raise ShardError(
                    self.path,
                    f"tokenizer mismatch: the shard was tokenized with a tokenizer of SHA-256 {header.tokenizer_sha256}, "
                    f"expected {expected}",
                )
        try:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as error:
            raise ShardError(self.path, f"cannot memory-map: {error}") from None
        if len(self._map) != header.file_size:  # the file changed between the header read and the map
            raise ShardError(self.path, f"size changed while opening: {len(self._map)} bytes, the header says {header.file_size}")

        raw_sections = [self._map[offset : offset + length] for offset, length, _ in header.sections]
        if verify_checksums:
            for section, raw in zip(Section, raw_sections):
                stored = header.sections[section][2]
                computed = crc32c(raw)
                if stored != computed:
                    raise ShardError(
                        self.path,
                        f"checksum mismatch in section '{SECTION_NAMES[section]}' "
                        f"(stored {stored:#010x}, computed {computed:#010x}): corrupted data",
                    )
        self.doc_offsets = raw_sections[Section.DOC_OFFSETS].view("<u8")
        self._documents = raw_sections[Section.DOCUMENTS].view(DOCUMENT_DTYPE)
        self._loss_mask = raw_sections[Section.LOSS_MASK] if header.has_loss_mask else None
        self._metadata_offsets = raw_sections[Section.METADATA_OFFSETS].view("<u8")
        self._metadata = raw_sections[Section.METADATA]
        self._tokens = raw_sections[Section.TOKENS].view(header.token_dtype)
        self._check_contents(verify_checksums)

    def _check_contents(self, scan_tokens: bool) -> None:
        header = self.header

        def bad(problem: str) -> ShardError:
            return ShardError(self.path, problem)

        offsets = self.doc_offsets
        if int(offsets[0]) != 0 or int(offsets[-1]) != header.token_count:
            raise bad(f"document offsets run [{int(offsets[0])}, {int(offsets[-1])}], expected [0, {header.token_count}]")
        steps = np.diff(offsets.astype(np.int64, copy=False))  # offsets are <= token_count < 2**63 here
        if (steps <= 0).any():
            index = int(np.argmax(steps <= 0))
            raise bad(f"document offsets are not strictly increasing at document {index} (empty or negative length)")

        metadata_offsets = self._metadata_offsets
        if int(metadata_offsets[0]) != 0 or int(metadata_offsets[-1]) != len(self._metadata):
            raise bad(
                f"metadata offsets run [{int(metadata_offsets[0])}, {int(metadata_offsets[-1])}], "
                f"expected [0, {len(self._metadata)}] (the metadata section's length)"
            )
        if (np.diff(metadata_offsets.astype(np.int64, copy=False)) < 0).any():
            index = int(np.argmax(np.diff(metadata_offsets.astype(np.int64, copy=False)) < 0))
            raise bad(f"metadata offsets decrease at document {index}")

        documents = self._documents
        for column, check, problem in (
            ("score", lambda v: ~np.isfinite(v), "a score that is not finite"),
            ("language", lambda v: v >= len(Language), "an unknown language id"),
            ("source", lambda v: v >= len(Source), "an unknown source id"),
            ("flags", lambda v: (v & (0xFF ^ KNOWN_DOC_FLAGS)) != 0, "unknown flag bits"),
        ):
            values = documents[column]
            failing = check(values)
            if failing.any():
                index = int(np.argmax(failing))
                raise bad(f"document {index} has {problem} ({values[index].item()!r})")
        flagged_mask = (documents["flags"] & int(DocFlag.HAS_LOSS_MASK)) != 0
        if not header.has_loss_mask and flagged_mask.any():
            index = int(np.argmax(flagged_mask))
            raise bad(f"document {index} is flagged HAS_LOSS_MASK but the shard has no loss mask section")

        if scan_tokens:
            largest = int(self._tokens.max())
            if largest >= header.vocab_size:
                raise bad(f"token id {largest} >= vocab_size {header.vocab_size}")
            if self._loss_mask is not None and int(self._loss_mask.max()) > 1:
                raise bad("loss mask holds values other than 0 and 1")

    # -- whole-shard views -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.header.document_count

    @property
    def document_count(self) -> int:
        return self.header.document_count

    @property
    def token_count(self) -> int:
        return self.header.token_count

    @property
    def vocab_size(self) -> int:
        return self.header.vocab_size

    @property
    def token_dtype(self) -> np.dtype:
        return self.header.token_dtype

    @property
    def tokenizer_sha256(self) -> str:
        return self.header.tokenizer_sha256

    @property
    def has_loss_mask(self) -> bool:
        return self.header.has_loss_mask

    @property
    def scores(self) -> np.ndarray:
        return self._documents["score"]

    @property
    def languages(self) -> np.ndarray:
        return self._documents["language"]

    @property
    def sources(self) -> np.ndarray:
        return self._documents["source"]

    @property
    def flags(self) -> np.ndarray:
        return self._documents["flags"]

    @property
    def content_hashes(self) -> np.ndarray:
        return self._documents["content_hash"]

    @property
    def document_lengths(self) -> np.ndarray:
        return np.diff(self.doc_offsets.astype(np.int64))

    @property
    def all_tokens(self) -> np.ndarray:
        return self._tokens

    # -- one document ------------------------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        if self._map is None:
            raise ValueError(f"{self.path}: the reader is closed")
        count = self.header.document_count
        if not -count <= index < count:
            raise IndexError(f"{self.path}: document {index} out of range (the shard holds {count})")
        return index % count

    def tokens(self, index: int) -> np.ndarray:
        index = self._check_index(index)
        return self._tokens[int(self.doc_offsets[index]) : int(self.doc_offsets[index + 1])]

    def loss_mask(self, index: int) -> np.ndarray | None:
        index = self._check_index(index)
        if self._loss_mask is None:
            return None
        return self._loss_mask[int(self.doc_offsets[index]) : int(self.doc_offsets[index + 1])]

    def metadata(self, index: int) -> dict[str, Any]:
        index = self._check_index(index)
        blob = bytes(self._metadata[int(self._metadata_offsets[index]) : int(self._metadata_offsets[index + 1])])
        try:
            value = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ShardError(self.path, f"metadata of document {index} is not valid UTF-8 JSON") from None
        if not isinstance(value, dict):
            raise ShardError(self.path, f"metadata of document {index} is not a JSON object")
        return value

    def document(self, index: int) -> Document:
        index = self._check_index(index)
        record = self._documents[index]
        return Document(
            index=index,
            tokens=self.tokens(index),
            score=float(record["score"]),
            language=Language(int(record["language"])),
            source=Source(int(record["source"])),
            flags=DocFlag(int(record["flags"])),
            content_hash=int(record["content_hash"]),
            metadata=self.metadata(index),
            loss_mask=self.loss_mask(index),
        )

    def __getitem__(self, index: int) -> Document:
        return self.document(index)

    def __iter__(self) -> Iterator[Document]:
        for index in range(len(self)):
            yield self.document(index)

    def close(self) -> None:
        """Drop this reader's references to the map (views handed out keep it alive until they go)."""
        for name in ("_map", "_documents", "_loss_mask", "_metadata_offsets", "_metadata", "_tokens", "doc_offsets"):
            setattr(self, name, None)

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


"""Scored code shards (`.scs`): the on-disk form of tokenized, model-scored training documents.

docs/shard_format.md is the full specification (for the C++ loader); this is its summary.

A shard is one little-endian file. Its first 4 KiB page holds a fixed 256-byte header (zero-padded to
4096); then six sections follow, in this order, each starting at a multiple of 4096 (zero padding
between them), and the file ends at the end of the last section rounded up to 4096:

    0 doc_offsets       u64[n + 1]       token offset of each document; [0] = 0, [n] = token_count,
                                         strictly increasing (empty documents are not allowed)
    1 documents         16-byte record[n]  f32 score, u16 language, u8 source, u8 flags, u64 content_hash
    2 loss_mask         u8[token_count]  1 = the token counts in the loss, 0 = it does not; empty
                                         (length 0) when the shard has no loss mask
    3 metadata_offsets  u64[n + 1]       byte offset of each document's metadata; [0] = 0, [n] = len(metadata)
    4 metadata          UTF-8 bytes      one compact JSON object per document, concatenated
    5 tokens            u16 or u32[token_count]  u16 exactly when vocab_size <= 65536, else u32

Header (256 bytes, every field naturally aligned, so a packed and a plain C struct agree):

    off size type        field
      0    8 u8[8]       magic = 89 53 43 53 0D 0A 1A 0A  ("\\x89SCS\\r\\n\\x1a\\n")
      8    4 u32         version = 1
     12    4 u32         header_size = 256
     16    4 u32         token_width: bytes per token, 2 (u16) or 4 (u32)
     20    4 u32         vocab_size: every token id is < vocab_size
     24    8 u64         document_count (n >= 1)
     32    8 u64         token_count
     40    8 u64         file_size: the file's exact size in bytes
     48    4 u32         shard_flags: bit 0 = has a loss mask section; other bits 0
     52    4 u32         section_count = 6
     56   32 u8[32]      tokenizer_sha256: SHA-256 of the tokenizer file's bytes
     88  144 entry[6]    section table, indexed as above; entry = {u64 offset; u64 length; u32 crc32c; u32 reserved = 0}
    232   20 u8[20]      reserved = 0
    252    4 u32         header_crc32c: CRC32C of header bytes [0, 252)

Per-document flags: bit 0 = has its own loss mask (it was given one; documents without get all ones when
the shard has a mask section), bit 1 = repo-level document (several files; no FIM), other bits 0.
Sources and languages are the fixed, append-only tables `Source` and `Language` below; the manifest
exports them. CRC32C is the Castagnoli CRC of a section's `length` bytes (no padding).

`ShardWriter` builds a shard in memory and writes it atomically; `ShardReader` memory-maps one and
validates it (header, bounds, CRC32C, offsets, columns) on open; any problem with a file raises
`ShardError` naming the file and the problem. A dataset is a directory of shards plus `manifest.json`
(`build_manifest`, `write_manifest`, `load_manifest`). `inspect_path` renders what `seedcoder shards inspect`
prints.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import IO, Any

import numpy as np

from seedcoder.data.crc32c import crc32c
from seedcoder.errors import UserError
from seedcoder.fileio import atomic_write, atomic_write_text

MAGIC = b"\x89SCS\r\n\x1a\n"  # PNG-style: a non-ASCII byte and CR/LF catch text-mode copies
FORMAT_VERSION = 1
ALIGNMENT = 4096
HEADER_SIZE = 256
HEADER_CRC_OFFSET = 252
SECTION_COUNT = 6
U16_MAX_VOCAB = 65536
SHARD_SUFFIX = ".scs"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "seedcoder-shards-manifest"
MANIFEST_VERSION = 1

SHARD_HAS_LOSS_MASK = 1  # header shard_flags bit 0


class Source(IntEnum):
    """Where a document came from (u8 column). Append-only: ids are on disk."""

    FILE = 0  # one source file
    REPO = 1  # a repository-level document (files concatenated)
    COMMIT = 2  # a commit: message + diff
    WEB = 3  # code-related web text
    SFT = 4  # an instruction-tuning sample (usually with a loss mask)


class DocFlag(IntFlag):
    """Per-document flag bits (u8 column). Bits not named here must be 0."""

    HAS_LOSS_MASK = 1  # this document was given its own loss mask
    REPO_LEVEL = 2  # repo-level (multi-file) document: the loader applies no FIM to it


KNOWN_DOC_FLAGS = int(DocFlag.HAS_LOSS_MASK | DocFlag.REPO_LEVEL)


class Language(IntEnum):
    """Document language (u16 column). Append-only: ids are on disk, and readers reject ids they do not know."""

    UNKNOWN = 0
    TEXT = 1  # natural language (web pages, docs) rather than code
    PYTHON = 2
    C = 3
    CPP = 4
    CUDA = 5
    CSHARP = 6
    JAVA = 7
    KOTLIN = 8
    SCALA = 9
    GO = 10
    RUST = 11
    JAVASCRIPT = 12
    TYPESCRIPT = 13
    PHP = 14
    RUBY = 15
    SWIFT = 16
    OBJECTIVE_C = 17
    DART = 18
    LUA = 19
    PERL = 20
    R = 21
    JULIA = 22
    MATLAB = 23
    FORTRAN = 24
    HASKELL = 25
    OCAML = 26
    FSHARP = 27
    ELIXIR = 28
    ERLANG = 29
    CLOJURE = 30
    LISP = 31
    GROOVY = 32
    VISUAL_BASIC = 33
    PASCAL = 34
    COBOL = 35
    PROLOG = 36
    ZIG = 37
    NIM = 38
    SOLIDITY = 39
    ASSEMBLY = 40
    VERILOG = 41
    VHDL = 42
    SHELL = 43
    POWERSHELL = 44
    BATCH = 45
    SQL = 46
    HTML = 47
    CSS = 48
    SCSS = 49
    VUE = 50
    SVELTE = 51
    MARKDOWN = 52
    RESTRUCTUREDTEXT = 53
    TEX = 54
    JSON = 55
    YAML = 56
    TOML = 57
    XML = 58
    INI = 59
    PROTOBUF = 60
    GRAPHQL = 61
    MAKEFILE = 62
    CMAKE = 63
    DOCKERFILE = 64
    JUPYTER = 65


class Section(IntEnum):
    """Section table index, which is also the order of the sections in the file."""

    DOC_OFFSETS = 0
    DOCUMENTS = 1
    LOSS_MASK = 2
    METADATA_OFFSETS = 3
    METADATA = 4
    TOKENS = 5


SECTION_NAMES = tuple(section.name.lower() for section in Section)

SECTION_ENTRY_DTYPE = np.dtype([("offset", "<u8"), ("length", "<u8"), ("crc32c", "<u4"), ("reserved", "<u4")])
HEADER_DTYPE = np.dtype(
    {
        "names": [
            "magic", "version", "header_size", "token_width", "vocab_size", "document_count", "token_count",
            "file_size", "shard_flags", "section_count", "tokenizer_sha256", "sections", "reserved", "header_crc32c",
        ],
        "formats": [
            ("u1", 8), "<u4", "<u4", "<u4", "<u4", "<u8", "<u8",
            "<u8", "<u4", "<u4", ("u1", 32), (SECTION_ENTRY_DTYPE, SECTION_COUNT), ("u1", 20), "<u4",
        ],
        "offsets": [0, 8, 12, 16, 20, 24, 32, 40, 48, 52, 56, 88, 232, 252],
        "itemsize": HEADER_SIZE,
    }
)
DOCUMENT_DTYPE = np.dtype(
    {
        "names": ["score", "language", "source", "flags", "content_hash"],
        "formats": ["<f4", "<u2", "u1", "u1", "<u8"],
        "offsets": [0, 4, 6, 7, 8],
        "itemsize": 16,
    }
)
assert SECTION_ENTRY_DTYPE.itemsize == 24 and HEADER_DTYPE.fields["header_crc32c"][1] == HEADER_CRC_OFFSET

SCORE_HISTOGRAM_BINS = 20
SCORE_HISTOGRAM_RANGE = (0.0, 10.0)  # the Seed-Coder quality score scale


class ShardError(UserError):
    """A shard (or manifest) file is unreadable, truncated, corrupted or does not match what was expected."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ManifestError(ShardError):
    """A manifest is malformed or disagrees with the shards it lists."""


def token_dtype_for_vocab(vocab_size: int) -> np.dtype:
    """u16 exactly when every id fits (vocab_size <= 65,536), else u32: one rule, so the layout is canonical."""
    return np.dtype("<u2") if vocab_size <= U16_MAX_VOCAB else np.dtype("<u4")


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    return (value + alignment - 1) // alignment * alignment


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (tokenizer files, shard files in the manifest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hash64(content: str | bytes) -> int:
    """A 64-bit content hash for the `content_hash` column: BLAKE2b-64 of the UTF-8 text, read little-endian."""
    if isinstance(content, str):
        content = content.encode("utf-8")
    return int.from_bytes(hashlib.blake2b(content, digest_size=8).digest(), "little")


def _sha256_bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if isinstance(value, str) and len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise ValueError(f"{what} must be a SHA-256 digest (32 bytes or 64 hex characters), got {value!r}")


def _lookup_enum(enum_type: type[IntEnum], value: int | str, what: str, where: str) -> int:
    known = f"see seedcoder.data.{enum_type.__name__}" if len(enum_type) > 8 else ", ".join(m.name.lower() for m in enum_type)
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
        self.tokenizer_sha256 = _sha256_bytes(tokenizer_sha256, "tokenizer_sha256")
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
            expected = _sha256_bytes(expected_tokenizer_sha256, "expected_tokenizer_sha256").hex()
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


# -- manifest ------------------------------------------------------------------------------------------------
def score_histogram(scores: np.ndarray) -> dict[str, Any]:
    """Counts over SCORE_HISTOGRAM_BINS equal bins of SCORE_HISTOGRAM_RANGE (last bin closed), plus below/above."""
    low, high = SCORE_HISTOGRAM_RANGE
    scores = np.asarray(scores, dtype=np.float64)
    inside = (scores >= low) & (scores <= high)
    counts, _ = np.histogram(scores[inside], bins=SCORE_HISTOGRAM_BINS, range=SCORE_HISTOGRAM_RANGE)
    return {"counts": counts.tolist(), "below": int((scores < low).sum()), "above": int((scores > high).sum())}


def _merge_histograms(into: dict[str, Any], other: dict[str, Any]) -> None:
    into["counts"] = [a + b for a, b in zip(into["counts"], other["counts"])]
    into["below"] += other["below"]
    into["above"] += other["above"]


def _empty_histogram() -> dict[str, Any]:
    return {"counts": [0] * SCORE_HISTOGRAM_BINS, "below": 0, "above": 0}


def _shard_groups(reader: ShardReader) -> tuple[dict[str, Any], dict[str, Any]]:
    """Documents, tokens and score histogram per source and per language of one shard, keyed by lower-case name."""
    lengths = reader.document_lengths
    scores = np.asarray(reader.scores)
    result = []
    for column, names in ((np.asarray(reader.sources), Source), (np.asarray(reader.languages), Language)):
        groups = {}
        for value in np.unique(column):
            selected = column == value
            groups[names(int(value)).name.lower()] = {
                "documents": int(selected.sum()),
                "tokens": int(lengths[selected].sum()),
                "score_histogram": score_histogram(scores[selected]),
            }
        result.append(groups)
    return result[0], result[1]


def tokenizer_special_tokens(tokenizer_path: str | os.PathLike) -> dict[str, int]:
    """Special tokens of a Hugging Face tokenizer.json (`added_tokens` marked special): {content: id}."""
    try:
        with open(tokenizer_path, encoding="utf-8") as file:
            added = json.load(file).get("added_tokens", [])
        return {entry["content"]: int(entry["id"]) for entry in added if entry.get("special")}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def _relative_inside(path: str, directory: str, what: str) -> str:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(directory))
    if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        raise ValueError(f"{what} {path} is not inside the dataset directory {directory}")
    return relative.replace(os.sep, "/")


def build_manifest(
    dataset_dir: str | os.PathLike,
    shard_paths: Iterable[str | os.PathLike] | None = None,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    tokenizer_name: str | None = None,
    special_tokens: Mapping[str, int] | None = None,
    verify_checksums: bool = True,
) -> dict[str, Any]:
    """Describe a dataset: every shard (opened and validated), totals, tokenizer, sources, score histograms.

    `shard_paths` default to every `*.scs` under `dataset_dir` (sorted); they must lie inside it (the manifest
    stores relative paths). All shards must share one tokenizer and vocab size; a given `tokenizer_path` must
    hash to the shards' tokenizer SHA-256.
    """
    dataset_dir = os.fspath(dataset_dir)
    if shard_paths is None:
        shard_paths = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(dataset_dir)
            for name in names
            if name.endswith(SHARD_SUFFIX)
        )
    shard_paths = [os.fspath(path) for path in shard_paths]
    if not shard_paths:
        raise ValueError(f"no shards to describe in {dataset_dir}")

    shards = []
    tokenizer_sha256 = vocab_size = None
    by_source: dict[str, dict[str, Any]] = {}
    by_language: dict[str, dict[str, Any]] = {}
    overall = _empty_histogram()
    for path in shard_paths:
        relative = _relative_inside(path, dataset_dir, "shard")
        with ShardReader(path, verify_checksums=verify_checksums) as reader:
            if tokenizer_sha256 is None:
                tokenizer_sha256, vocab_size = reader.tokenizer_sha256, reader.vocab_size
            elif (reader.tokenizer_sha256, reader.vocab_size) != (tokenizer_sha256, vocab_size):
                raise ShardError(path, "tokenizer or vocab_size differs from the dataset's first shard")
            _merge_histograms(overall, score_histogram(reader.scores))
            for groups, shard_groups in zip((by_source, by_language), _shard_groups(reader)):
                for name, shard_group in shard_groups.items():
                    group = groups.setdefault(name, {"documents": 0, "tokens": 0, "score_histogram": _empty_histogram()})
                    group["documents"] += shard_group["documents"]
                    group["tokens"] += shard_group["tokens"]
                    _merge_histograms(group["score_histogram"], shard_group["score_histogram"])
            shards.append(
                {
                    "path": relative,
                    "bytes": reader.header.file_size,
                    "documents": reader.document_count,
                    "tokens": reader.token_count,
                    "has_loss_mask": reader.has_loss_mask,
                    "header_crc32c": reader.header.header_crc32c,
                    "sha256": file_sha256(path),
                }
            )

    tokenizer: dict[str, Any] = {"path": None, "name": tokenizer_name, "sha256": tokenizer_sha256, "vocab_size": vocab_size}
    if tokenizer_path is not None:
        tokenizer_path = os.fspath(tokenizer_path)
        actual = file_sha256(tokenizer_path)
        if actual != tokenizer_sha256:
            raise ValueError(f"tokenizer {tokenizer_path} has SHA-256 {actual}, but the shards were made with {tokenizer_sha256}")
        try:
            tokenizer["path"] = _relative_inside(tokenizer_path, dataset_dir, "tokenizer")
        except ValueError:
            tokenizer["path"] = os.path.abspath(tokenizer_path)
        if special_tokens is None:
            special_tokens = tokenizer_special_tokens(tokenizer_path)
    tokenizer["special_tokens"] = dict(special_tokens or {})

    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "shard_format_version": FORMAT_VERSION,
        "tokenizer": tokenizer,
        "totals": {
            "shards": len(shards),
            "documents": sum(shard["documents"] for shard in shards),
            "tokens": sum(shard["tokens"] for shard in shards),
            "bytes": sum(shard["bytes"] for shard in shards),
        },
        "shards": shards,
        "sources": dict(sorted(by_source.items(), key=lambda item: Source[item[0].upper()])),
        "languages": dict(sorted(by_language.items(), key=lambda item: Language[item[0].upper()])),
        "score_histogram": {
            "bins": SCORE_HISTOGRAM_BINS,
            "range": list(SCORE_HISTOGRAM_RANGE),
            "all": overall,
        },
        "source_ids": {source.name.lower(): int(source) for source in Source},
        "language_ids": {language.name.lower(): int(language) for language in Language},
        "document_flags": {flag.name.lower(): int(flag) for flag in DocFlag},
    }


def write_manifest(dataset_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> str:
    """Write `dataset_dir/manifest.json` atomically; returns its path."""
    path = os.path.join(os.fspath(dataset_dir), MANIFEST_NAME)
    text = json.dumps(manifest, indent=1, sort_keys=False) + "\n"
    atomic_write_text(path, text)
    return path


def load_manifest(path: str | os.PathLike, *, check: str = "header") -> dict[str, Any]:
    """Load a manifest (a file, or a dataset directory holding manifest.json) and check it against its shards.

    check="none": only the manifest's own consistency (schema, totals). "header" (default): also each shard's
    size and header (CRC, counts, tokenizer) — a stat and 256 bytes per shard. "sha256": also each shard's
    SHA-256 (reads every byte). The result gains "dataset_dir" (absolute), where the relative paths start.
    """
    if check not in ("none", "header", "sha256"):
        raise ValueError(f"check must be 'none', 'header' or 'sha256', got {check!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file)
    except OSError as error:
        raise ManifestError(path, f"cannot open: {error.strerror or error}") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ManifestError(path, f"not valid JSON: {error}") from None

    def bad(problem: str) -> ManifestError:
        return ManifestError(path, problem)

    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise bad(f"not a shards manifest (format is not {MANIFEST_FORMAT!r})")
    if manifest.get("version") != MANIFEST_VERSION:
        raise bad(f"unsupported manifest version {manifest.get('version')!r} (this reader reads {MANIFEST_VERSION})")
    for key, kind in (("tokenizer", dict), ("totals", dict), ("shards", list), ("score_histogram", dict)):
        if not isinstance(manifest.get(key), kind):
            raise bad(f"missing or malformed {key!r}")
    tokenizer = manifest["tokenizer"]
    totals = {"shards": 0, "documents": 0, "tokens": 0, "bytes": 0}
    dataset_dir = os.path.dirname(os.path.abspath(path))
    for number, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict) or not all(
            isinstance(shard.get(key), int) for key in ("bytes", "documents", "tokens", "header_crc32c")
        ) or not isinstance(shard.get("path"), str):
            raise bad(f"shard entry {number} is malformed")
        relative = shard["path"]
        if os.path.isabs(relative) or os.pardir in relative.split("/"):
            raise bad(f"shard path {relative!r} is not relative to the dataset directory")
        totals["shards"] += 1
        for key in ("documents", "tokens", "bytes"):
            totals[key] += shard[key]
        if check == "none":
            continue
        shard_path = os.path.join(dataset_dir, relative)
        try:
            header = read_header(shard_path)
        except ShardError as error:
            raise bad(f"shard {relative}: {error.problem}") from None
        if header.file_size != shard["bytes"]:
            raise bad(f"shard {relative} is {header.file_size} bytes, the manifest says {shard['bytes']}")
        if header.header_crc32c != shard["header_crc32c"]:
            raise bad(f"shard {relative} header CRC {header.header_crc32c:#010x} differs from the manifest's: it was rewritten")
        if (header.document_count, header.token_count) != (shard["documents"], shard["tokens"]):
            raise bad(f"shard {relative} counts differ from the manifest's")
        if (header.tokenizer_sha256, header.vocab_size) != (tokenizer.get("sha256"), tokenizer.get("vocab_size")):
            raise bad(f"shard {relative} was made with another tokenizer than the manifest's")
        if check == "sha256" and file_sha256(shard_path) != shard.get("sha256"):
            raise bad(f"shard {relative} SHA-256 differs from the manifest's: corrupted or rewritten")
    if totals != manifest["totals"]:
        raise bad(f"totals {manifest['totals']} disagree with the shard entries {totals}")
    manifest["dataset_dir"] = dataset_dir
    return manifest


# -- inspect -------------------------------------------------------------------------------------------------
_SPARK_LEVELS = " .:-=+*#%@"  # ASCII, so the output survives any terminal encoding


def _sparkline(counts: list[int]) -> str:
    peak = max(counts) if counts else 0
    if peak == 0:
        return " " * len(counts)
    return "".join(_SPARK_LEVELS[0 if c == 0 else 1 + (c * (len(_SPARK_LEVELS) - 2)) // peak] for c in counts)


def _histogram_lines(histogram: Mapping[str, Any], width: int = 40) -> list[str]:
    low, high = SCORE_HISTOGRAM_RANGE
    step = (high - low) / SCORE_HISTOGRAM_BINS
    counts = histogram["counts"]
    peak = max(max(counts), 1)
    lines = []
    for i, count in enumerate(counts):
        closing = "]" if i == len(counts) - 1 else ")"
        bar = "#" * round(width * count / peak)
        lines.append(f"  [{low + i * step:5.2f}, {low + (i + 1) * step:5.2f}{closing} {count:>10,} {bar}")
    if histogram["below"] or histogram["above"]:
        lines.append(f"  below {low}: {histogram['below']:,}   above {high}: {histogram['above']:,}")
    return lines


def _group_lines(title: str, groups: Mapping[str, Mapping[str, Any]]) -> list[str]:
    low, high = SCORE_HISTOGRAM_RANGE
    lines = [f"{title} (documents, tokens, score histogram {low:g}..{high:g} in {SCORE_HISTOGRAM_BINS} bins):"]
    for name, group in groups.items():
        histogram = group["score_histogram"]
        lines.append(
            f"  {name:<16} {group['documents']:>10,} docs {group['tokens']:>14,} tok  |{_sparkline(histogram['counts'])}|"
            + (f" <{low:g}: {histogram['below']:,}" if histogram["below"] else "")
            + (f" >{high:g}: {histogram['above']:,}" if histogram["above"] else "")
        )
    return lines


def _load_tokenizer(tokenizer_path: str):
    from tokenizers import Tokenizer  # lazily: only `inspect` decoding needs it

    return Tokenizer.from_file(tokenizer_path)


def _sample_lines(reader: ShardReader, index: int, tokenizer_path: str | None, max_chars: int) -> list[str]:
    document = reader.document(index)
    lines = [
        f"document {document.index} of {reader.path}: {len(document.tokens):,} tokens, score {document.score:g}, "
        f"language {document.language.name.lower()}, source {document.source.name.lower()}, "
        f"flags {', '.join(f.name.lower() for f in DocFlag if f & document.flags) or 'none'}, "
        f"content hash {document.content_hash:016x}",
        f"  metadata: {json.dumps(document.metadata, ensure_ascii=False)}",
    ]
    if document.loss_mask is not None:
        lines.append(f"  loss mask: {int(document.loss_mask.sum()):,} of {len(document.loss_mask):,} tokens count")
    note = None
    if tokenizer_path is not None:
        if file_sha256(tokenizer_path) != reader.tokenizer_sha256:
            note = f"  ({tokenizer_path} is not the shard's tokenizer (SHA-256 differs): showing token ids)"
        else:
            try:
                text = _load_tokenizer(tokenizer_path).decode(document.tokens.tolist(), skip_special_tokens=False)
            except ImportError:
                note = "  (the `tokenizers` package is not installed: showing token ids)"
            except Exception as error:  # a tokenizer file the library cannot load: fall back to ids
                note = f"  (cannot decode with {tokenizer_path}: {error}; showing token ids)"
            else:
                shown = text if len(text) <= max_chars else f"{text[:max_chars]}\n... ({len(text) - max_chars:,} more characters)"
                return lines + ["  text:", *("    " + line for line in shown.splitlines())]
    if note:
        lines.append(note)
    ids = document.tokens[:64].tolist()
    more = f" ... ({len(document.tokens) - 64:,} more)" if len(document.tokens) > 64 else ""
    return lines + [f"  token ids: {ids}{more}"]


def inspect_path(
    path: str | os.PathLike,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    document_index: int = 0,
    verify_checksums: bool = True,
    max_chars: int = 2000,
    out: IO[str] | None = None,
) -> None:
    """Print a shard's or a dataset's counts, score histograms per language/source, and one decoded document.

    `path` is a shard, a manifest.json, or a dataset directory holding one. The tokenizer is `tokenizer_path`,
    else the manifest's, else a tokenizer.json beside the shard; without one the sample shows token ids.
    """
    out = out or sys.stdout
    path = os.fspath(path)
    lines: list[str] = []
    if os.path.isdir(path) or path.endswith(".json"):
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, MANIFEST_NAME)):
            manifest = build_manifest(path, verify_checksums=verify_checksums)
            manifest["dataset_dir"] = os.path.abspath(path)
            lines.append(f"(no {MANIFEST_NAME} in {path}: described from its shards)")
        else:
            manifest = load_manifest(path)
        dataset_dir, tokenizer, totals = manifest["dataset_dir"], manifest["tokenizer"], manifest["totals"]
        lines += [
            f"dataset {dataset_dir}",
            f"  {totals['shards']:,} shards, {totals['documents']:,} documents, {totals['tokens']:,} tokens, "
            f"{totals['bytes']:,} bytes",
            f"  tokenizer {tokenizer.get('name') or tokenizer.get('path') or '?'} (SHA-256 {tokenizer['sha256']}, "
            f"vocab {tokenizer['vocab_size']:,}, special tokens {len(tokenizer.get('special_tokens') or {})})",
        ]
        for shard in manifest["shards"]:
            lines.append(f"  {shard['path']}: {shard['documents']:,} docs, {shard['tokens']:,} tokens, {shard['bytes']:,} bytes")
        lines += ["score histogram (all documents):", *_histogram_lines(manifest["score_histogram"]["all"])]
        lines += _group_lines("by source", manifest["sources"]) + _group_lines("by language", manifest["languages"])
        if tokenizer_path is None and tokenizer.get("path"):
            candidate = os.path.join(dataset_dir, tokenizer["path"])
            tokenizer_path = candidate if os.path.exists(candidate) else None
        sample_shard = os.path.join(dataset_dir, manifest["shards"][0]["path"]) if manifest["shards"] else None
    else:
        sample_shard = path
        if tokenizer_path is None:
            beside = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer.json")
            tokenizer_path = beside if os.path.exists(beside) else None
    if sample_shard is not None:
        with ShardReader(sample_shard, verify_checksums=verify_checksums) as reader:
            if sample_shard == path:
                header = reader.header
                by_source, by_language = _shard_groups(reader)
                sections = zip(SECTION_NAMES, header.sections)
                section_texts = [f"{name} @{at} +{size} {crc:08x}" for name, (at, size, crc) in sections]
                lines += [
                    f"shard {path}",
                    f"  format version {header.version}, tokens {header.token_dtype.name}, vocab {header.vocab_size:,}, "
                    f"loss mask {'yes' if header.has_loss_mask else 'no'}, {header.file_size:,} bytes",
                    f"  {header.document_count:,} documents, {header.token_count:,} tokens, "
                    f"tokenizer SHA-256 {header.tokenizer_sha256}",
                    "  sections (offset +length crc32c): " + ", ".join(section_texts),
                    "score histogram (all documents):",
                    *_histogram_lines(score_histogram(reader.scores)),
                    *_group_lines("by source", by_source),
                    *_group_lines("by language", by_language),
                ]
            index = document_index
            if not -len(reader) <= index < len(reader):
                lines.append(f"(document {index} is out of range: the shard holds {len(reader)}; showing document 0)")
                index = 0
            tokenizer_arg = None if tokenizer_path is None else os.fspath(tokenizer_path)
            lines += ["sample:", *_sample_lines(reader, index, tokenizer_arg, max_chars)]
    out.write("\n".join(lines) + "\n")

"""Scored code shards (`.scs`): the on-disk layout of tokenized, model-scored training documents.

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

This module owns the layout (constants, the header and document dtypes, the id tables), `ShardError`, and the
hashes the format stores. `shard_writer.ShardWriter` writes a shard, `shard_reader.ShardReader` reads and
validates one, `manifest` describes a directory of shards, and `shard_inspect` renders `seedcoder shards inspect`.
"""

from __future__ import annotations

import hashlib
import os
from enum import IntEnum, IntFlag

import numpy as np

from seedcoder.errors import UserError

MAGIC = b"\x89SCS\r\n\x1a\n"  # PNG-style: a non-ASCII byte and CR/LF catch text-mode copies
FORMAT_VERSION = 1
ALIGNMENT = 4096
HEADER_SIZE = 256
HEADER_CRC_OFFSET = 252
SECTION_COUNT = 6
U16_MAX_VOCAB = 65536
SHARD_SUFFIX = ".scs"

SHARD_HAS_LOSS_MASK = 1  # header shard_flags bit 0


class Source(IntEnum):
    """Where a document came from (u8 column). Append-only: ids are on disk."""

    FILE = 0  # one source file
    REPO = 1  # a repository-level document (files concatenated)
    COMMIT = 2  # a commit: message + diff
    WEB = 3  # code-related web text
    SFT = 4  # an instruction-tuning sample (usually with a loss mask)
    HQ = 5  # a document of the high-quality set (iterative recall, curate.hq_recall): continued pretraining


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


class ShardError(UserError):
    """A shard (or manifest) file is unreadable, truncated, corrupted or does not match what was expected."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")



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


def sha256_bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if isinstance(value, str) and len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise ValueError(f"{what} must be a SHA-256 digest (32 bytes or 64 hex characters), got {value!r}")


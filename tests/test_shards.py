"""Scored code shards: writer/reader round trip, the exact header layout, every kind of damage -> ShardError,
a seeded fuzz test, the manifest, and `seedcoder shards inspect`."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from seedcoder.cli import main as cli_main
from seedcoder.data import crc32c as crc_module
from seedcoder.data.manifest import ManifestError, build_manifest, load_manifest, score_histogram, write_manifest
from seedcoder.data.shard_reader import ShardReader, read_header
from seedcoder.data.shard_writer import ShardWriter
from seedcoder.data.shards import (
    ALIGNMENT,
    HEADER_CRC_OFFSET,
    HEADER_DTYPE,
    HEADER_SIZE,
    MAGIC,
    SECTION_ENTRY_DTYPE,
    SECTION_NAMES,
    DocFlag,
    Language,
    Section,
    ShardError,
    Source,
    content_hash64,
    file_sha256,
)

TOKENIZER_SHA = "ab" * 32
OTHER_SHA = "cd" * 32
FUZZ_CASES = 420  # ~0.5 s; 36,000 cases over 12 seeds were run once by hand, all ShardError or intact

# The header as a C packed struct would read it (docs/shard_format.md): if this and the module disagree, the spec broke.
HEADER_STRUCT = struct.Struct("<8sIIIIQQQII32s" + "QQII" * 6 + "20sI")


# -- helpers -------------------------------------------------------------------------------------------------
def random_documents(rng, count, vocab_size, *, masks=False, max_length=60):
    documents = []
    for index in range(count):
        length = int(rng.integers(1, max_length))
        tokens = rng.integers(0, vocab_size, length)
        tokens[0] = vocab_size - 1 if index % 4 == 0 else tokens[0]  # the largest id must survive the narrow dtype
        documents.append(
            {
                "tokens": tokens,
                "score": float(np.float32(rng.uniform(-1, 11))),
                "language": int(rng.integers(0, len(Language))),
                "source": int(rng.integers(0, len(Source))),
                "content_hash": int(rng.integers(0, 2**63)) * 2 + 1,
                "flags": int(DocFlag.REPO_LEVEL) if index % 5 == 1 else 0,
                "metadata": {"id": f"doc-{index}", "repo": "org/répo", "path": f"src/f{index}.py", "n": index},
                "loss_mask": rng.integers(0, 2, length).astype(bool) if masks and index % 2 == 0 else None,
            }
        )
    return documents


def write_shard(path, documents, vocab_size=1000, tokenizer_sha256=TOKENIZER_SHA):
    with ShardWriter(path, vocab_size=vocab_size, tokenizer_sha256=tokenizer_sha256) as writer:
        for document in documents:
            writer.add(**document)
    return path


def assert_documents_equal(reader, documents):
    assert len(reader) == len(documents)
    for index, expected in enumerate(documents):
        document = reader.document(index)
        np.testing.assert_array_equal(document.tokens, expected["tokens"])
        assert document.score == expected["score"]
        assert document.language == expected["language"] and document.source == expected["source"]
        assert document.content_hash == expected["content_hash"]
        assert document.metadata == expected["metadata"]
        has_mask = expected["loss_mask"] is not None
        assert document.flags == expected["flags"] | (DocFlag.HAS_LOSS_MASK if has_mask else 0)
        if reader.has_loss_mask:
            np.testing.assert_array_equal(document.loss_mask, expected["loss_mask"] if has_mask else 1)
        else:
            assert document.loss_mask is None


def header_fields(path):
    with open(path, "rb") as file:
        return np.frombuffer(file.read(HEADER_SIZE), dtype=HEADER_DTYPE).copy()[0]


def rewrite(path, *, header=None, section=None, fix_section_crc=True, fix_header_crc=True):
    """Apply edits to a shard in place: `header(fields)` edits the header record, `section=(Section, fn(bytearray))`
    edits a section's bytes; the CRCs are then recomputed so deeper checks (not the checksums) see the damage."""
    data = bytearray(open(path, "rb").read())
    fields = np.frombuffer(bytes(data[:HEADER_SIZE]), dtype=HEADER_DTYPE).copy()
    if section is not None:
        which, edit = section
        offset, length = int(fields[0]["sections"][which]["offset"]), int(fields[0]["sections"][which]["length"])
        body = bytearray(data[offset : offset + length])
        edit(body)
        data[offset : offset + length] = body
        if fix_section_crc:
            fields[0]["sections"][which]["crc32c"] = crc_module.crc32c(bytes(body))
    if header is not None:
        header(fields[0])
    raw = bytearray(fields.tobytes())
    if fix_header_crc:
        raw[HEADER_CRC_OFFSET:] = crc_module.crc32c(bytes(raw[:HEADER_CRC_OFFSET])).to_bytes(4, "little")
    data[:HEADER_SIZE] = raw
    open(path, "wb").write(bytes(data))


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    """A tiny byte-level BPE tokenizer.json, trained here (no downloads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<eos>", "<fim_prefix>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = ["def add(a, b):\n    return a + b\n", "int main(void) { return 0; }\n", "print('hello, world')\n"] * 20
    tokenizer.train_from_iterator(corpus, trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return path, tokenizer


@pytest.fixture
def masked_shard(tmp_path):
    documents = random_documents(np.random.default_rng(1), 12, 1000, masks=True)
    return write_shard(tmp_path / "masked.scs", documents), documents


# -- round trip ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "vocab_size, width", [(1000, 2), (65536, 2), (65537, 4), (200_000, 4)], ids=["u16", "u16-max", "u32-min", "u32"]
)
@pytest.mark.parametrize("masks", [False, True], ids=["no-mask", "mask"])
def test_round_trip(tmp_path, vocab_size, width, masks):
    documents = random_documents(np.random.default_rng(vocab_size), 40, vocab_size, masks=masks)
    path = write_shard(tmp_path / "shard.scs", documents, vocab_size)
    with ShardReader(path, expected_tokenizer_sha256=TOKENIZER_SHA) as reader:
        assert reader.token_dtype.itemsize == width
        assert reader.all_tokens.dtype.itemsize == width
        assert reader.has_loss_mask == masks
        assert reader.token_count == sum(len(d["tokens"]) for d in documents)
        assert reader.tokenizer_sha256 == TOKENIZER_SHA
        assert_documents_equal(reader, documents)
        np.testing.assert_array_equal(reader.document_lengths, [len(d["tokens"]) for d in documents])
        assert reader[-1].index == len(documents) - 1
        with pytest.raises(IndexError):
            reader.tokens(len(documents))
    header = read_header(path)
    assert os.path.getsize(path) == header.file_size and header.file_size % ALIGNMENT == 0
    assert all(offset % ALIGNMENT == 0 for offset, _, _ in header.sections)
    assert [name for name in os.listdir(tmp_path)] == ["shard.scs"]  # no temporary file left behind


def test_header_layout_matches_the_packed_struct(masked_shard):
    path, documents = masked_shard
    assert HEADER_DTYPE.itemsize == HEADER_STRUCT.size == HEADER_SIZE == 256
    raw = open(path, "rb").read(HEADER_SIZE)
    values = HEADER_STRUCT.unpack(raw)
    magic, version, header_size, token_width, vocab_size, document_count, token_count, file_size, shard_flags = values[:9]
    section_count, tokenizer_sha256 = values[9:11]
    table = [values[11 + 4 * i : 15 + 4 * i] for i in range(6)]
    reserved, header_crc = values[35:]
    header = read_header(path)
    assert magic == MAGIC == bytes.fromhex("89 53 43 53 0d 0a 1a 0a")
    assert (version, header_size, token_width, vocab_size) == (1, 256, 2, 1000)
    assert (document_count, token_count, file_size) == (len(documents), header.token_count, os.path.getsize(path))
    assert (shard_flags, section_count, tokenizer_sha256.hex()) == (1, 6, TOKENIZER_SHA)
    assert [(offset, length, crc) for offset, length, crc, _ in table] == list(header.sections)
    assert all(entry[3] == 0 for entry in table) and reserved == bytes(20)
    assert header_crc == crc_module.crc32c(raw[:252])
    # Section order on disk is the table order, each at the next 4 KiB boundary after the previous one.
    position = ALIGNMENT
    for offset, length, _ in header.sections:
        assert offset == position
        position = (offset + length + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    assert position == file_size
    # The documents section is the packed 16-byte record, read here with struct as C would.
    record_offset = header.sections[Section.DOCUMENTS][0]
    score, language, source, flags, content_hash = struct.unpack_from("<fHBBQ", open(path, "rb").read(), record_offset)
    assert (score, language, source, content_hash) == (
        documents[0]["score"], documents[0]["language"], documents[0]["source"], documents[0]["content_hash"]
    )
    assert flags == documents[0]["flags"] | DocFlag.HAS_LOSS_MASK


def test_metadata_layout_is_compact_sorted_json(masked_shard):
    path, documents = masked_shard
    header = read_header(path)
    data = open(path, "rb").read()
    offsets_at = header.sections[Section.METADATA_OFFSETS][0]
    offsets = np.frombuffer(data, "<u8", len(documents) + 1, offsets_at)
    blob_at = header.sections[Section.METADATA][0]
    first = data[blob_at + offsets[0] : blob_at + offsets[1]]
    assert first == json.dumps(documents[0]["metadata"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- the writer refuses bad input ----------------------------------------------------------------------------
GOOD = {"tokens": [1, 2, 3], "score": 5.0, "language": "python", "source": "file", "content_hash": 7}


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"tokens": []}, ValueError, "empty document"),
        ({"tokens": np.array([1.0, 2.0])}, TypeError, "integer array"),
        ({"tokens": np.array([True, False])}, TypeError, "integer array"),
        ({"tokens": [[1, 2]]}, ValueError, "1-D"),
        ({"tokens": [1, -1]}, ValueError, "negative token id -1 at position 1"),
        ({"tokens": [1, 1000, 5]}, ValueError, "token id 1000 at position 1 is >= vocab_size 1000"),
        ({"score": float("nan")}, ValueError, "finite"),
        ({"score": float("inf")}, ValueError, "finite"),
        ({"score": 1e39}, ValueError, "float32"),
        ({"score": "7"}, TypeError, "number"),
        ({"language": "klingon"}, ValueError, "unknown language 'klingon'"),
        ({"language": 9999}, ValueError, "unknown language id 9999"),
        ({"source": "forum"}, ValueError, "unknown source"),
        ({"source": 6}, ValueError, "unknown source id 6"),
        ({"flags": 4}, ValueError, "unknown flag bits"),
        ({"flags": int(DocFlag.HAS_LOSS_MASK)}, ValueError, "no loss_mask was given"),
        ({"content_hash": -1}, ValueError, "content_hash"),
        ({"content_hash": 2**64}, ValueError, "content_hash"),
        ({"loss_mask": [1, 0]}, ValueError, "loss_mask has shape (2,)"),
        ({"loss_mask": [1, 2, 0]}, ValueError, "0 or 1"),
        ({"loss_mask": [0.5, 1.0, 1.0]}, TypeError, "loss_mask"),
        ({"metadata": {"x": object()}}, ValueError, "not JSON-serializable"),
        ({"metadata": {"x": float("nan")}}, ValueError, "not JSON-serializable"),
        ({"metadata": {1: "x"}}, TypeError, "str keys"),
    ],
)
def test_writer_refuses_bad_input(tmp_path, change, error, message):
    path = tmp_path / "shard.scs"
    writer = ShardWriter(path, vocab_size=1000, tokenizer_sha256=TOKENIZER_SHA)
    writer.add(**GOOD)
    with pytest.raises(error, match="document 1: ") as raised:
        writer.add(**{**GOOD, **change})
    assert message in str(raised.value)
    writer.add(**GOOD)  # a refused document leaves no trace
    writer.close()
    with ShardReader(path) as reader:
        assert len(reader) == 2 and reader.token_count == 6 and not reader.has_loss_mask


def test_writer_refuses_bad_shards(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        ShardWriter(tmp_path / "a.scs", vocab_size=0, tokenizer_sha256=TOKENIZER_SHA)
    with pytest.raises(ValueError, match="SHA-256"):
        ShardWriter(tmp_path / "a.scs", vocab_size=10, tokenizer_sha256="abc")
    with pytest.raises(ValueError, match="no documents"):
        ShardWriter(tmp_path / "a.scs", vocab_size=10, tokenizer_sha256=TOKENIZER_SHA).close()
    with pytest.raises(RuntimeError, match="boom"):  # an exception inside the block writes nothing
        with ShardWriter(tmp_path / "b.scs", vocab_size=10, tokenizer_sha256=TOKENIZER_SHA) as writer:
            writer.add(**{**GOOD, "tokens": [1]})
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_writer_replaces_atomically(tmp_path):
    path = tmp_path / "shard.scs"
    write_shard(path, [GOOD | {"tokens": [1]}])
    write_shard(path, [GOOD | {"tokens": [2, 3]}] * 2)
    with ShardReader(path) as reader:
        assert reader.token_count == 4
    assert os.listdir(tmp_path) == ["shard.scs"]


# -- every kind of damage -> the right ShardError ------------------------------------------------------------
def open_shard(path, **kwargs):
    with ShardReader(path, **kwargs) as reader:
        for index in range(len(reader)):  # metadata is parsed lazily: touch every document
            reader.document(index)


def expect_error(path, pattern, **kwargs):
    with pytest.raises(ShardError, match=pattern) as raised:
        open_shard(path, **kwargs)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("where", ["boundary", "middle"])
@pytest.mark.parametrize("section", [s for s in Section if s != Section.LOSS_MASK] + [Section.LOSS_MASK], ids=SECTION_NAMES)
def test_truncation_names_the_cut_section(masked_shard, section, where):
    path, _ = masked_shard
    offset, length, _ = read_header(path).sections[section]
    size = offset if where == "boundary" else offset + length // 2
    os.truncate(path, size)
    expect_error(path, rf"truncated inside section '{SECTION_NAMES[section]}': the file is {size} bytes")


@pytest.mark.parametrize("size", [0, 7, 255])
def test_truncation_inside_the_header(masked_shard, size):
    path, _ = masked_shard
    os.truncate(path, size)
    expect_error(path, f"truncated: the file is {size} bytes, smaller than the 256-byte header")


def test_truncation_of_the_tail_padding_and_extra_bytes(masked_shard):
    path, _ = masked_shard
    size = os.path.getsize(path)
    os.truncate(path, size - 1)
    expect_error(path, rf"truncated: the file is {size - 1} bytes, the header says {size}")
    os.truncate(path, size + 1)
    expect_error(path, rf"size mismatch: the file is {size + 1} bytes, the header says {size}")


@pytest.mark.parametrize("section", list(Section), ids=SECTION_NAMES)
def test_flipped_byte_in_each_section(masked_shard, section):
    path, _ = masked_shard
    offset, length, _ = read_header(path).sections[section]
    data = bytearray(open(path, "rb").read())
    data[offset + length // 3] ^= 0x10
    open(path, "wb").write(bytes(data))
    expect_error(path, rf"checksum mismatch in section '{SECTION_NAMES[section]}'")


def test_flipped_byte_without_checksums_is_the_documented_trade_off(masked_shard):
    path, documents = masked_shard
    offset, _, _ = read_header(path).sections[Section.TOKENS]
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x01
    open(path, "wb").write(bytes(data))
    with ShardReader(path, verify_checksums=False) as reader:  # structure is still checked, token bytes are not
        assert int(reader.tokens(0)[0]) == int(documents[0]["tokens"][0]) ^ 0x01
    expect_error(path, "checksum mismatch in section 'tokens'")


@pytest.mark.parametrize("position", [8, 20, 100, 251, 253])
def test_flipped_byte_in_the_header(masked_shard, position):
    path, _ = masked_shard
    data = bytearray(open(path, "rb").read())
    data[position] ^= 0x04
    open(path, "wb").write(bytes(data))
    pattern = "unsupported format version" if position == 8 else "header checksum mismatch"
    expect_error(path, pattern, verify_checksums=False)


def test_wrong_magic_version_and_tokenizer(masked_shard, tmp_path):
    path, _ = masked_shard
    expect_error(path, "tokenizer mismatch: the shard was tokenized with a tokenizer of SHA-256 " + TOKENIZER_SHA,
                 expected_tokenizer_sha256=OTHER_SHA)
    open_shard(path, expected_tokenizer_sha256=bytes.fromhex(TOKENIZER_SHA))  # raw digest bytes work too
    rewrite(path, header=lambda h: h.__setitem__("version", 2))
    expect_error(path, "unsupported format version 2 ")
    data = bytearray(open(path, "rb").read())
    data[:8] = b"PK\x03\x04\x00\x00\x00\x00"
    open(path, "wb").write(bytes(data))
    expect_error(path, "not a shard: bad magic 50 4b 03 04")
    expect_error(tmp_path / "missing.scs", "cannot open")


def set_section(field, value, section=Section.TOKENS):
    def edit(header):
        header["sections"][section][field] = value

    return edit


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (set_section("offset", 1 << 40), "section 'tokens' .* runs past file_size"),
        (set_section("offset", 4096 * 6 + 8), "section 'tokens' offset .* is not a multiple of 4096"),
        (set_section("offset", 4096, Section.DOCUMENTS), "section 'documents' at offset 4096 overlaps"),
        (set_section("offset", 0, Section.DOC_OFFSETS), "section 'doc_offsets' at offset 0 overlaps the header"),
        (set_section("length", 8, Section.DOC_OFFSETS), r"section 'doc_offsets' has length 8 \(expected 104"),
        (set_section("length", 2**64 - 1), "section 'tokens' has length"),
        (set_section("reserved", 1), "reserved bytes are not zero"),
        (lambda h: h.__setitem__("document_count", 2**64 - 1), "token_count .* < document_count"),
        (lambda h: h.__setitem__("document_count", 13), "section 'doc_offsets' has length 104 \\(expected 112"),
        (lambda h: h.__setitem__("document_count", 0), "document_count is 0"),
        (lambda h: h.__setitem__("token_count", 2**62), "section 'loss_mask' has length"),
        (lambda h: h.__setitem__("file_size", 1 << 50), "file_size .* does not end the last section"),
        (lambda h: h.__setitem__("file_size", 4096 * 3), "section .loss_mask. .* runs past file_size 12288"),
        (lambda h: h.__setitem__("file_size", 100), "file_size 100 is not a multiple of 4096"),
        (lambda h: h.__setitem__("token_width", 4), "token_width 4 for vocab_size 1000 \\(expected 2\\)"),
        (lambda h: h.__setitem__("vocab_size", 70000), "token_width 2 for vocab_size 70000"),
        (lambda h: h.__setitem__("vocab_size", 0), "vocab_size is 0"),
        (lambda h: h.__setitem__("vocab_size", 3), "token id .* >= vocab_size 3"),
        (lambda h: h.__setitem__("header_size", 512), "header_size 512"),
        (lambda h: h.__setitem__("section_count", 7), "section_count 7"),
        (lambda h: h.__setitem__("shard_flags", 3), "unknown shard_flags bits"),
        (lambda h: h.__setitem__("shard_flags", 0), "section 'loss_mask' has length .* \\(expected 0"),
        (lambda h: h["reserved"].__setitem__(5, 9), "reserved bytes are not zero"),
    ],
)
def test_header_fields_out_of_bounds(masked_shard, edit, pattern):
    path, _ = masked_shard
    rewrite(path, header=edit)  # the header CRC is made right, so the field checks themselves must catch it
    expect_error(path, "bad header: " + pattern if "token id" not in pattern else pattern)


def put(dtype, index, value):
    def edit(body):
        array = np.frombuffer(body, dtype=dtype)
        array = array.copy()
        array[index] = value
        body[:] = array.tobytes()

    return edit


def put_field(field, index, value):
    from seedcoder.data.shards import DOCUMENT_DTYPE

    def edit(body):
        records = np.frombuffer(bytes(body), dtype=DOCUMENT_DTYPE).copy()
        records[field][index] = value
        body[:] = records.tobytes()

    return edit


@pytest.mark.parametrize(
    "section, edit, pattern",
    [
        (Section.DOC_OFFSETS, put("<u8", 3, 0), "document offsets are not strictly increasing at document 2"),
        (Section.DOC_OFFSETS, put("<u8", 2, 2**64 - 5), "document offsets are not strictly increasing at document 1"),
        (Section.DOC_OFFSETS, put("<u8", -1, 1), r"document offsets run \[0, 1\]"),
        (Section.DOC_OFFSETS, put("<u8", 0, 1), r"document offsets run \[1, "),
        (Section.METADATA_OFFSETS, put("<u8", -1, 3), "metadata offsets run"),
        (Section.METADATA_OFFSETS, put("<u8", 2, 1), "metadata offsets decrease at document 1"),
        (Section.DOCUMENTS, put_field("score", 4, np.nan), "document 4 has a score that is not finite"),
        (Section.DOCUMENTS, put_field("score", 4, -np.inf), "document 4 has a score that is not finite"),
        (Section.DOCUMENTS, put_field("language", 2, 4000), "document 2 has an unknown language id"),
        (Section.DOCUMENTS, put_field("source", 3, 9), "document 3 has an unknown source id"),
        (Section.DOCUMENTS, put_field("flags", 5, 0x80), "document 5 has unknown flag bits"),
        (Section.LOSS_MASK, put("u1", 7, 2), "loss mask holds values other than 0 and 1"),
        (Section.TOKENS, put("<u2", 0, 1000), "token id 1000 >= vocab_size 1000"),
        (Section.METADATA, put("u1", 1, 0xFF), "metadata of document 0 is not valid UTF-8 JSON"),
        (Section.METADATA, lambda body: body.__setitem__(slice(0, 2), b"[]"), "metadata of document 0 is not"),
    ],
)
def test_section_contents_are_checked(masked_shard, section, edit, pattern):
    path, _ = masked_shard
    rewrite(path, section=(section, edit))  # every CRC made right: only the content checks can catch it
    expect_error(path, pattern)


def test_loss_mask_flag_without_a_mask_section(tmp_path):
    path = write_shard(tmp_path / "plain.scs", random_documents(np.random.default_rng(2), 5, 1000))
    rewrite(path, section=(Section.DOCUMENTS, put_field("flags", 1, 1)))
    expect_error(path, "document 1 is flagged HAS_LOSS_MASK but the shard has no loss mask section")


# -- fuzz: random and mutated shards only ever raise ShardError, or read back exactly --------------------------
def test_fuzz_only_shard_errors(tmp_path):
    rng = np.random.default_rng(20240611)
    documents = random_documents(rng, 6, 300, masks=True, max_length=20)
    valid = open(write_shard(tmp_path / "valid.scs", documents, vocab_size=300), "rb").read()
    path = tmp_path / "fuzz.scs"
    sections = read_header(tmp_path / "valid.scs").sections
    field_names = [name for name in HEADER_DTYPE.names if name not in ("magic", "header_crc32c")]
    outcomes = {"error": 0, "same": 0}

    def check(data: bytes) -> None:
        path.write_bytes(data)
        try:
            with ShardReader(path) as reader:
                read_back = [reader.document(index) for index in range(len(reader))]
        except ShardError:
            outcomes["error"] += 1
            return
        # Opened: then it must be the original data, never garbage.
        assert len(read_back) == len(documents)
        for document, expected in zip(read_back, documents):
            np.testing.assert_array_equal(document.tokens, expected["tokens"])
            assert document.metadata == expected["metadata"] and document.score == expected["score"]
        outcomes["same"] += 1

    for case in range(FUZZ_CASES):
        kind = case % 6
        if kind == 0:  # random bytes, sometimes behind a valid magic
            data = bytearray(rng.integers(0, 256, int(rng.integers(0, 3 * ALIGNMENT)), dtype=np.uint8).tobytes())
            if case % 12 == 0:
                data[:8] = MAGIC
            data = bytes(data)
        elif kind in (1, 2):  # random header bytes changed; half the time with the header CRC made right
            data = bytearray(valid)
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, HEADER_SIZE))] = int(rng.integers(0, 256))
            if kind == 2:
                data[HEADER_CRC_OFFSET:HEADER_SIZE] = crc_module.crc32c(bytes(data[:HEADER_CRC_OFFSET])).to_bytes(4, "little")
            data = bytes(data)
        elif kind == 3:  # one header field set to an interesting value, CRC made right
            fields = np.frombuffer(valid[:HEADER_SIZE], dtype=HEADER_DTYPE).copy()
            record, name = fields[0], field_names[int(rng.integers(0, len(field_names)))]
            if name == "sections":
                record = record["sections"][int(rng.integers(0, 6))]
                name = SECTION_ENTRY_DTYPE.names[int(rng.integers(0, 4))]
            if record.dtype[name].shape:  # a byte array (tokenizer_sha256, reserved): one byte changed
                record[name][int(rng.integers(0, record.dtype[name].shape[0]))] = int(rng.integers(0, 256))
            else:
                current, limit = int(record[name]), 2 ** (8 * record.dtype[name].itemsize)
                choices = [0, 1, current + 1, current - 1, current + ALIGNMENT, limit - 1, limit // 2, int(rng.integers(1 << 30))]
                record[name] = choices[int(rng.integers(0, len(choices)))] % limit
            raw = bytearray(fields.tobytes())
            raw[HEADER_CRC_OFFSET:] = crc_module.crc32c(bytes(raw[:HEADER_CRC_OFFSET])).to_bytes(4, "little")
            data = bytes(raw) + valid[HEADER_SIZE:]
        elif kind == 4:  # a few bytes changed, anywhere or inside a section's data
            data = bytearray(valid)
            for _ in range(int(rng.integers(1, 4))):
                offset, length, _ = sections[int(rng.integers(0, len(sections)))]
                position = int(rng.integers(0, len(data))) if case % 12 == 4 else offset + int(rng.integers(0, length))
                data[position] ^= int(rng.integers(1, 256))
            data = bytes(data)
        else:  # cut anywhere, or grown
            data = valid[: int(rng.integers(0, len(valid)))] if case % 12 != 5 else valid + bytes(int(rng.integers(1, 5000)))
        check(data)
    assert outcomes["error"] > 300  # nearly every case is damage; the rest (e.g. a flip in padding) read back intact


# -- manifest -----------------------------------------------------------------------------------------------
def make_dataset(directory, tokenizer, tokenizer_path, shards=3):
    rng = np.random.default_rng(5)
    sha = file_sha256(tokenizer_path)
    texts = ["def add(a, b):\n    return a + b\n", "int main(void) { return 0; }\n", "print('hello, world')\n"]
    all_documents = []
    for shard in range(shards):
        documents = []
        for index in range(7):
            text = texts[(shard + index) % 3]
            documents.append(
                {
                    "tokens": np.array(tokenizer.encode(text).ids),
                    "score": float(np.float32(rng.uniform(0, 10))) if index else 10.0,
                    "language": ["python", "c", "python"][(shard + index) % 3],
                    "source": ["file", "repo", "web", "sft"][index % 4],
                    "content_hash": content_hash64(text),
                    "flags": 0,
                    "metadata": {"id": f"{shard}-{index}"},
                    "loss_mask": None,
                }
            )
        write_shard(directory / f"part-{shard:05d}.scs", documents, tokenizer.get_vocab_size(), sha)
        all_documents += documents
    return all_documents


def test_manifest_round_trip_and_checks(tmp_path, tokenizer_file):
    tokenizer_source, tokenizer = tokenizer_file
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    tokenizer_path = dataset / "tokenizer.json"
    tokenizer_path.write_bytes(tokenizer_source.read_bytes())
    documents = make_dataset(dataset, tokenizer, tokenizer_path)

    manifest = build_manifest(dataset, tokenizer_path=tokenizer_path, tokenizer_name="tiny-bpe")
    path = write_manifest(dataset, manifest)
    loaded = load_manifest(path, check="sha256")
    assert loaded["dataset_dir"] == str(dataset)
    assert {key: loaded[key] for key in manifest} == json.loads(json.dumps(manifest))
    totals = loaded["totals"]
    assert totals["shards"] == 3 and totals["documents"] == 21
    assert totals["tokens"] == sum(len(d["tokens"]) for d in documents)
    assert [shard["path"] for shard in loaded["shards"]] == ["part-00000.scs", "part-00001.scs", "part-00002.scs"]
    for shard in loaded["shards"]:
        shard_path = dataset / shard["path"]
        assert shard["sha256"] == file_sha256(shard_path) and shard["bytes"] == os.path.getsize(shard_path)
    assert loaded["tokenizer"] == {
        "path": "tokenizer.json",
        "name": "tiny-bpe",
        "sha256": file_sha256(tokenizer_path),
        "vocab_size": tokenizer.get_vocab_size(),
        "special_tokens": {"<eos>": 0, "<fim_prefix>": 1},
    }
    assert loaded["language_ids"]["python"] == Language.PYTHON and len(loaded["language_ids"]) == len(Language)
    assert loaded["source_ids"] == {"file": 0, "repo": 1, "commit": 2, "web": 3, "sft": 4, "hq": 5}
    assert set(loaded["languages"]) == {"python", "c"} and set(loaded["sources"]) == {"file", "repo", "web", "sft"}
    assert sum(sum(g["score_histogram"]["counts"]) for g in loaded["languages"].values()) == 21
    assert sum(g["documents"] for g in loaded["sources"].values()) == 21
    assert loaded["score_histogram"]["all"]["counts"][-1] >= 3  # score 10.0 falls in the last, closed bin
    assert load_manifest(dataset)["totals"] == totals  # a directory works too

    # Damage the manifest or its shards: each is named.
    with pytest.raises(ManifestError, match="totals"):
        bad = dict(manifest, totals=dict(totals, tokens=1))
        load_manifest(write_manifest(dataset, bad), check="none")
    write_manifest(dataset, manifest)
    shard = dataset / "part-00001.scs"
    original = shard.read_bytes()
    data = bytearray(original)
    data[read_header(shard).sections[Section.TOKENS][0]] ^= 1
    shard.write_bytes(bytes(data))
    load_manifest(dataset)  # the header check does not read the tokens...
    with pytest.raises(ManifestError, match="part-00001.scs SHA-256 differs"):
        load_manifest(dataset, check="sha256")  # ...the SHA-256 check does
    write_shard(shard, documents[:2], tokenizer.get_vocab_size(), file_sha256(tokenizer_path))
    with pytest.raises(ManifestError, match="part-00001.scs .*differs from the manifest's"):
        load_manifest(dataset)
    shard.unlink()
    with pytest.raises(ManifestError, match=r"manifest.json: shard part-00001.scs: cannot open"):
        load_manifest(dataset)
    shard.write_bytes(original)
    (dataset / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(dataset)
    (dataset / "manifest.json").write_text(json.dumps(dict(manifest, version=99)))
    with pytest.raises(ManifestError, match="unsupported manifest version 99"):
        load_manifest(dataset)
    (dataset / "manifest.json").write_text(json.dumps(dict(manifest, shards=[dict(manifest["shards"][0], path="../x.scs")])))
    with pytest.raises(ManifestError, match="not relative"):
        load_manifest(dataset)


def test_build_manifest_refuses_inconsistent_datasets(tmp_path, tokenizer_file):
    write_shard(tmp_path / "a.scs", [GOOD])
    write_shard(tmp_path / "b.scs", [GOOD], tokenizer_sha256=OTHER_SHA)
    with pytest.raises(ShardError, match="b.scs: tokenizer or vocab_size differs"):
        build_manifest(tmp_path)
    with pytest.raises(ValueError, match="SHA-256"):
        build_manifest(tmp_path, [tmp_path / "a.scs"], tokenizer_path=tokenizer_file[0])
    with pytest.raises(ValueError, match="not inside the dataset directory"):
        build_manifest(tmp_path / "sub", [tmp_path / "a.scs"])
    with pytest.raises(ValueError, match="no shards"):
        build_manifest(tmp_path / "sub", [])


def test_score_histogram_bins():
    histogram = score_histogram(np.array([-0.1, 0.0, 0.49, 0.5, 9.99, 10.0, 10.01], dtype=np.float32))
    assert histogram["below"] == 1 and histogram["above"] == 1
    assert histogram["counts"][0] == 2 and histogram["counts"][1] == 1 and histogram["counts"][-1] == 2
    assert sum(histogram["counts"]) == 5


# -- tables and checksums -----------------------------------------------------------------------------------
def test_tables_are_append_only():
    for table in (Language, Source):
        assert [member.value for member in table] == list(range(len(table)))  # dense ids from 0
    # Ids are on disk: these must never change (append new members at the end).
    assert (Language.UNKNOWN, Language.TEXT, Language.PYTHON, Language.CPP, Language.JUPYTER) == (0, 1, 2, 4, 65)
    assert (Source.FILE, Source.REPO, Source.COMMIT, Source.WEB, Source.SFT) == (0, 1, 2, 3, 4)
    assert (DocFlag.HAS_LOSS_MASK, DocFlag.REPO_LEVEL) == (1, 2)


def test_crc32c_known_values_and_fallback():
    assert crc_module.crc32c(b"123456789") == 0xE3069283  # the CRC32C check value
    assert crc_module.crc32c(b"") == 0
    assert crc_module.crc32c(b"6789", crc_module.crc32c(b"12345")) == 0xE3069283
    data = np.random.default_rng(0).integers(0, 2**32, 1000, dtype=np.uint32)
    assert crc_module.crc32c(data) == crc_module.crc32c_pure_python(data) == crc_module.crc32c_pure_python(data.tobytes())
    assert crc_module.crc32c_pure_python(b"123456789") == 0xE3069283


# -- the inspect CLI -----------------------------------------------------------------------------------------
def test_inspect_cli(tmp_path, tokenizer_file, capsys):
    tokenizer_source, tokenizer = tokenizer_file
    tokenizer_path = tmp_path / "tokenizer.json"
    tokenizer_path.write_bytes(tokenizer_source.read_bytes())
    documents = make_dataset(tmp_path, tokenizer, tokenizer_path, shards=2)
    write_manifest(tmp_path, build_manifest(tmp_path, tokenizer_path=tokenizer_path, tokenizer_name="tiny-bpe"))

    assert cli_main(["shards", "inspect", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    tokens = sum(len(d["tokens"]) for d in documents)
    assert f"2 shards, 14 documents, {tokens:,} tokens" in output
    assert "by language" in output and "python" in output and "by source" in output and "sft" in output
    assert "def add(a, b):" in output or "int main(void)" in output  # decoded with the manifest's tokenizer

    shard = tmp_path / "part-00000.scs"
    assert cli_main(["shards", "inspect", str(shard), "--doc", "1", "--tokenizer", str(tokenizer_path)]) == 0
    output = capsys.readouterr().out
    assert "7 documents" in output and "document 1 of" in output and "int main(void)" in output
    tokenizer_path.unlink()  # no tokenizer: token ids instead
    assert cli_main(["shards", "inspect", str(shard)]) == 0
    assert f"token ids: {documents[0]['tokens'].tolist()}" in capsys.readouterr().out

    (tmp_path / "manifest.json").unlink()  # a directory without a manifest is described from its shards
    assert cli_main(["shards", "inspect", str(tmp_path), "--doc", "99"]) == 0
    output = capsys.readouterr().out
    assert "described from its shards" in output and "14 documents" in output and "document 99 is out of range" in output

    data = bytearray(shard.read_bytes())
    data[8] = 9
    shard.write_bytes(bytes(data))
    assert cli_main(["shards", "inspect", str(shard)]) == 1
    assert "unsupported format version 9" in capsys.readouterr().err

    # `python -m seedcoder.cli` is the entry the brief asks for (a console script comes with setup.py).
    result = subprocess.run(
        [sys.executable, "-m", "seedcoder.cli", "shards", "inspect", str(tmp_path / "part-00001.scs")],
        capture_output=True, text=True, check=True,
    )
    assert "7 documents" in result.stdout

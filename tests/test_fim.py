"""Fill-in-the-middle in C++ (csrc/loader/fim.cpp) and its byte-level BPE (csrc/loader/bpe.cpp).

A tiny byte-level BPE is trained with HF `tokenizers` on text with non-ASCII characters (é, 中文, emoji),
and its tables come from `seedcoder.data.tokenizer_tables`. Checked: BPE of token fragments equals what
`tokenizers` gives for them; FIM output un-permuted equals the document (bytes, decoded text, and token for
token a pure-Python reference of the algorithm); determinism in (seed, epoch, doc); the rate and the
split distribution; edge cases (rate 0/1, empty and one-character documents, trailing eos, special tokens
inside a document, invalid UTF-8); bad input raises, never crashes.

The bindings come from `seedcoder._C` once the loader extension is built; until then (or when it was built
without them) they are compiled here with torch.utils.cpp_extension into a cached temp directory.
"""

from __future__ import annotations

import hashlib
import math
import random
import tempfile
from pathlib import Path

import pytest

from seedcoder.data.tokenizer_tables import (
    BOS_TOKEN,
    EOS_TOKEN,
    SPECIAL_TOKENS,
    TokenizerTableError,
    bytes_to_unicode,
    load_tokenizer_tables,
)

tokenizers = pytest.importorskip("tokenizers")

REPO = Path(__file__).resolve().parents[1]
LOADER_SOURCES = [REPO / "csrc" / "loader" / name for name in ("bpe.cpp", "fim.cpp", "fim_bindings.cpp")]


def _build_fim_module():
    from torch.utils import cpp_extension

    digest = hashlib.sha256()
    for source in sorted((REPO / "csrc" / "loader").glob("*")):
        if source.is_file():
            digest.update(source.name.encode() + source.read_bytes())
    build_dir = Path(tempfile.gettempdir()) / f"seedcoder_fim_ext_{digest.hexdigest()[:16]}"
    build_dir.mkdir(parents=True, exist_ok=True)
    module_source = build_dir / "fim_test_module.cpp"
    module_source.write_text(
        "#include <pybind11/pybind11.h>\n"
        "void register_fim_bindings(pybind11::module_& m);\n"
        "PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { register_fim_bindings(m); }\n"
    )
    return cpp_extension.load(
        name="seedcoder_fim_test",
        sources=[str(path) for path in LOADER_SOURCES] + [str(module_source)],
        extra_cflags=["-O2", "-std=c++17"],
        build_directory=str(build_dir),
        verbose=False,
    )


@pytest.fixture(scope="module")
def ext():
    try:
        import torch  # noqa: F401  (seedcoder._C links against torch's libraries)

        from seedcoder import _C

        if hasattr(_C, "fim_apply_spm"):
            return _C
    except ImportError:
        pass
    return _build_fim_module()


# --- a tiny byte-level BPE trained on code-like text with non-ASCII characters ---------------------------

WORDS = [
    "def", "return", "class", "import", "self", "value", "data", "loader", "token", "for", "in", "if", "else",
    "café", "déjà", "naïve", "résumé", "Ünïcödé", "straße", "中文", "数据加载", "注释", "测试", "🚀", "😀",
    "👍🏽", "👨‍👩‍👧", "λ", "→", "€", "x", "y", "i", "0", "1", "42", "3.14", "_", "__init__", "None",
]  # fmt: skip
PUNCTUATION = ["(", ")", ":", ",", ".", "=", "==", "+", "[", "]", "{", "}", "#", "'", '"', "->", "  ", "\n", "\n    ", "\t"]


def random_text(rng: random.Random, pieces: int) -> str:
    parts = []
    for _ in range(pieces):
        roll = rng.random()
        if roll < 0.55:
            parts.append((" " if rng.random() < 0.6 else "") + rng.choice(WORDS))
        elif roll < 0.9:
            parts.append(rng.choice(PUNCTUATION))
        else:
            parts.append(chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0x800), rng.randrange(0x4E00, 0x9FFF)])))
    return "".join(parts)


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    corpus = [random_text(rng, rng.randrange(20, 300)) for _ in range(800)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return tokenizer, path


@pytest.fixture(scope="module")
def tables(hf_tokenizer):
    return load_tokenizer_tables(hf_tokenizer[1])


@pytest.fixture(scope="module")
def bpe(ext, tables):
    return ext.ByteLevelBPE(tables.id_to_bytes, tables.merges, tables.ignore_merges)


def make_spec(ext, tables, rate, token_level=False):
    return ext.FimSpec(**tables.fim_ids(), rate=rate, token_level=token_level)


# --- a pure-Python reference of the C++ algorithm ------------------------------------------------------------


class ReferenceBPE:
    def __init__(self, tables):
        self.id_to_bytes = tables.id_to_bytes
        id_by_bytes: dict[bytes, int] = {}
        for token_id, token_bytes in enumerate(tables.id_to_bytes):
            id_by_bytes.setdefault(token_bytes, token_id)
        self.byte_ids = {token_bytes[0]: i for token_bytes, i in id_by_bytes.items() if len(token_bytes) == 1}
        self.ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (left, right) in enumerate(tables.merges):
            self.ranks.setdefault((left, right), (rank, id_by_bytes[tables.id_to_bytes[left] + tables.id_to_bytes[right]]))
        produced = {merged for _, merged in self.ranks.values()} | set(self.byte_ids.values())
        self.atomic = [token_id not in produced for token_id in range(len(tables.id_to_bytes))]

    def encode(self, data: bytes) -> list[int]:
        symbols = [self.byte_ids[byte] for byte in data]
        while len(symbols) > 1:
            candidates = [(self.ranks[pair][0], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in self.ranks]
            if not candidates:
                break
            _, best = min(candidates)
            symbols[best : best + 2] = [self.ranks[(symbols[best], symbols[best + 1])][1]]
        return symbols

    def char_starts(self, token_id: int) -> list[int]:
        """Byte offsets in the token where its characters start (an atomic token is one character)."""
        data = self.id_to_bytes[token_id]
        if self.atomic[token_id]:
            return [0] if data else []
        return [i for i, byte in enumerate(data) if byte & 0xC0 != 0x80]

    def spm(self, tokens: list[int], tables, begin: int, end: int) -> list[int]:
        """The SPM sample cut at character positions begin <= end."""
        if tokens and tokens[-1] == tables.eos_id:
            tokens = tokens[:-1]
        cuts = []  # (token index, byte offset) for each cut; (len(tokens), 0) is the end
        for position in (begin, end):
            seen, cut = 0, (len(tokens), 0)
            for index, token_id in enumerate(tokens):
                starts = self.char_starts(token_id)
                if position < seen + len(starts):
                    cut = (index, starts[position - seen])
                    break
                seen += len(starts)
            cuts.append(cut)

        def between(start, stop):
            (i, a), (j, b) = start, stop
            if i == j:
                return self.encode(self.id_to_bytes[tokens[i]][a:b]) if i < len(tokens) and b > a else []
            pieces = []
            if a > 0:
                pieces += self.encode(self.id_to_bytes[tokens[i]][a:])
                i += 1
            pieces += tokens[i:j]
            if j < len(tokens) and b > 0:
                pieces += self.encode(self.id_to_bytes[tokens[j]][:b])
            return pieces

        first, second = cuts
        return (
            [tables.fim_suffix_id]
            + between(second, (len(tokens), 0))
            + [tables.fim_prefix_id]
            + between((0, 0), first)
            + [tables.fim_middle_id]
            + between(first, second)
            + [tables.eos_id]
        )


def parse_spm(out: list[int], tables) -> tuple[list[int], list[int], list[int]]:
    """(prefix, middle, suffix) of an SPM sample, checking its markers."""
    assert out[0] == tables.fim_suffix_id and out[-1] == tables.eos_id
    prefix_at, middle_at = out.index(tables.fim_prefix_id), out.index(tables.fim_middle_id)
    assert prefix_at < middle_at
    assert out.count(tables.eos_id) == 1
    return out[prefix_at + 1 : middle_at], out[middle_at + 1 : -1], out[1:prefix_at]


def joined_bytes(tables, ids: list[int]) -> bytes:
    return b"".join(tables.id_to_bytes[i] for i in ids)


# --- tables ---------------------------------------------------------------------------------------------------


def test_tables_match_the_tokenizer(hf_tokenizer, tables):
    tokenizer, _ = hf_tokenizer
    assert tables.vocab_size == tokenizer.get_vocab_size(with_added_tokens=True)
    for role, content in SPECIAL_TOKENS.items():
        assert tables.role_ids[role] == tokenizer.token_to_id(content)
        assert tables.id_to_bytes[tables.role_ids[role]] == content.encode()
    assert tables.eos_id == tokenizer.token_to_id(EOS_TOKEN)
    rng = random.Random(1)
    for _ in range(50):
        text = random_text(rng, 40)
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert joined_bytes(tables, ids).decode() == text == tokenizer.decode(ids)
    assert len(bytes_to_unicode()) == 256 and len(set(bytes_to_unicode().values())) == 256


def test_tables_reject_other_tokenizers(hf_tokenizer):
    import json

    spec = json.loads(Path(hf_tokenizer[1]).read_text())
    wordpiece = dict(spec, model={"type": "WordPiece", "vocab": {}})
    with pytest.raises(TokenizerTableError, match="WordPiece"):
        load_tokenizer_tables(wordpiece)
    fallback = dict(spec, model=dict(spec["model"], byte_fallback=True))
    with pytest.raises(TokenizerTableError, match="byte_fallback"):
        load_tokenizer_tables(fallback)
    no_fim = dict(
        spec,
        added_tokens=[entry for entry in spec["added_tokens"] if "fim" not in entry["content"]],
        model=dict(spec["model"], vocab={token: i for token, i in spec["model"]["vocab"].items() if "fim" not in token}),
    )
    with pytest.raises(TokenizerTableError, match="fim"):
        load_tokenizer_tables(no_fim)
    bad_merge = dict(spec, model=dict(spec["model"], merges=[["no-such-token", "x"]]))
    with pytest.raises(TokenizerTableError, match="merge 0"):
        load_tokenizer_tables(bad_merge)


# --- BPE ------------------------------------------------------------------------------------------------------


def test_bpe_fragments_match_tokenizers(ext, hf_tokenizer, tables, bpe):
    """Any substring of a token's bytes, encoded in C++, equals `tokenizers`' encoding of it (one pre-token)."""
    tokenizer, _ = hf_tokenizer
    reference = ReferenceBPE(tables)
    rng = random.Random(2)
    compared_with_hf = 0
    for _ in range(300):
        for token_id in tokenizer.encode(random_text(rng, 30), add_special_tokens=False).ids:
            data = tables.id_to_bytes[token_id]
            begin = rng.randrange(len(data))
            fragment = data[begin : rng.randrange(begin + 1, len(data) + 1)]
            ours = bpe.encode(fragment)
            assert ours == reference.encode(fragment)
            assert joined_bytes(tables, ours) == fragment
            try:
                text = fragment.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a piece of a character: `tokenizers` takes text only; the reference checked it
            if len(tokenizer.pre_tokenizer.pre_tokenize_str(text)) == 1:
                assert ours == tokenizer.encode(text, add_special_tokens=False).ids, text
                compared_with_hf += 1
    assert compared_with_hf > 1000
    # Whole tokens encode to themselves; words are encoded as tokenizers does.
    for word in WORDS:
        for text in (word, " " + word):
            if len(tokenizer.pre_tokenizer.pre_tokenize_str(text)) == 1:
                assert bpe.encode(text.encode()) == tokenizer.encode(text, add_special_tokens=False).ids
    assert bpe.encode(b"") == []
    assert bpe.vocab_size == tables.vocab_size and bpe.merge_count == len(tables.merges)
    assert bpe.is_atomic(tables.eos_id) and not bpe.is_atomic(tables.id_to_bytes.index(b"a"))


def test_bpe_ignore_merges_matches_tokenizers(ext, hf_tokenizer):
    """With `ignore_merges` (Llama-3-style tokenizers) a fragment that is a vocabulary token stays whole."""
    import json

    from tokenizers import Tokenizer

    spec = json.loads(Path(hf_tokenizer[1]).read_text())
    spec["model"]["ignore_merges"] = True
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tables = load_tokenizer_tables(spec)
    assert tables.ignore_merges
    bpe = ext.ByteLevelBPE(tables.id_to_bytes, tables.merges, tables.ignore_merges)
    rng = random.Random(7)
    compared = 0
    for _ in range(200):
        for token_id in tokenizer.encode(random_text(rng, 30), add_special_tokens=False).ids:
            data = tables.id_to_bytes[token_id]
            begin = rng.randrange(len(data))
            fragment = data[begin : rng.randrange(begin + 1, len(data) + 1)]
            try:
                text = fragment.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(tokenizer.pre_tokenizer.pre_tokenize_str(text)) == 1:
                assert bpe.encode(fragment) == tokenizer.encode(text, add_special_tokens=False).ids, text
                compared += 1
    assert compared > 500


def test_bpe_bad_input(ext, tables, bpe):
    with pytest.raises(IndexError, match="out of range"):
        bpe.token_bytes(tables.vocab_size)
    with pytest.raises(TypeError):
        bpe.token_bytes(-1)
    with pytest.raises(ValueError, match="out of range"):
        ext.ByteLevelBPE(tables.id_to_bytes, tables.merges + [(0, tables.vocab_size)])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ext.ByteLevelBPE(tables.id_to_bytes, tables.merges + [(tables.eos_id, tables.eos_id)])
    no_z = [b"" if data == b"z" else data for data in tables.id_to_bytes]
    merges_without_z = [(a, b) for a, b in tables.merges if b"z" not in tables.id_to_bytes[a] + tables.id_to_bytes[b]]
    partial = ext.ByteLevelBPE(no_z, merges_without_z)
    with pytest.raises(ValueError, match="byte 122 has no token"):
        partial.encode(b"lazy")


# --- FIM ------------------------------------------------------------------------------------------------------


def test_fim_round_trip(ext, hf_tokenizer, tables, bpe):
    """Un-permuted FIM output is the document: as text, per part at the planned character cuts, and token for
    token what the Python reference makes."""
    tokenizer, _ = hf_tokenizer
    reference = ReferenceBPE(tables)
    spec = make_spec(ext, tables, rate=1.0)
    rng = random.Random(3)
    straddled = 0
    for doc_id in range(400):
        text = random_text(rng, rng.choice([1, 3, 40, 200]))
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if doc_id % 2:
            ids = ids + [tables.eos_id]
        seed, epoch = rng.randrange(2**64), rng.randrange(4)
        out = ext.fim_apply_spm(ids, bpe, spec, seed, epoch, doc_id)
        prefix, middle, suffix = parse_spm(out, tables)
        assert tokenizer.decode(prefix + middle + suffix) == text
        applied, length, begin, end = ext.fim_plan_spm(ids, bpe, spec, seed, epoch, doc_id)
        assert applied and length == len(text) and 0 <= begin <= end <= length
        assert joined_bytes(tables, prefix).decode() == text[:begin]
        assert joined_bytes(tables, middle).decode() == text[begin:end]
        assert joined_bytes(tables, suffix).decode() == text[end:]
        assert out == reference.spm(ids, tables, begin, end)
        straddled += len(prefix + middle + suffix) != len(ids) - (doc_id % 2)
    assert straddled > 50  # cuts inside tokens happen (and were re-encoded)


def test_fim_token_level(ext, hf_tokenizer, tables, bpe):
    tokenizer, _ = hf_tokenizer
    spec = make_spec(ext, tables, rate=1.0, token_level=True)
    rng = random.Random(4)
    for doc_id in range(100):
        ids = tokenizer.encode(random_text(rng, 50), add_special_tokens=False).ids
        prefix, middle, suffix = parse_spm(ext.fim_apply_spm(ids + [tables.eos_id], bpe, spec, 5, 0, doc_id), tables)
        assert prefix + middle + suffix == ids  # no token is cut
        _, length, begin, end = ext.fim_plan_spm(ids, bpe, spec, 5, 0, doc_id)
        assert (length, begin, end) == (len(ids), len(prefix), len(prefix) + len(middle))


def test_fim_determinism_and_statistics(ext, hf_tokenizer, tables, bpe):
    tokenizer, _ = hf_tokenizer
    ids = tokenizer.encode("def café(self): return '中文🚀' + x\n" * 3, add_special_tokens=False).ids
    length = ext.fim_plan_spm(ids, bpe, make_spec(ext, tables, 1.0), 0, 0, 0)[1]
    for rate in (0.5, 0.1):
        spec = make_spec(ext, tables, rate)
        plans = [ext.fim_plan_spm(ids, bpe, spec, 7, 1, doc_id) for doc_id in range(4000)]
        applied = sum(plan[0] for plan in plans)
        assert abs(applied - 4000 * rate) < 4 * math.sqrt(4000 * rate * (1 - rate))
        # Same inputs, same output; the decision agrees with fim_decision.
        for doc_id in range(0, 4000, 97):
            out = ext.fim_apply_spm(ids, bpe, spec, 7, 1, doc_id)
            assert out == ext.fim_apply_spm(ids, bpe, spec, 7, 1, doc_id)
            assert (out is not None) == plans[doc_id][0] == ext.fim_decision(rate, 7, 1, doc_id)
    # Another epoch (or seed) gives other splits for the same document.
    spec = make_spec(ext, tables, 1.0)
    for other in ((7, 2), (8, 1)):
        differ = sum(
            ext.fim_plan_spm(ids, bpe, spec, 7, 1, doc_id) != ext.fim_plan_spm(ids, bpe, spec, *other, doc_id)
            for doc_id in range(200)
        )
        assert differ > 180
    # Split points: two independent uniform positions in [0, length], sorted.
    plans = [ext.fim_plan_spm(ids, bpe, spec, 11, 0, doc_id) for doc_id in range(6000)]
    begins = [plan[2] / length for plan in plans]
    ends = [plan[3] / length for plan in plans]
    assert abs(sum(begins) / len(begins) - 1 / 3) < 0.02
    assert abs(sum(ends) / len(ends) - 2 / 3) < 0.02
    tiny = [tables.id_to_bytes.index(b"a"), tables.id_to_bytes.index(b"b")]  # two characters: cuts 0, 1, 2
    seen = {ext.fim_plan_spm(tiny, bpe, spec, 3, 0, doc_id)[2:] for doc_id in range(300)}
    assert seen == {(a, b) for a in range(3) for b in range(a, 3)}


def test_fim_rate_edges_and_tiny_documents(ext, hf_tokenizer, tables, bpe):
    tokenizer, _ = hf_tokenizer
    ids = tokenizer.encode("x = 1", add_special_tokens=False).ids
    assert all(ext.fim_apply_spm(ids, bpe, make_spec(ext, tables, 0.0), 1, 0, d) is None for d in range(500))
    assert all(ext.fim_apply_spm(ids, bpe, make_spec(ext, tables, 1.0), 1, 0, d) is not None for d in range(500))
    spec = make_spec(ext, tables, 1.0)
    markers = [tables.fim_suffix_id, tables.fim_prefix_id, tables.fim_middle_id, tables.eos_id]
    assert ext.fim_apply_spm([], bpe, spec, 1, 0, 0) == markers
    assert ext.fim_apply_spm([tables.eos_id], bpe, spec, 1, 0, 0) == markers
    for char in ["a", "é", "中", "🚀", "👍🏽"[0]]:
        doc = tokenizer.encode(char, add_special_tokens=False).ids
        byte_doc = [tables.id_to_bytes.index(bytes([byte])) for byte in char.encode()]  # one token per byte
        for tokens in (doc, byte_doc):
            for doc_id in range(40):
                parts = parse_spm(ext.fim_apply_spm(tokens, bpe, spec, 2, 0, doc_id), tables)
                assert sorted(joined_bytes(tables, part).decode() for part in parts) == ["", "", char]


def test_fim_trailing_eos_and_special_tokens_inside(ext, hf_tokenizer, tables, bpe):
    tokenizer, _ = hf_tokenizer
    spec = make_spec(ext, tables, 1.0)
    ids = tokenizer.encode("print('héllo 🚀')", add_special_tokens=False).ids
    for doc_id in range(50):
        with_eos = ext.fim_apply_spm(ids + [tables.eos_id], bpe, spec, 9, 0, doc_id)
        assert with_eos == ext.fim_apply_spm(ids, bpe, spec, 9, 0, doc_id)
        assert with_eos.count(tables.eos_id) == 1 and with_eos[-1] == tables.eos_id
    # A special token inside the document is one character and never cut.
    bos = tables.role_ids["bos"]
    left, right = (
        tokenizer.encode("a = 'ü'", add_special_tokens=False).ids,
        tokenizer.encode("b = 2", add_special_tokens=False).ids,
    )
    doc = left + [bos] + right
    text = "a = 'ü'" + BOS_TOKEN + "b = 2"
    for doc_id in range(200):
        out = ext.fim_apply_spm(doc, bpe, spec, 4, 0, doc_id)
        assert out.count(bos) == 1
        prefix, middle, suffix = parse_spm(out, tables)
        assert joined_bytes(tables, prefix + middle + suffix).decode() == text
    assert ext.fim_plan_spm(doc, bpe, spec, 4, 0, 0)[1] == len("a = 'ü'") + 1 + len("b = 2")


def test_fim_invalid_utf8(ext, tables, bpe):
    """Documents of arbitrary tokens (pieces of characters, stray bytes): bytes still round-trip exactly."""
    reference = ReferenceBPE(tables)
    spec = make_spec(ext, tables, 1.0)
    rng = random.Random(6)
    regular = [i for i in range(tables.vocab_size) if not reference.atomic[i]]
    for doc_id in range(200):
        doc = [rng.choice(regular) for _ in range(rng.randrange(0, 30))]
        out = ext.fim_apply_spm(doc, bpe, spec, 1, 2, doc_id)
        prefix, middle, suffix = parse_spm(out, tables)
        assert joined_bytes(tables, prefix + middle + suffix) == joined_bytes(tables, doc)
        _, _, begin, end = ext.fim_plan_spm(doc, bpe, spec, 1, 2, doc_id)
        assert out == reference.spm(doc, tables, begin, end)


def test_fim_bad_input(ext, tables, bpe):
    spec = make_spec(ext, tables, 1.0)
    with pytest.raises(ValueError, match="not < vocabulary size"):
        ext.fim_apply_spm([5, tables.vocab_size, 7], bpe, spec, 0, 0, 0)
    with pytest.raises(ValueError, match="not < vocabulary size"):
        ext.fim_apply_spm([5, tables.vocab_size + 100], bpe, make_spec(ext, tables, 1.0, token_level=True), 0, 0, 0)
    with pytest.raises(TypeError):
        ext.fim_apply_spm([5, -1], bpe, spec, 0, 0, 0)
    with pytest.raises(TypeError):
        ext.fim_apply_spm([5, 2**32], bpe, spec, 0, 0, 0)
    with pytest.raises(TypeError):
        ext.fim_apply_spm([5], bpe, spec, -1, 0, 0)
    for rate in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rate"):
            ext.fim_apply_spm([5], bpe, make_spec(ext, tables, rate), 0, 0, 0)
    bad_marker = ext.FimSpec(**dict(tables.fim_ids(), middle_id=tables.vocab_size), rate=0.5)
    with pytest.raises(ValueError, match="middle_id"):
        ext.fim_apply_spm([5], bpe, bad_marker, 0, 0, 0)
    with pytest.raises(ValueError, match="middle_id"):
        ext.fim_plan_spm([5], bpe, bad_marker, 0, 0, 0)
    # A document with a bad id that gets no FIM is not read (the loader validated the shard).
    assert ext.fim_apply_spm([tables.vocab_size], bpe, make_spec(ext, tables, 0.0), 0, 0, 0) is None

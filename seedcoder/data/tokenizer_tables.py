"""Tables of a byte-level BPE tokenizer for the C++ loader (FIM re-encoding), read from a HF `tokenizer.json`.

The C++ side (`csrc/loader/bpe.h`, `seedcoder._C.ByteLevelBPE`) works on bytes, not on the printable
stand-in characters a byte-level BPE vocabulary is written in. This module turns `tokenizer.json` into

* ``id_to_bytes``: the bytes of every token id. Vocabulary entries are mapped back through the GPT-2
  byte-to-unicode table; added tokens (specials such as ``<[end▁of▁sentence]>``) are their UTF-8 content,
  which is what ``tokenizer.decode(ids, skip_special_tokens=False)`` prints for them; ids the tokenizer
  does not use are ``b""``.
* ``merges``: the merges as ``(left_id, right_id)`` in rank order (rank = position in the list).
* the special ids FIM needs: ``<fim_suffix>``, ``<fim_prefix>``, ``<fim_middle>`` and ``<eos>``, looked up by
  the names in ``SPECIAL_TOKENS`` (Seed-Coder's names; every tokenizer we train uses the same ones).

Only byte-level BPE is accepted (model ``BPE`` with no byte fallback and no subword prefix/suffix, a
``ByteLevel`` pre-tokenizer or decoder); anything else raises ``TokenizerTableError`` naming the problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The special tokens, in one place. Seed-Coder's names (its FIM format is
# `<[fim-suffix]>` S `<[fim-prefix]>` P `<[fim-middle]>` M, then end of sentence).
BOS_TOKEN = "<[begin▁of▁sentence]>"
EOS_TOKEN = "<[end▁of▁sentence]>"
PAD_TOKEN = "<[PAD▁TOKEN]>"
FIM_SUFFIX_TOKEN = "<[fim-suffix]>"
FIM_PREFIX_TOKEN = "<[fim-prefix]>"
FIM_MIDDLE_TOKEN = "<[fim-middle]>"
SPECIAL_TOKENS = {
    "bos": BOS_TOKEN,
    "eos": EOS_TOKEN,
    "pad": PAD_TOKEN,
    "fim_suffix": FIM_SUFFIX_TOKEN,
    "fim_prefix": FIM_PREFIX_TOKEN,
    "fim_middle": FIM_MIDDLE_TOKEN,
}


class TokenizerTableError(ValueError):
    """The tokenizer file is not a byte-level BPE this module understands, or lacks a needed token."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies are written in.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes map to U+0100 onwards, in byte order.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


UNICODE_TO_BYTE = {char: byte for byte, char in bytes_to_unicode().items()}


@dataclass(frozen=True)
class TokenizerTables:
    """What the C++ byte-level BPE and FIM need from a tokenizer (see the module docstring)."""

    id_to_bytes: list[bytes]
    merges: list[tuple[int, int]]
    ignore_merges: bool
    special_tokens: dict[str, int]  # content -> id of every added token marked special
    fim_suffix_id: int
    fim_prefix_id: int
    fim_middle_id: int
    eos_id: int
    bos_id: int | None = None
    pad_id: int | None = None
    role_ids: dict[str, int] = field(default_factory=dict)  # SPECIAL_TOKENS role -> id, for those present

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_bytes)

    def fim_ids(self) -> dict[str, int]:
        """Keyword arguments for `seedcoder._C.FimSpec` (add `rate=`)."""
        return {
            "suffix_id": self.fim_suffix_id,
            "prefix_id": self.fim_prefix_id,
            "middle_id": self.fim_middle_id,
            "eos_id": self.eos_id,
        }


def _vocab_token_bytes(token: str) -> bytes:
    try:
        return bytes(UNICODE_TO_BYTE[char] for char in token)
    except KeyError as error:
        raise TokenizerTableError(
            f"vocabulary token {token!r} is not in the byte-level alphabet (not a byte-level BPE?)"
        ) from error


def _has_byte_level(component: Mapping[str, Any] | None) -> bool:
    if not component:
        return False
    if component.get("type") == "ByteLevel":
        return True
    return any(_has_byte_level(child) for child in component.get("pretokenizers", component.get("decoders", [])) or [])


def load_tokenizer_tables(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    eos_token: str = EOS_TOKEN,
    fim_suffix_token: str = FIM_SUFFIX_TOKEN,
    fim_prefix_token: str = FIM_PREFIX_TOKEN,
    fim_middle_token: str = FIM_MIDDLE_TOKEN,
) -> TokenizerTables:
    """Reads a HF `tokenizer.json` (a path, or its parsed JSON) into `TokenizerTables`."""
    if isinstance(source, Mapping):
        spec, where = source, "tokenizer"
    else:
        where = os.fspath(source)
        with open(where, encoding="utf-8") as file:
            spec = json.load(file)
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerTableError(f"{where}: model type {model.get('type')!r}, need 'BPE'")
    if model.get("byte_fallback"):
        raise TokenizerTableError(f"{where}: BPE with byte_fallback is not byte-level BPE")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TokenizerTableError(f"{where}: BPE with a subword prefix/suffix is not supported")
    if not (_has_byte_level(spec.get("pre_tokenizer")) or _has_byte_level(spec.get("decoder"))):
        raise TokenizerTableError(f"{where}: no ByteLevel pre-tokenizer or decoder: not a byte-level BPE")

    vocab: dict[str, int] = model.get("vocab") or {}
    added = spec.get("added_tokens") or []
    ids = [int(i) for i in vocab.values()] + [int(entry["id"]) for entry in added]
    if not ids or min(ids) < 0:
        raise TokenizerTableError(f"{where}: empty vocabulary or negative ids")
    id_to_bytes = [b""] * (max(ids) + 1)
    added_ids = {int(entry["id"]) for entry in added}
    for token, token_id in vocab.items():
        if int(token_id) not in added_ids:  # trainers put added tokens in the vocabulary too
            id_to_bytes[int(token_id)] = _vocab_token_bytes(token)
    for entry in added:  # decoded as their content, not through the byte alphabet
        id_to_bytes[int(entry["id"])] = entry["content"].encode("utf-8")

    merges: list[tuple[int, int]] = []
    for rank, merge in enumerate(model.get("merges") or []):
        parts = merge.split(" ") if isinstance(merge, str) else list(merge)  # "a b" (older files) or ["a", "b"]
        if len(parts) != 2 or parts[0] not in vocab or parts[1] not in vocab:
            raise TokenizerTableError(f"{where}: merge {rank} {merge!r} is malformed or refers to unknown tokens")
        merges.append((int(vocab[parts[0]]), int(vocab[parts[1]])))

    contents = {entry["content"]: int(entry["id"]) for entry in added}
    special_tokens = {entry["content"]: int(entry["id"]) for entry in added if entry.get("special")}

    def required(content: str) -> int:
        if content in contents:
            return contents[content]
        if content in vocab:
            return int(vocab[content])
        raise TokenizerTableError(f"{where}: the tokenizer has no {content!r} token")

    role_ids = {role: contents[content] for role, content in SPECIAL_TOKENS.items() if content in contents}
    return TokenizerTables(
        id_to_bytes=id_to_bytes,
        merges=merges,
        ignore_merges=bool(model.get("ignore_merges", False)),
        special_tokens=special_tokens,
        fim_suffix_id=required(fim_suffix_token),
        fim_prefix_id=required(fim_prefix_token),
        fim_middle_id=required(fim_middle_token),
        eos_id=required(eos_token),
        bos_id=role_ids.get("bos"),
        pad_id=role_ids.get("pad"),
        role_ids=role_ids,
    )

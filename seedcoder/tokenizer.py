"""Tokenizers: training our byte-level BPE (data builds and curation's tokenize step), the one loader of
tokenizer.json files (data builds, curation, SFT, the engine, the scorer, post-training) and the toy task's
word-level tokenizer.

Our BPE: GPT-2's byte alphabet (any byte sequence encodes), digits split one by one (a
`Digits(individual_digits=True)` pre-tokenizer before the byte-level regex split, as in Llama-3 / Seed-Coder), and
the special tokens of `seedcoder.data.tokenizer_tables.SPECIAL_TOKENS` (bos, eos, pad and the three FIM markers)
at ids 0-5.

Which tokenizer belongs to a checkpoint is a question about the checkpoint's layout, answered by
`seedcoder.checkpoint.find_tokenizer`. Reading the file lives here, apart from it, because data builds and
curation workers (spawned processes, one per core) load tokenizers without ever touching a model: this module
needs only the `tokenizers` library, not torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from seedcoder.data.tokenizer_tables import BOS_TOKEN, EOS_TOKEN, SPECIAL_TOKENS
from seedcoder.errors import UserError
from seedcoder.fileio import atomic_write_text

TOKENIZER_FILE = "tokenizer.json"  # its name in a dataset, a checkpoint, a scorer or a Hugging Face folder
# end-of-sequence tokens we recognise: Seed-Coder's first, then other families' (a tokenizer needs one of them)
EOS_NAMES = (EOS_TOKEN, "<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eos|>")
TOY_VOCAB = ("Write", *"0123456789", "x", "y")


class TokenizerError(UserError, ValueError):
    """A tokenizer file that is missing or unusable; the message names the file."""


def new_tokenizer() -> Any:
    """An untrained byte-level BPE tokenizer with digits split one by one (see the module docstring)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts: Iterable[str], out_path: str, *, vocab_size: int, min_frequency: int = 2,
                    length: int | None = None, show_progress: bool = False) -> str:
    """Train the byte-level BPE on `texts` and save it to `out_path` (atomically); returns out_path."""
    specials = list(SPECIAL_TOKENS.values())
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(specials) + len(alphabet):
        raise TokenizerError(f"vocab_size {vocab_size} is too small: the byte alphabet and special tokens alone take "
                             f"{len(specials) + len(alphabet)}")
    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=alphabet, show_progress=show_progress)
    tokenizer.train_from_iterator(texts, trainer, length=length)
    atomic_write_text(out_path, tokenizer.to_str(pretty=True))
    return out_path


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The tokenizers.Tokenizer of a tokenizer.json (or of a folder holding one) that has an end-of-sequence token
    (one of EOS_NAMES); TokenizerError naming the file otherwise."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(path):
        raise TokenizerError(f"{path}: tokenizer file not found")
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as error:  # the library's own exception type for a malformed file
        raise TokenizerError(f"{path}: not a tokenizer.json the `tokenizers` library can load: {error}") from None
    if not any(tokenizer.token_to_id(name) is not None for name in EOS_NAMES):
        raise TokenizerError(f"{path}: no end-of-sequence token (tried {', '.join(EOS_NAMES)})")
    return tokenizer


def toy_tokenizer() -> Any:
    """The toy post-training task's word-level tokenizer: the specials (bos, eos, <unk>), "Write", the digits, x and
    y (16 tokens; words split on whitespace, decoded without spaces)."""
    tokens = [BOS_TOKEN, EOS_TOKEN, "<unk>", *TOY_VOCAB]
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([BOS_TOKEN, EOS_TOKEN])
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


__all__ = ["EOS_NAMES", "TOKENIZER_FILE", "TOY_VOCAB", "TokenizerError", "load_tokenizer", "new_tokenizer", "toy_tokenizer",
           "train_tokenizer"]

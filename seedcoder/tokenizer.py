"""Reading tokenizers: the one loader of tokenizer.json files (data builds, curation, SFT, the engine, the scorer,
post-training) and the toy task's word-level tokenizer.

Which tokenizer belongs to a checkpoint is a question about the checkpoint's layout, answered by
`seedcoder.checkpoint.find_tokenizer`. Reading the file lives here, apart from it, because data builds and
curation workers (spawned processes, one per core) load tokenizers without ever touching a model: this module
needs only the `tokenizers` library, not torch.
"""

from __future__ import annotations

import os
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from seedcoder.data.tokenizer_tables import BOS_TOKEN, EOS_TOKEN
from seedcoder.errors import UserError

TOKENIZER_FILE = "tokenizer.json"  # its name in a dataset, a checkpoint, a scorer or a Hugging Face folder
# end-of-sequence tokens we recognise: Seed-Coder's first, then other families' (a tokenizer needs one of them)
EOS_NAMES = (EOS_TOKEN, "<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eos|>")
TOY_VOCAB = ("Write", *"0123456789", "x", "y")


class TokenizerError(UserError, ValueError):
    """A tokenizer file that is missing or unusable; the message names the file."""


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


__all__ = ["EOS_NAMES", "TOKENIZER_FILE", "TOY_VOCAB", "TokenizerError", "load_tokenizer", "toy_tokenizer"]

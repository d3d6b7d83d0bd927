"""The tests' toy policy: a BPE tokenizer trained on a few lines, and the debug model over its vocabulary."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from seedcoder.model import Transformer, model_config
from seedcoder.tokenizer import train_tokenizer


def toy_tokenizer_file(directory: Path, corpus: list[str], vocab_size: int) -> Path:
    """tokenizer.json in `directory`, trained on `corpus` (every pair merged: min_frequency 1)."""
    path = Path(directory) / "tokenizer.json"
    train_tokenizer(corpus, str(path), vocab_size=vocab_size, min_frequency=1)
    return path


def toy_tokenizer(directory: Path, corpus: list[str], vocab_size: int) -> Tokenizer:
    return Tokenizer.from_file(str(toy_tokenizer_file(directory, corpus, vocab_size)))


def toy_model(vocab_size: int, seed: int = 0, **overrides) -> Transformer:
    """The debug preset in eval mode. init_std 0.3: logits far enough apart that argmax and sampled tokens are not
    decided by rounding."""
    model = Transformer(model_config("debug", vocab_size=vocab_size, init_std=0.3, **overrides))
    model.init_weights(seed=seed)
    return model.eval()

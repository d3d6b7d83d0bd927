"""Generation throughput: `python -m benchmarks.generate [--preset tiny] [--batch 16] [--new-tokens 128] [--out DIR]`.

Our engine (seedcoder.generate.Engine: KV cache, batched decode) against Hugging Face transformers' `generate`
on the same model and the same prompts, in one run, greedy and sampled (the paper's temperature 0.6, top-p
0.8, repetition penalty 1.05), and vLLM (`VLLMEngine`) when it is installed on a GPU machine (SKIP(reason)
otherwise). The model is built from --preset with random weights (or loaded from --checkpoint); for
transformers it is saved with `seedcoder.checkpoint.save_model_only`, converted with `seedcoder.hf_convert.convert_to_hf`
and loaded with LlamaForCausalLM.from_pretrained (attn_implementation="sdpa", the batch left-padded). End-of-sequence is
ignored everywhere, so every implementation generates exactly --new-tokens tokens per prompt:

    tokens/s = batch x new tokens / wall seconds of one generate call (prefill included; median of --repeats)

The implementations take turns call by call (round robin) after one warmup call each; the table gives the
median and the best time.

"greedy match" counts the prompts whose greedy tokens equal ours (fp32 on CPU: all of them, up to ties).
CPU: the tiny preset in fp32 (TRITON_INTERPRET unset: the torch paths). GPU: the 1b preset in bf16 by default.
Writes generate.md and generate.json (atomically) to --out.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.common import Skip, atomic_write_text, collect_environment, eprint, error_summary, optional_import
from seedcoder.checkpoint import save_model_only
from seedcoder.data.tokenizer_tables import SPECIAL_TOKENS
from seedcoder.generate import Engine
from seedcoder.hf_convert import convert_to_hf
from seedcoder.model import Transformer, model_config
from seedcoder.sampling import SamplingParams
from seedcoder.vllm_engine import VLLMEngine, vllm_unavailable_reason, write_hf_tokenizer_files

FORMULA = "tokens/s = batch x new tokens / wall seconds of one generate call (prefill included; median of repeats)"
SAMPLED = {"temperature": 0.6, "top_p": 0.8, "repetition_penalty": 1.05}


@dataclass
class Row:
    impl: str
    mode: str
    batch: int
    prompt_tokens: int
    new_tokens: int
    seconds: float | None = None  # median
    best_seconds: float | None = None
    tokens_per_s: float | None = None
    vs_hf: float | None = None
    greedy_match: str = ""
    skip: str | None = None


def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer over the model's vocabulary (ids 0-5 Seed-Coder's special tokens), for random
    weights without a trained tokenizer: the engine decodes text and checks stops through it as usual."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS.values())}
    vocab.update({f"t{i}": i for i in range(len(vocab), vocab_size)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["pad"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS.values()))
    return tokenizer


def make_prompts(batch: int, low: int, high: int, vocab: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (batch,), generator=generator).tolist()
    first = len(SPECIAL_TOKENS)  # plain tokens only
    return [torch.randint(first, vocab, (n,), generator=generator).tolist() for n in lengths]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(runners: dict, repeats: int, device: torch.device) -> dict:
    """{name: (seconds of each timed call, tokens of the last call)}: one warmup call each, then the runners take
    turns (round robin), so load drift on a shared machine hits every implementation alike."""
    results = {name: ([], run()) for name, run in runners.items()}
    for _ in range(repeats):
        for name, run in runners.items():
            synchronize(device)
            start = time.perf_counter()
            tokens = run()
            synchronize(device)
            results[name][0].append(time.perf_counter() - start)
            results[name] = (results[name][0], tokens)
    return results


# ------------------------------------------------------------------------------------------ implementations
def ours_runner(model, tokenizer, prompts, new_tokens, mode):
    engine = Engine(model, tokenizer, max_batch=len(prompts), max_seq_len=max(map(len, prompts)) + new_tokens + 1)
    fields = {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0} if mode == "greedy" else dict(SAMPLED)
    params = SamplingParams(max_tokens=new_tokens, stop_token_ids=(), logprobs=True, **fields)  # unseeded, like HF
    return lambda: [c[0].token_ids for c in engine.generate(prompts, params)]


def hf_runner(hf_dir, prompts, new_tokens, mode, device, dtype):
    transformers = optional_import("transformers")
    model = transformers.LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=dtype, attn_implementation="sdpa")
    model = model.to(device).eval()
    width = max(map(len, prompts))
    pad = 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    sampling = {"do_sample": False} if mode == "greedy" else {"do_sample": True, "top_k": 0, **SAMPLED}

    def run():
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=pad, eos_token_id=None, **sampling)
        return out[:, width:].tolist()

    return run


def vllm_runner(hf_dir, prompts, new_tokens, mode):
    reason = vllm_unavailable_reason()
    if reason is not None:
        raise Skip(reason)
    engine = VLLMEngine(hf_dir, seed=0)
    fields = {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0} if mode == "greedy" else dict(SAMPLED)
    params = SamplingParams(max_tokens=new_tokens, stop_token_ids=(), logprobs=True, **fields)  # unseeded, like HF
    return lambda: [c[0].token_ids for c in engine.generate(prompts, params)]


# ------------------------------------------------------------------------------------------ report
def render_markdown(env: dict, rows: list[Row], notes: list[str]) -> str:
    lines = ["# seedcoder generation benchmark", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in env.items()]
    lines += ["", f"Formula: {FORMULA}", "",
              "| implementation | mode | batch | prompt tokens | new tokens/seq | median s (best) | tokens/s | vs HF "
              "| greedy match |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        if r.skip:
            lines.append(f"| {r.impl} | {r.mode} | {r.batch} | {r.prompt_tokens} | {r.new_tokens} | SKIP({r.skip}) | | | |")
            continue
        vs = f"{r.vs_hf:.2f}x" if r.vs_hf is not None else ""
        lines.append(f"| {r.impl} | {r.mode} | {r.batch} | {r.prompt_tokens} | {r.new_tokens} | {r.seconds:.3f} "
                     f"({r.best_seconds:.3f}) | {r.tokens_per_s:,.0f} | {vs} | {r.greedy_match} |")
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="1b" if gpu else "tiny", help="model preset (default: 1b on GPU, tiny on CPU)")
    parser.add_argument("--checkpoint", help="benchmark this checkpoint's weights instead of random ones")
    parser.add_argument("--batch", type=int, default=32 if gpu else 8, help="prompts per generate call")
    parser.add_argument("--prompt-len", type=int, nargs=2, default=[16, 128], metavar=("MIN", "MAX"),
                        help="prompt lengths, uniform in [MIN, MAX] (default 16 128)")
    parser.add_argument("--new-tokens", type=int, default=128 if gpu else 64, help="tokens generated per prompt")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median; after one warmup call)")
    parser.add_argument("--modes", nargs="+", choices=["greedy", "sampled"], default=["greedy", "sampled"])
    parser.add_argument("--out", default=os.path.join("results", "generate"), help="folder for generate.{md,json}")
    args = parser.parse_args(argv)
    low, high = args.prompt_len
    for name, value in (("batch", args.batch), ("new-tokens", args.new_tokens), ("repeats", args.repeats), ("prompt-len", low)):
        if value < 1:
            parser.error(f"--{name} must be >= 1")
    if high < low:
        parser.error("--prompt-len: MAX must be >= MIN")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    if args.checkpoint:
        engine = Engine.from_checkpoint(args.checkpoint, device, dtype)
        model, tokenizer = engine.model, engine.tokenizer
    else:
        with torch.device(device):
            model = Transformer(model_config(args.preset)).to(dtype).eval()
        tokenizer = synthetic_tokenizer(model.cfg.vocab_size)
    prompts = make_prompts(args.batch, *args.prompt_len, model.cfg.vocab_size)
    prompt_tokens = sum(map(len, prompts))
    env = collect_environment(measure=False, device=str(device), dtype=str(dtype).removeprefix("torch."),
                              model=args.checkpoint or args.preset, params=f"{model.num_params() / 1e6:,.1f}M",
                              threads=torch.get_num_threads())
    eprint(f"benchmarks.generate: {env['model']} on {device} ({env['dtype']}), {args.batch} prompts "
           f"({prompt_tokens} tokens), {args.new_tokens} new tokens each")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        save_model_only(model, Path(tmp) / "ckpt")
        hf_dir = Path(tmp) / "hf"
        tokenizer_file = Path(tmp) / "tokenizer.json"
        tokenizer.save(str(tokenizer_file))
        convert_to_hf(Path(tmp) / "ckpt", hf_dir, tokenizer=tokenizer_file, log=lambda *_: None)
        write_hf_tokenizer_files(hf_dir, model.cfg.max_seq_len)
        implementations = [("seedcoder engine", lambda mode: ours_runner(model, tokenizer, prompts, args.new_tokens, mode)),
                           ("hf transformers generate",
                            lambda mode: hf_runner(hf_dir, prompts, args.new_tokens, mode, device, dtype)),
                           ("vllm", lambda mode: vllm_runner(hf_dir, prompts, args.new_tokens, mode))]
        for mode in args.modes:
            rows_of_mode, runners = [], {}
            for name, factory in implementations:
                row = Row(name, mode, args.batch, prompt_tokens, args.new_tokens)
                rows_of_mode.append(row)
                try:
                    runners[name] = factory(mode)
                except Skip as skip:
                    row.skip = skip.reason
                except Exception as error:  # a peer that breaks must not hide the other rows
                    row.skip = f"error: {error_summary(error)}"
            results = measure(runners, args.repeats, device)
            for row in rows_of_mode:
                if row.impl in results:
                    times, tokens = results[row.impl]
                    if any(len(t) != args.new_tokens for t in tokens):
                        row.skip = "error: a sequence stopped before --new-tokens"
                        continue
                    row.seconds, row.best_seconds = statistics.median(times), min(times)
                    row.tokens_per_s = args.batch * args.new_tokens / row.seconds
                    if mode == "greedy" and "seedcoder engine" in results:
                        same = sum(a == b for a, b in zip(tokens, results["seedcoder engine"][1]))
                        row.greedy_match = f"{same}/{args.batch}"
                eprint(f"  {row.impl} ({mode}): " + (f"SKIP({row.skip})" if row.skip else f"{row.tokens_per_s:,.0f} tok/s"))
            hf = next((r for r in rows_of_mode if r.impl.startswith("hf") and r.tokens_per_s), None)
            for row in rows_of_mode:
                if row.tokens_per_s and hf is not None:
                    row.vs_hf = row.tokens_per_s / hf.tokens_per_s
            rows += rows_of_mode
    notes = ["Same prompts (random token ids, lengths uniform in the --prompt-len range) and the same weights for "
             "every implementation; end-of-sequence ignored, so each generates exactly the new tokens.",
             "Sampled: temperature 0.6, top-p 0.8, repetition penalty 1.05 (the paper's defaults) everywhere; ours "
             "also computes both log-probabilities of every token (RL needs them); HF and vLLM do not here."]
    if device.type != "cuda":
        notes.insert(0, "CPU run: GPU figures need a GPU (python -m benchmarks.generate on the GPU machine).")
    markdown = render_markdown(env, rows, notes)
    print(markdown)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "generate.md"), markdown)
    payload = {"environment": env, "formula": FORMULA, "rows": [asdict(r) for r in rows], "notes": notes}
    atomic_write_text(os.path.join(args.out, "generate.json"), json.dumps(payload, indent=2) + "\n")
    eprint(f"wrote {args.out}/generate.md and generate.json")
    return 1 if any(r.impl == "seedcoder engine" and r.skip for r in rows) else 0  # our rows must run


if __name__ == "__main__":
    sys.exit(main())

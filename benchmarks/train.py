"""Training-step benchmark: `python -m benchmarks.train [--preset 1b] [--seq-len 8192] [--out results/train]`.

One forward + backward + AdamW step on one device, the same random batches for every implementation, in one run:
  * ours: seedcoder.model.Transformer (Triton RMSNorm / rotary / flash attention / fused linear cross-entropy on
    the GPU); rows of one document each (plain causal), and the same rows packed with documents of ~1K tokens
    (document masking from cu_seqlens in the flash kernel, no dense mask);
  * hf: transformers LlamaForCausalLM with attn_implementation="sdpa", the same shape and batches;
  * torchtitan: its Llama-3 model when installed, else SKIP.
bf16 parameters and compute on the GPU for everyone (fused AdamW on bf16 parameters, so the optimizer step
costs the same; the trainer's FSDP run keeps fp32 masters instead). The loss is the mean over the batch's tokens.

Reported per implementation: median step time over --steps timed steps (after --warmup), tokens/s, MFU =
tokens/s x Transformer.flops_per_token(seq_len) / the GPU's dense bf16 peak (the FLOP formula: 6 N + 6 L H D S,
N = parameters without the input embedding, the attention term halved for causal masking), peak memory.
Targets on an H100: ours MFU >= 50%, >= 1.3x the HF tokens/s. On a CPU the debug model runs
(fp32, short rows) and the report says that GPU figures need a GPU.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch

from benchmarks.common import (
    COUNT_PREFIXES,
    Skip,
    atomic_write_text,
    collect_environment,
    eprint,
    error_summary,
    optional_import,
    scaled,
)
from benchmarks.report import ENV_FIELDS
from seedcoder.metrics import device_peak_tflops
from seedcoder.model import Transformer, model_config

DOC_TOKENS = 1024  # document length of the packed variant
TARGET_MFU_PCT = 50.0
TARGET_SPEEDUP_VS_HF = 1.3


def peak_bf16_tflops() -> float | None:
    """The GPU's dense bf16 peak from the trainer's table (the same MFU denominator as its step logs)."""
    return device_peak_tflops(torch.device("cuda"))[0] if torch.cuda.is_available() else None


# ------------------------------------------------------------------------------------------ batches
@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, S)
    labels: torch.Tensor  # (B, S): the next token, -100 at the end of each row
    position_ids: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None


def make_batches(n: int, batch: int, seq_len: int, vocab: int, device: torch.device, *, packed: bool,
                 seed: int = 0) -> list[Batch]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq_len), generator=generator)
        labels = torch.cat([ids[:, 1:], torch.full((batch, 1), -100)], dim=1)
        position_ids = cu_seqlens = None
        if packed:
            doc = min(DOC_TOKENS, seq_len)
            position_ids = (torch.arange(seq_len) % doc).expand(batch, seq_len).contiguous()
            labels[:, doc - 1::doc] = -100  # a document's last token predicts nothing
            cu_seqlens = torch.tensor(sorted({*range(0, batch * seq_len, doc), *range(0, batch * seq_len + 1, seq_len)}),
                                      dtype=torch.int32)
            position_ids, cu_seqlens = position_ids.to(device), cu_seqlens.to(device)
        out.append(Batch(ids.to(device), labels.to(device), position_ids, cu_seqlens))
    return out


# ------------------------------------------------------------------------------------------ implementations
def ours(cfg, dtype, device, packed: bool):
    with torch.device(device):  # initialised where it runs: on the CPU, the 1B preset's init alone takes tens of seconds
        model = Transformer(cfg)
    model = model.to(dtype)

    def loss(b: Batch) -> torch.Tensor:
        total = model(b.input_ids, position_ids=b.position_ids, cu_seqlens=b.cu_seqlens, labels=b.labels)
        return total / (b.labels != -100).sum()

    return model, loss


def huggingface(cfg, dtype, device, packed: bool):
    transformers = optional_import("transformers")
    from seedcoder.hf_format import config_to_hf

    config = transformers.LlamaConfig(**{k: v for k, v in config_to_hf(cfg, dtype).items() if k != "torch_dtype"})
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=dtype).to(device)

    def loss(b: Batch) -> torch.Tensor:  # HF shifts its labels itself: give it the row, masked where ours is
        labels = torch.cat([torch.full_like(b.labels[:, :1], -100), b.labels[:, :-1]], dim=1)
        return model(input_ids=b.input_ids, labels=labels).loss

    return model, loss


def torchtitan(cfg, dtype, device, packed: bool):
    module = None
    for path in ("torchtitan.models.llama3.model.model", "torchtitan.models.llama3.model", "torchtitan.models.llama3"):
        try:
            module = optional_import(path)
            if hasattr(module, "Transformer"):
                break
        except Skip:
            continue
    if module is None or not hasattr(module, "Transformer"):
        raise Skip("torchtitan not installed")
    args_cls = getattr(module, "TransformerModelArgs", None)
    if args_cls is None:
        args_cls = optional_import("torchtitan.models.llama3", "TransformerModelArgs")
    base_ffn = int(2 * 4 * cfg.dim / 3)
    args = args_cls(dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
                    vocab_size=cfg.vocab_size, multiple_of=256, ffn_dim_multiplier=cfg.ffn_dim / base_ffn,
                    norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, max_seq_len=cfg.max_seq_len)
    with torch.device(device):
        model = module.Transformer(args)
        model.init_weights()
    model = model.to(dtype)
    if sum(p.numel() for p in model.parameters()) != _param_count(cfg):
        raise Skip("torchtitan's model has a different parameter count for this shape")

    def loss(b: Batch) -> torch.Tensor:
        logits = model(b.input_ids)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), b.labels.flatten(), ignore_index=-100)

    return model, loss


def _param_count(cfg) -> int:
    with torch.device("meta"):
        return Transformer(cfg).num_params()


IMPLEMENTATIONS: list[tuple[str, Callable, bool]] = [  # (name, factory, packed documents)
    ("seedcoder", ours, False),
    ("seedcoder (packed docs)", ours, True),
    ("hf transformers sdpa", huggingface, False),
    ("torchtitan", torchtitan, False),
]


# ------------------------------------------------------------------------------------------ measuring
@dataclass
class Row:
    impl: str
    preset: str
    batch: int
    seq_len: int
    dtype: str
    step_ms: float | None = None
    tokens_per_s: float | None = None
    mfu_pct: float | None = None
    peak_mem_gb: float | None = None
    final_loss: float | None = None
    skip: str | None = None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated() if device.type == "cuda" else 0


@dataclass
class Runner:
    """One implementation, set up and resident, stepped in turn with the others (round robin, so that load
    drift on a shared machine hits every implementation alike)."""

    row: Row
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    loss_fn: Callable | None = None
    batches: list[Batch] | None = None
    resident_bytes: int = 0  # parameters + optimizer state, measured around setup and the first step
    step_peak_bytes: int = 0  # the most any one step allocated on top of what was resident before it
    times: list[float] | None = None


def set_up(name: str, factory: Callable, packed: bool, args, cfg, dtype, device) -> Runner:
    runner = Runner(Row(name, args.preset, args.batch, args.seq_len, str(dtype).removeprefix("torch.")), times=[])
    before = allocated(device)
    try:
        torch.manual_seed(0)
        runner.model, runner.loss_fn = factory(cfg, dtype, device, packed)
        runner.optimizer = torch.optim.AdamW(runner.model.parameters(), lr=1e-4, fused=device.type == "cuda")
        runner.batches = make_batches(args.warmup + args.steps, args.batch, args.seq_len, cfg.vocab_size, device,
                                      packed=packed)
        runner.resident_bytes = allocated(device) - before
    except Skip as skip:
        fail(runner, str(skip), device)
    except Exception as error:  # a peer that breaks must not hide the other rows
        fail(runner, "out of memory" if isinstance(error, torch.OutOfMemoryError) else f"error: {error_summary(error)}",
             device)
    return runner


def fail(runner: Runner, reason: str, device: torch.device) -> None:
    runner.row.skip = reason
    runner.model = runner.optimizer = runner.loss_fn = runner.batches = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def step(runner: Runner, index: int, device: torch.device) -> None:
    """forward + backward + AdamW on batch `index`; records its time and memory."""
    try:
        synchronize(device)
        before = allocated(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = runner.loss_fn(runner.batches[index])
        loss.backward()
        runner.optimizer.step()
        runner.optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        runner.times.append(time.perf_counter() - start)
        runner.row.final_loss = loss.item()
        if device.type == "cuda":
            runner.step_peak_bytes = max(runner.step_peak_bytes, torch.cuda.max_memory_allocated() - before)
            if index == 0:  # AdamW allocates its state in the first step
                runner.resident_bytes += allocated(device) - before
    except Exception as error:
        fail(runner, "out of memory" if isinstance(error, torch.OutOfMemoryError) else f"error: {error_summary(error)}",
             device)


def measure_all(args, cfg, dtype, device, peak_flops: float | None) -> list[Row]:
    runners = [set_up(name, factory, packed, args, cfg, dtype, device)
               for name, factory, packed in IMPLEMENTATIONS if name in args.impl]
    for index in range(args.warmup + args.steps):
        for runner in runners:
            if runner.row.skip is None:
                step(runner, index, device)
    flops = _flops_per_token(cfg, args.seq_len)
    for runner in runners:
        row = runner.row
        if row.skip is None:
            seconds = statistics.median(runner.times[args.warmup:])
            row.step_ms = seconds * 1e3
            row.tokens_per_s = args.batch * args.seq_len / seconds
            row.mfu_pct = 100 * row.tokens_per_s * flops / peak_flops if peak_flops else None
            if device.type == "cuda":
                row.peak_mem_gb = (runner.resident_bytes + runner.step_peak_bytes) / 1e9
        result = f"SKIP({row.skip})" if row.skip else f"{row.step_ms:.1f} ms/step, {row.tokens_per_s:,.0f} tok/s"
        eprint(f"  {row.impl}: {result}")
    return [runner.row for runner in runners]


def _flops_per_token(cfg, seq_len: int) -> float:
    with torch.device("meta"):
        return Transformer(cfg).flops_per_token(seq_len)


def model_summary(cfg, seq_len: int) -> dict[str, str]:
    """The report header's model size and FLOPs per token, scaled to their size (debug: ~100K parameters; 1b: 1.61B)."""
    return {"params": scaled(_param_count(cfg), COUNT_PREFIXES),
            "flops_per_token": f"{scaled(_flops_per_token(cfg, seq_len), unit='FLOP')} at S={seq_len}"}


# ------------------------------------------------------------------------------------------ report
def targets(rows: list[Row]) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/MISS/N/A) computed from the rows."""
    ours_row = next((r for r in rows if r.impl == "seedcoder"), None)
    hf_row = next((r for r in rows if r.impl.startswith("hf")), None)
    out = []
    if ours_row is None or ours_row.mfu_pct is None:
        out.append((f"MFU >= {TARGET_MFU_PCT:g}%", "", "N/A (no GPU peak known here)"))
    else:
        out.append((f"MFU >= {TARGET_MFU_PCT:g}%", f"{ours_row.mfu_pct:.1f}%",
                    "PASS" if ours_row.mfu_pct >= TARGET_MFU_PCT else "MISS"))
    if ours_row is None or hf_row is None or ours_row.tokens_per_s is None or hf_row.tokens_per_s is None:
        out.append((f">= {TARGET_SPEEDUP_VS_HF:g}x HF tokens/s", "", "N/A (a row was skipped)"))
    else:
        speedup = ours_row.tokens_per_s / hf_row.tokens_per_s
        verdict = "PASS" if speedup >= TARGET_SPEEDUP_VS_HF else "MISS"
        if ours_row.mfu_pct is None:
            verdict = f"N/A on CPU ({verdict} here)"
        out.append((f">= {TARGET_SPEEDUP_VS_HF:g}x HF tokens/s", f"{speedup:.2f}x", verdict))
    return out


def render_markdown(env: dict, rows: list[Row], notes: list[str]) -> str:
    out = io.StringIO()
    w = lambda line="": out.write(line + "\n")
    w("# seedcoder training-step benchmark")
    w()
    w("| | |")
    w("|---|---|")
    for key, name in ENV_FIELDS + [(k, k) for k in env if k not in dict(ENV_FIELDS)]:
        if key in env:
            w(f"| {name} | {env[key]} |")
    w()
    w("| impl | preset | batch x seq | dtype | step ms | tokens/s | MFU | peak GB | loss |")
    w("|---|---|---|---|--:|--:|--:|--:|--:|")
    for r in rows:
        if r.skip:
            w(f"| {r.impl} | {r.preset} | {r.batch} x {r.seq_len} | {r.dtype} | SKIP({r.skip}) | | | | |")
            continue
        mfu = f"{r.mfu_pct:.1f}%" if r.mfu_pct is not None else "n/a"
        mem = f"{r.peak_mem_gb:.1f}" if r.peak_mem_gb is not None else ""
        w(f"| {r.impl} | {r.preset} | {r.batch} x {r.seq_len} | {r.dtype} | {r.step_ms:.1f} | {r.tokens_per_s:,.0f} "
          f"| {mfu} | {mem} | {r.final_loss:.3f} |")
    w()
    w("| target | measured | result |")
    w("|---|--:|---|")
    for target, measured, verdict in targets(rows):
        w(f"| {target} | {measured} | {verdict} |")
    w()
    for note in notes:
        w(f"- {note}")
    return out.getvalue()


def write_outputs(out_dir: str, env: dict, rows: list[Row], notes: list[str], markdown: str) -> list[str]:
    paths = [os.path.join(out_dir, f"train.{ext}") for ext in ("md", "csv", "json")]
    csv_buffer = io.StringIO()
    writer = csv.DictWriter(csv_buffer, fieldnames=[f.name for f in fields(Row)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    csv_text = csv_buffer.getvalue()
    payload = {"environment": env, "rows": [asdict(r) for r in rows],
               "targets": [dict(zip(("target", "measured", "result"), t)) for t in targets(rows)], "notes": notes}
    for path, text in zip(paths, (markdown, csv_text, json.dumps(payload, indent=2, default=str) + "\n")):
        atomic_write_text(path, text)
    return paths


def parse_args(argv=None) -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="1b" if gpu else "debug", help="model preset (default: 1b on GPU, debug on CPU)")
    parser.add_argument("--seq-len", type=int, default=8192 if gpu else 256)
    parser.add_argument("--batch", type=int, default=1 if gpu else 4, help="rows per step")
    parser.add_argument("--steps", type=int, default=10 if gpu else 5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3 if gpu else 1, help="untimed steps first")
    parser.add_argument("--impl", nargs="+", choices=[name for name, _, _ in IMPLEMENTATIONS],
                        default=[name for name, _, _ in IMPLEMENTATIONS])
    parser.add_argument("--out", default=os.path.join("results", "train"), help="folder for train.{md,csv,json}")
    args = parser.parse_args(argv)
    for key in ("seq_len", "batch", "steps"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = model_config(args.preset)
    peak = peak_bf16_tflops()
    env = collect_environment(measure=False, preset=args.preset, **model_summary(cfg, args.seq_len),
                              peak_bf16_tflops=peak if peak is not None else "unknown")
    notes = ["MFU = tokens/s x (6 N + 6 L H D S) / dense bf16 peak; N = parameters without the input embedding; the "
             "attention term is halved for causal masking (no credit for document masking).",
             "Same random batches for every implementation; median step time after the warmup steps. Implementations "
             "step in turn (round robin), all resident at once; peak memory = own parameters and optimizer state + "
             "the step's peak."]
    if device.type != "cuda":
        notes.insert(0, "CPU run (fp32, the debug preset by default): GPU figures (1B preset, 8K context, bf16, MFU) "
                        "need a GPU; run this on the GPU machine.")
        print("benchmarks.train: no CUDA GPU here; measuring the small model on the CPU. GPU figures need a GPU.")
    eprint(f"benchmarks.train: {args.preset} on {device} ({dtype}), batch {args.batch} x {args.seq_len}, "
           f"{args.warmup} warmup + {args.steps} timed steps")
    rows = measure_all(args, cfg, dtype, device, peak * 1e12 if peak else None)
    markdown = render_markdown(env, rows, notes)
    print(markdown)
    paths = write_outputs(args.out, env, rows, notes, markdown)
    eprint("wrote " + ", ".join(paths))
    return 1 if any(r.impl.startswith("seedcoder") and r.skip for r in rows) else 0  # our own rows must run


if __name__ == "__main__":
    sys.exit(main())

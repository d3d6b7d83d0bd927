"""`make demo`: the main job, end to end, on real code nobody here wrote: this interpreter's standard library.

    python -m seedcoder.demo [--out runs/demo] [--steps 200] [--fresh]

1. data:    the standard library's *.py files (tests, idlelib and site-packages left out) -> a byte-level BPE
            tokenizer trained on them -> shards + manifest (`seedcoder.data.build`, resumable)
2. train:   the "tiny" model (configs/pretrain_tiny_demo.toml) pretrained with
            `torchrun --nproc_per_node=2 -m seedcoder.train pretrain` on CPU (gloo), or one process per GPU
            (up to 8) when CUDA is present. Halfway, the demo sends SIGTERM (what a preemption does): every rank
            finishes its step, a checkpoint is written, and the job exits;
3. resume:  the same command with --resume continues at the next step, to the end; loss.png is drawn;
4. sample:  the trained model completes a Python prompt (greedy and temperature sampling, and a fill-in-the-
            middle prompt in Seed-Coder's SPM format) with our generation engine (seedcoder.generate).
5. curate:  the model-centric pipeline (configs/curate_demo.toml, `seedcoder.curate`) on the standard library and
            this repository with its git history: ingest, exact and near dedup, syntax filter, decontamination,
            oracle ratings (the offline rubric proxy unless an endpoint is configured), a scorer trained from the
            model of step 3, scoring, the bottom 10% dropped, commit samples, repository documents; code-related
            web pages (Debian's HTML documentation as WARC files: extraction, dedup, fastText recall, web-rubric
            ratings, per-category filter); tokenized shards (the demo's tokenizer), the high-quality set recalled
            from the scored files (curate/tokenize_hq) and a report (curate/report/report.md + plots);
6. pretrain on the curated shards: a short run from scratch on what the pipeline kept; its loss must fall too.
7-10. post-training (seedcoder.demo.posttrain) of the model of step 3: SFT on chats made from the standard
            library and the toy problems' solutions (`torchrun -m seedcoder.train sft`, its loss must fall) ->
            sft/; DPO on (passing, failing) pairs mined from the SFT model on toy problems with unit tests, judged
            in the sandbox -> dpo/; RL (GRPO, unit-test + format reward) from the DPO model (the SFT model when
            no pair was mined) -> rl/; HumanEval (164 problems, greedy, `seedcoder eval humaneval` on the
            embedded engine) on the RL model -> eval/.

Everything lands under --out (runs/demo): data/, checkpoints/, metrics.jsonl, tensorboard/, loss.png,
samples.txt, summary.json, curate/ (one folder per step, report/), curated/ (the second pretraining run),
sft/, dpo/, rl/, eval/ and posttrain_summary.json (steps 7-10).
Running the demo again continues an interrupted one (--fresh starts over). The demo fails (exit 1) if a loss
did not fall. This module holds steps 1-6 and `main`, which runs all ten; steps 7-10 are seedcoder.demo.posttrain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import torch

from seedcoder.checkpoint import latest_checkpoint, load_model
from seedcoder.curate.pipeline import run_pipeline
from seedcoder.data.build import build_dataset
from seedcoder.data.tokenizer_tables import SPECIAL_TOKENS
from seedcoder.demo.posttrain import run_posttrain
from seedcoder.demo.runs import launch_command, loss_fall
from seedcoder.generate import Engine
from seedcoder.metrics import read_jsonl
from seedcoder.sampling import SamplingParams
from seedcoder.tokenizer import TOKENIZER_FILE, load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "pretrain_tiny_demo.toml")
CURATE_CONFIG = os.path.join(ROOT, "configs", "curate_demo.toml")
CURATED_STEPS = 60  # the short pretraining run on the curated shards
STDLIB_EXCLUDE = ["site-packages/*", "dist-packages/*", "test/*", "*/test/*", "*/tests/*", "idlelib/*", "*/idle_test/*"]
PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'
FIM_PREFIX = "def is_even(n):\n"
FIM_SUFFIX = "\n\nprint(is_even(4))\n"


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 100 - len(text)), flush=True)


def read_steps(jsonl: str) -> list[dict]:
    return read_jsonl(jsonl)


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (torchrun's workers), from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


def train(out: str, data: str, steps: int, nproc: int, micro_batch: int, *, resume: bool, stop_at: int | None) -> int:
    """Run the trainer; with stop_at, send SIGTERM once that step is logged. Returns the last logged step."""
    command = launch_command(nproc) + [
        "--config", CONFIG, f"--run.out_dir={out}", f"--data.path={data}", f"--train.steps={steps}",
        f"--train.micro_batch_size={micro_batch}",
    ] + (["--resume"] if resume else [])
    print("$ " + " ".join(command), flush=True)
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, start_new_session=True)
    jsonl = os.path.join(out, "metrics.jsonl")
    stop_sent = False
    try:
        while process.poll() is None:
            time.sleep(0.5)
            if stop_at is not None and not stop_sent and any(r["step"] >= stop_at for r in read_steps(jsonl)[-3:]):
                workers = _children(process.pid)
                print(f"\n[demo] step {stop_at} reached: SIGTERM to the {len(workers)} training processes, as a "
                      "preemption would", flush=True)
                for pid in workers:  # each rank finishes its step, checkpoints and exits 0; torchrun then exits 0
                    os.kill(pid, signal.SIGTERM)
                stop_sent = True
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        raise
    records = read_steps(jsonl)
    last = records[-1]["step"] if records else 0
    if process.returncode != 0 and not stop_sent:
        raise SystemExit(f"[demo] training failed (exit {process.returncode})")
    return last


def sample_completions(out: str, data: str, device) -> str:
    """Greedy and temperature samples from the newest checkpoint (our generation engine), as text."""
    path = latest_checkpoint(os.path.join(out, "checkpoints"))
    tokenizer = load_tokenizer(os.path.join(data, TOKENIZER_FILE))
    model, _ = load_model(path, device, torch.float32)
    engine = Engine(model, tokenizer)

    def complete(prompt_ids: list[int], *, temperature: float, max_new_tokens: int = 120) -> str:
        params = SamplingParams(temperature=temperature, top_k=40, top_p=1.0, repetition_penalty=1.0,
                                max_tokens=max_new_tokens, seed=0)  # top-k sampling, greedy at temperature 0
        return engine.generate([prompt_ids], params, progress=True)[0][0].text

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    def special(role: str) -> list[int]:
        return [tokenizer.token_to_id(SPECIAL_TOKENS[role])]

    prompt_ids = encode(PROMPT)
    fim_ids = special("fim_suffix") + encode(FIM_SUFFIX) + special("fim_prefix") + encode(FIM_PREFIX) + special("fim_middle")
    parts = [
        f"checkpoint: {path}",
        "--- greedy ---",
        PROMPT + complete(prompt_ids, temperature=0.0),
        "--- temperature 0.8, top-k 40 ---",
        PROMPT + complete(prompt_ids, temperature=0.8),
        "--- fill in the middle (Seed-Coder SPM: <[fim-suffix]> S <[fim-prefix]> P <[fim-middle]>), greedy ---",
        FIM_PREFIX + "\u2588" + complete(fim_ids, temperature=0.0, max_new_tokens=60) + "\u2588" + FIM_SUFFIX,
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seedcoder.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "demo"), help="output directory (default runs/demo)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps in all (default 200)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="the tokenizer's vocabulary (default 4096)")
    parser.add_argument("--fresh", action="store_true", help="delete the previous demo run (not its data) first")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    out, data = os.path.abspath(args.out), os.path.join(os.path.abspath(args.out), "data")
    if args.fresh:
        for name in ("checkpoints", "tensorboard", "metrics.jsonl", "loss.png", "samples.txt", "summary.json", "curate",
                     "curated", "sft", "dpo", "rl", "eval", "posttrain_summary.json"):
            target = os.path.join(out, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.unlink(target)
    os.makedirs(out, exist_ok=True)
    cuda = torch.cuda.is_available()
    nproc = 2 if not cuda else max(n for n in (1, 2, 4, 8) if n <= torch.cuda.device_count())
    micro_batch = 16 // nproc  # configs/pretrain_tiny_demo.toml: 16 rows of 256 tokens per step

    stdlib = sysconfig.get_paths()["stdlib"]
    banner(f"1/10 data: {stdlib} (*.py) -> tokenizer -> shards")
    build_dataset(stdlib, data, vocab_size=args.vocab_size, include=["*.py"], exclude=STDLIB_EXCLUDE, shard_bytes=4 << 20)

    jsonl = os.path.join(out, "metrics.jsonl")
    device_text = f"{nproc} GPU(s)" if cuda else "CPU (gloo, 1 thread each)"
    if latest_checkpoint(os.path.join(out, "checkpoints")) is None:
        stop_at = args.steps // 2
        banner(f"2/10 pretraining: {nproc} processes on {device_text}; interrupted at step {stop_at}")
        stopped = train(out, data, args.steps, nproc, micro_batch, resume=False, stop_at=stop_at)
        print(f"[demo] the job stopped after step {stopped}; its checkpoint: "
              f"{latest_checkpoint(os.path.join(out, 'checkpoints'))}", flush=True)
    else:
        banner("2/10 pretraining: a previous demo run exists; continuing it (--fresh starts over)")
    banner("3/10 resume: the same command with --resume")
    train(out, data, args.steps, nproc, micro_batch, resume=True, stop_at=None)

    banner("4/10 sampling from the trained model")
    text = sample_completions(out, data, "cuda" if cuda else "cpu")
    print(text, flush=True)
    with open(os.path.join(out, "samples.txt"), "w", encoding="utf-8") as file:
        file.write(text + "\n")

    banner("5/10 curation: standard library + this repository (and its history) -> scored shards")
    curated_data = curate(out, data)

    banner(f"6/10 pretraining on the curated shards: {CURATED_STEPS} steps from scratch")
    curated_out = os.path.join(out, "curated")
    train(curated_out, curated_data, CURATED_STEPS, nproc, micro_batch,
          resume=latest_checkpoint(os.path.join(curated_out, "checkpoints")) is not None, stop_at=None)
    curated_first, curated_last, _ = loss_fall(read_jsonl(os.path.join(curated_out, "metrics.jsonl")))

    posttrain = run_posttrain(out, nproc, banner)  # steps 7-10: SFT -> DPO -> RL -> HumanEval, each banner its own

    records = [r for r in read_jsonl(jsonl) if not r.get("skipped")]
    first, last, window = loss_fall(records)
    summary = {
        "steps": records[-1]["step"] if records else 0,
        "processes": nproc,
        "device": "cuda" if cuda else "cpu",
        "loss_first_steps": first,
        "loss_last_steps": last,
        "tokens_per_s_per_device_median": sorted(r["tokens_per_s_per_device"] for r in records)[len(records) // 2],
        "curated_loss_first_steps": curated_first,
        "curated_loss_last_steps": curated_last,
        **{key: value for key, value in posttrain.items() if not key.endswith("_checkpoint")},
        "wall_time_s": time.perf_counter() - started,
    }
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as file:
        json.dump(summary, file, indent=1)
    banner("done")
    print(f"loss {first:.3f} (mean of the first {window} steps) -> {last:.3f} (last {window}); "
          f"{summary['tokens_per_s_per_device_median']:,.0f} tok/s per process; {summary['wall_time_s'] / 60:.1f} min")
    print(f"curated shards: loss {curated_first:.3f} -> {curated_last:.3f} over {CURATED_STEPS} steps")
    dpo_text = (f", reward accuracy {posttrain['dpo_reward_accuracy_last_steps']:.2f}, margin "
                f"{posttrain['dpo_reward_margin_last_steps']:+.4f}" if posttrain["dpo_mined_pairs"] else " (no DPO steps)")
    print(f"SFT: loss {posttrain['sft_loss_first_steps']:.3f} -> {posttrain['sft_loss_last_steps']:.3f}; DPO: "
          f"{posttrain['dpo_mined_pairs']} mined pairs{dpo_text}; RL reward per step: "
          + ", ".join(f"{r:.3f}" for r in posttrain["rl_reward_per_step"])
          + f"; HumanEval pass@1 {posttrain['humaneval_pass@1']:.4f}")
    print(f"outputs: {out}/ (loss.png, metrics.jsonl, tensorboard/, checkpoints/, samples.txt, summary.json, "
          "curate/report/report.md, curated/, sft/, dpo/, rl/, eval/humaneval/results.json)")
    sft_fell = posttrain["sft_loss_last_steps"] < posttrain["sft_loss_first_steps"]
    if not last < first or not curated_last < curated_first or not sft_fell:
        print("[demo] FAILED: the loss did not fall", file=sys.stderr)
        return 1
    return 0


def curate(out: str, data: str) -> str:
    """The curation pipeline of configs/curate_demo.toml on the standard library and this repository; returns the
    folder of its tokenized shards. A rerun skips the steps that finished."""
    curate_out = os.path.join(out, "curate")
    run_pipeline(CURATE_CONFIG, overrides={
        "out": curate_out,
        "scorer_train.checkpoint": os.path.join(out, "checkpoints"),  # the model pretrained above
        "tokenize.tokenizer": os.path.join(data, TOKENIZER_FILE),  # the same vocabulary as that model
    })
    report = os.path.join(curate_out, "report", "report.md")
    with open(report, encoding="utf-8") as file:
        print(file.read().split("\n## ")[0], flush=True)  # the per-step table; drop reasons etc. follow in the file
    print(f"[demo] curation report: {report} (+ report.json and PNG plots beside it)", flush=True)
    return os.path.join(curate_out, "tokenize")


if __name__ == "__main__":
    sys.exit(main())

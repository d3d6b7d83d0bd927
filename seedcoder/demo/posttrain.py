"""Post-training in `make demo` (steps 7-10): SFT -> DPO -> RL (GRPO) -> HumanEval, on the demo's pretrained model.

    from seedcoder.demo.posttrain import run_posttrain
    summary = run_posttrain("runs/demo", nproc=2)        # called by seedcoder.demo.pretrain after step 6

    python -m seedcoder.demo.posttrain --out runs/demo   # the same, alone (steps 1-3 of the demo must be done)

Everything is made offline and deterministically, and lands under --out (runs/demo):

7. sft_synth/: instruction synthesis (configs/curate_sft_demo.toml: seeds, styled instructions, sandbox
          self-correction, judge and difficulty filters, chats) against `seedcoder serve` with the pretrained model;
          a tiny base model cannot follow the answer formats, so most items are dropped (off_format), which the
          report (sft_synth/report/report.md) shows; these chats are not trained on.
   sft/:  `stdlib_conversations` (small documented functions of this interpreter's standard library; user: the
          signature and the docstring's first paragraph; assistant: the function in a ```python fence) +
          `toy_conversations` (the reference solutions of the toy problems below, PHRASINGS phrasings, each
          TOY_REPEATS times) -> sft/chats.jsonl -> `build_sft_dataset` (the demo's tokenizer; Seed-Coder's chat
          template without a system turn, SYSTEM_PROMPT, as the prompts of steps 8-9) -> sft/data ->
          `torchrun -m seedcoder.train sft` (configs/sft_tiny_demo.toml, SFT_STEPS steps at SFT_LR; 2 CPU ranks
          as the demo's pretraining) from runs/demo/checkpoints -> sft/checkpoints.
8. dpo/:  `toy_problems` (tiny functions with assert tests) -> dpo/problems.jsonl ({"id", "prompt", "tests"}); the
          SFT model (seedcoder.generate.Engine) samples DPO_K chat completions per problem, each judged in the
          sandbox (seedcoder.posttrain.dpo.mine_pairs) -> dpo/pairs.jsonl -> DPO_STEPS DPO steps -> dpo/checkpoints,
          dpo/metrics.jsonl. No pair mined -> said plainly, no DPO, RL starts from the SFT model.
9. rl/:   GRPO (seedcoder.posttrain.grpo) from the DPO (else SFT) model on the same problems, reward = unit tests
          in the sandbox + 0.1 x format -> rl/checkpoints, rl/metrics.jsonl (reward per step).
10. eval/: HumanEval, all 164 problems, greedy, through `seedcoder eval humaneval --checkpoint rl/checkpoints`
          (the embedded engine) -> eval/humaneval/results.json.

Each stage skips itself when its output is complete (a rerun continues an interrupted one) and prints one line
per step. DPO and RL checkpoints get the tokenizer copied beside them (tokenizer.json in their checkpoints/
folder), so every stage, and `seedcoder eval`, loads the previous stage's checkpoint and finds its tokenizer.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import torch

from seedcoder.chat_template import tokenize_chat
from seedcoder.checkpoint import latest_checkpoint, load_model, load_tokenizer_for
from seedcoder.curate.pipeline import run_pipeline
from seedcoder.demo.runs import launch_command, loss_fall
from seedcoder.evaluation.cli import add_eval_commands
from seedcoder.fileio import atomic_write_text
from seedcoder.generate import Engine
from seedcoder.metrics import read_jsonl
from seedcoder.posttrain.dpo import dpo_train, mine_pairs, read_pairs
from seedcoder.posttrain.grpo import GRPOConfig, grpo_train
from seedcoder.posttrain.rewards import make_unit_test_reward_fn
from seedcoder.posttrain.run_config import read_problems
from seedcoder.posttrain.sft import build_sft_dataset
from seedcoder.sampling import SamplingParams
from seedcoder.tokenizer import TOKENIZER_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SFT_CONFIG = os.path.join(ROOT, "configs", "sft_tiny_demo.toml")
SFT_SYNTH_CONFIG = os.path.join(ROOT, "configs", "curate_sft_demo.toml")
SFT_STEPS = 60
SFT_LR = 2e-3  # a short run on a tiny model: far above the paper's 2e-5 (configs/sft_tiny_demo.toml)
SFT_STDLIB_FUNCTIONS = 40
PHRASINGS = 4  # phrasings of each toy problem in the SFT data
TOY_REPEATS = 4  # each phrasing this many times: the tiny model has to learn them in a short run
DPO_K = 12
DPO_STEPS = 20
DPO_LR = 2e-5
DPO_BETA = 0.1
SAMPLE_TEMPERATURE = 0.7  # mining and RL: at 1.0 the tiny model's samples are mostly noise
GEN_MAX_TOKENS = 40  # a toy solution in its fence is about 25 tokens
RL_STEPS = 10
RL_PROMPTS_PER_STEP = 4
RL_GROUP_SIZE = 8
RL_LR = 1e-5
SYSTEM_PROMPT = None  # no system turn: the default one is ~100 tokens, which the tiny model reads past the task
EVAL_MAX_TOKENS = 128  # `seedcoder eval` defaults to 512; the demo keeps its HumanEval run short
STDLIB_SKIP = ("site-packages", "dist-packages", "test", "tests", "idlelib", "idle_test", "lib2to3", "__pycache__")


# ------------------------------------------------------------------------------------------ data
def _toy(name: str, args: str, what: str, body: str, wrong: str, calls: Sequence[tuple[str, Any]]) -> dict:
    return {
        "id": name,
        "prompt": f"Write a Python function {name}({args}) that returns {what}.",
        "tests": "".join(f"assert {name}({call}) == {expected!r}\n" for call, expected in calls),
        "solution": f"def {name}({args}):\n    return {body}\n",
        "wrong": f"def {name}({args}):\n    return {wrong}\n",
        "what": what,
        "signature": f"{name}({args})",
    }


def toy_problems() -> list[dict]:
    """The demo's verifiable problems: {"id", "prompt", "tests"} plus "solution" (passes the tests), "wrong" (a
    plausible wrong answer that fails them), "what" and "signature" (for rephrasing). Fixed and ordered."""
    problems = []
    for k in (2, 3, 5):
        xs = (0, 4, -3, 10)
        problems.append(_toy(f"add_{k}", "x", f"x + {k}", f"x + {k}", f"x + {k + 1}", [(str(x), x + k) for x in xs]))
        problems.append(_toy(f"sub_{k}", "x", f"x - {k}", f"x - {k}", f"{k} - x", [(str(x), x - k) for x in xs]))
        problems.append(_toy(f"mul_{k}", "x", f"x * {k}", f"x * {k}", f"x + {k}", [(str(x), x * k) for x in xs]))
    problems += [
        _toy("square", "x", "x * x", "x * x", "x * 2", [("0", 0), ("3", 9), ("-4", 16)]),
        _toy("negate", "x", "-x", "-x", "x", [("0", 0), ("5", -5), ("-2", 2)]),
        _toy("is_even", "n", "True when n is even", "n % 2 == 0", "n % 2 == 1",
             [("0", True), ("3", False), ("8", True)]),
        _toy("max_of_two", "a, b", "the larger of a and b", "max(a, b)", "min(a, b)",
             [("1, 2", 2), ("5, -1", 5), ("3, 3", 3)]),
        _toy("min_of_two", "a, b", "the smaller of a and b", "min(a, b)", "max(a, b)",
             [("1, 2", 1), ("5, -1", -1), ("3, 3", 3)]),
        _toy("first_item", "items", "the first element of the list items", "items[0]", "items[-1]",
             [("[1, 2, 3]", 1), ("['a']", "a"), ("[7, 8]", 7)]),
        _toy("last_item", "items", "the last element of the list items", "items[-1]", "items[0]",
             [("[1, 2, 3]", 3), ("['a']", "a"), ("[7, 8]", 8)]),
        _toy("reverse_text", "s", "the string s reversed", "s[::-1]", "s",
             [("'abc'", "cba"), ("''", ""), ("'ab'", "ba")]),
        _toy("sum_list", "items", "the sum of the numbers in items", "sum(items)", "len(items)",
             [("[1, 2, 3]", 6), ("[]", 0), ("[5]", 5)]),
        _toy("count_items", "items", "the number of elements in items", "len(items)", "sum(items)",
             [("[1, 2, 3]", 3), ("[]", 0), ("[5]", 1)]),
    ]
    return problems


def problem_record(problem: dict) -> dict:
    """The JSONL record of a problem: {"id", "prompt", "tests"} only (what seedcoder.posttrain.run_config.read_problems reads)."""
    return {"id": problem["id"], "prompt": problem["prompt"], "tests": problem["tests"]}


def chat_prompt(problem: dict) -> list[dict]:
    """The problem as a chat: one user turn."""
    return [{"role": "user", "content": problem["prompt"]}]


def prompt_ids(problem: dict, tokenizer: Any) -> list[int]:
    """The problem's prompt tokens: Seed-Coder's chat template with the assistant generation prompt and no system
    turn (SYSTEM_PROMPT; the SFT data is rendered the same way)."""
    return list(tokenize_chat(chat_prompt(problem), tokenizer, system_prompt=SYSTEM_PROMPT).input_ids)


def fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def toy_conversations(problems: Sequence[dict] | None = None, phrasings: int = PHRASINGS) -> list[dict]:
    """SFT rows teaching the toy problems: each problem's reference solution in `phrasings` phrasings of its request
    (the first is the problem's own prompt)."""
    if isinstance(phrasings, bool) or not isinstance(phrasings, int) or not 1 <= phrasings <= 4:
        raise ValueError(f"phrasings: must be an integer from 1 to 4, got {phrasings!r}")
    rows = []
    for p in toy_problems() if problems is None else problems:
        asks = [p["prompt"], f"Implement {p['signature']} in Python: it should return {p['what']}.",
                f"Please write {p['signature']}, returning {p['what']}.",
                f"I need a function {p['signature']} that gives {p['what']}. Write it in Python."]
        for ask in asks[:phrasings]:
            rows.append({"messages": [{"role": "user", "content": ask},
                                      {"role": "assistant", "content": fenced(p["solution"])}]})
    return rows


def _stdlib_files(stdlib: str) -> list[str]:
    files = []
    for directory, subdirs, names in os.walk(stdlib):
        subdirs[:] = sorted(d for d in subdirs if d not in STDLIB_SKIP and not d.startswith("."))
        files += [os.path.join(directory, n) for n in sorted(names) if n.endswith(".py") and not n.startswith("test_")]
    return sorted(files)


def stdlib_conversations(limit: int = SFT_STDLIB_FUNCTIONS, stdlib: str | None = None, *, max_lines: int = 12,
                         max_chars: int = 600) -> list[dict]:
    """SFT rows from the standard library (`stdlib`, default this interpreter's): every top-level function with a
    docstring, no decorators, at most max_lines lines and max_chars characters, files in sorted order, the first
    `limit`. User: its signature and the docstring's first paragraph; assistant: its source in a ```python fence."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit: must be a positive integer, got {limit!r}")
    stdlib = stdlib or sysconfig.get_paths()["stdlib"]
    if not os.path.isdir(stdlib):
        raise ValueError(f"stdlib: {stdlib} is not a directory")
    rows: list[dict] = []
    for path in _stdlib_files(stdlib):
        try:
            with open(path, encoding="utf-8") as file:
                source = file.read()
            tree = ast.parse(source)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.decorator_list or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node)
            code = ast.get_source_segment(source, node)
            if not doc or not code or code.count("\n") + 1 > max_lines or len(code) > max_chars or "\t" in code:
                continue
            summary = " ".join(doc.split("\n\n")[0].split())
            signature = f"{node.name}({ast.unparse(node.args)})"
            module = os.path.relpath(path, stdlib)[:-3].replace(os.sep, ".")
            rows.append({"messages": [
                {"role": "user", "content": f"Write a Python function {signature} (from {module}): {summary}"},
                {"role": "assistant", "content": fenced(code)}]})
            if len(rows) == limit:
                return rows
    return rows


def write_jsonl(path: str, rows: Sequence[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ------------------------------------------------------------------------------------------ helpers
def _say(message: str) -> None:
    print(message, flush=True)


def _step_of(checkpoint: str | None) -> int:
    """The step of a step-NNNNNNNN checkpoint folder (0 for None)."""
    if checkpoint is None:
        return 0
    name = os.path.basename(os.path.normpath(checkpoint))
    return int(name.split("-")[-1]) if name.startswith("step-") else 0


def _latest(directory: str) -> str | None:
    return latest_checkpoint(directory) if os.path.isdir(directory) else None


class _Follow:
    """Prints each JSON line appended to `path` while a loop runs (the loops log to a file, not to stdout)."""

    def __init__(self, path: str, format_line: Callable[[dict], str]):
        self.path, self.format_line, self.offset = path, format_line, os.path.getsize(path) if os.path.exists(path) else 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as file:
            file.seek(self.offset)
            while True:
                line = file.readline()
                if not line.endswith("\n"):
                    break
                self.offset += len(line.encode("utf-8"))
                try:
                    _say(self.format_line(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    pass

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self._poll()

    def __enter__(self) -> _Follow:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self._poll()


def _read_records(path: str) -> list[dict]:
    return read_jsonl(path) if os.path.exists(path) else []


def _load(checkpoint: str, tokenizer_path: str):
    model, directory = load_model(checkpoint, device="cuda" if torch.cuda.is_available() else "cpu", dtype=torch.float32)
    return model, load_tokenizer_for(directory, tokenizer_path)


def _engine(model, tokenizer, max_batch: int):
    return Engine(copy.deepcopy(model).eval(), tokenizer, max_batch=max_batch, max_seq_len=512, seed=0)


# ------------------------------------------------------------------------------------------ 7. SFT
def run_sft(out: str, nproc: int, *, steps: int = SFT_STEPS, lr: float = SFT_LR) -> dict:
    """Step 7: chats -> SFT shards -> `torchrun -m seedcoder.train sft` from out/checkpoints. Returns its summary."""
    sft_dir = os.path.join(out, "sft")
    os.makedirs(sft_dir, exist_ok=True)
    chats = os.path.join(sft_dir, "chats.jsonl")
    if not os.path.exists(chats):
        rows = stdlib_conversations() + toy_conversations() * TOY_REPEATS
        write_jsonl(chats, rows)
    report = build_sft_dataset([chats], os.path.join(sft_dir, "data"), tokenizer=os.path.join(out, "data", TOKENIZER_FILE),
                               max_tokens=256, system_prompt=SYSTEM_PROMPT)
    _say(f"[sft] dataset: {json.dumps({k: report[k] for k in ('rows', 'documents', 'tokens', 'loss_tokens', 'bad_rows')})}")
    checkpoints = os.path.join(sft_dir, "checkpoints")
    done = _step_of(_latest(checkpoints))
    if done >= steps:
        _say(f"[sft] complete ({_latest(checkpoints)}): skipped")
    else:
        command = launch_command(nproc, "sft") + [
            "--config", SFT_CONFIG, f"--run.out_dir={sft_dir}", f"--data.path={os.path.join(sft_dir, 'data')}",
            f"--checkpoint.init_from={os.path.join(out, 'checkpoints')}", f"--train.steps={steps}", f"--optimizer.lr={lr}",
            f"--train.micro_batch_size={max(1, 16 // nproc)}", "--checkpoint.interval=20",
        ] + (["--resume"] if done else [])
        _say("$ " + " ".join(command))
        environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        result = subprocess.run(command, cwd=ROOT, env=environment)
        if result.returncode != 0:
            raise SystemExit(f"[demo] SFT failed (exit {result.returncode})")
    first, last, window = loss_fall(_read_records(os.path.join(sft_dir, "metrics.jsonl")))
    return {"sft_steps": steps, "sft_loss_first_steps": first, "sft_loss_last_steps": last, "sft_window": window,
            "sft_checkpoint": _latest(checkpoints)}


# ------------------------------------------------------------------------------------------ 8. DPO
def run_dpo(out: str, *, steps: int = DPO_STEPS, k: int = DPO_K) -> dict:
    """Step 8: toy problems -> pairs mined from the SFT model in the sandbox -> DPO. Returns its summary."""
    dpo_dir = os.path.join(out, "dpo")
    checkpoints = os.path.join(dpo_dir, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    tokenizer_path = os.path.join(out, "sft", "data", TOKENIZER_FILE)
    shutil.copyfile(tokenizer_path, os.path.join(checkpoints, TOKENIZER_FILE))  # found beside the checkpoints
    problems_path = os.path.join(dpo_dir, "problems.jsonl")
    if not os.path.exists(problems_path):
        write_jsonl(problems_path, [problem_record(p) for p in toy_problems()])
    problems = read_problems(problems_path)
    pairs_path = os.path.join(dpo_dir, "pairs.jsonl")
    metrics = os.path.join(dpo_dir, "metrics.jsonl")
    summary: dict[str, Any] = {"dpo_problems": len(problems)}
    if _step_of(_latest(checkpoints)) >= steps and os.path.exists(pairs_path):
        _say(f"[dpo] complete ({_latest(checkpoints)}): skipped")
        pairs = read_pairs(pairs_path)
    else:
        model, tokenizer = _load(os.path.join(out, "sft", "checkpoints"), tokenizer_path)
        if os.path.exists(pairs_path):
            pairs = read_pairs(pairs_path)
            _say(f"[dpo] {len(pairs)} pairs from {pairs_path}")
        else:
            started = time.perf_counter()
            params = SamplingParams(n=k, temperature=SAMPLE_TEMPERATURE, top_p=1.0, max_tokens=GEN_MAX_TOKENS, seed=0)
            chats = [{**p, "prompt": prompt_ids(p, tokenizer)} for p in problems]
            pairs = mine_pairs(_engine(model, tokenizer, 64), chats, pairs_path, k=k, params=params, max_pairs_per_prompt=2)
            _say(f"[dpo] mined {len(pairs)} (passing, failing) pairs from {k} samples of each of {len(problems)} problems "
                 f"in {time.perf_counter() - started:.0f} s -> {pairs_path}")
        if pairs:
            with _Follow(metrics, lambda r: f"[dpo] step {r['step']:3d}  loss {r['loss']:.4f}  reward accuracy "
                                            f"{r['reward_accuracy']:.2f}  margin {r['reward_margin']:+.4f}  "
                                            f"{r['seconds']:.1f} s"):
                dpo_train(model, pairs, steps=steps, batch_size=8, beta=DPO_BETA, lr=DPO_LR, log_path=metrics,
                          checkpoint_dir=checkpoints, checkpoint_every=10)
    summary["dpo_mined_pairs"] = len(pairs)
    if not pairs:
        _say("[dpo] no (passing, failing) pair could be mined: every problem's samples all failed (or all passed); "
             "no DPO steps, RL starts from the SFT model")
        return summary
    records = _read_records(metrics)[-steps:]
    window = max(1, len(records) // 5)
    summary.update({
        "dpo_steps": steps, "dpo_loss_first": records[0]["loss"], "dpo_loss_last": records[-1]["loss"],
        "dpo_reward_accuracy_last_steps": sum(r["reward_accuracy"] for r in records[-window:]) / window,
        "dpo_reward_margin_last_steps": sum(r["reward_margin"] for r in records[-window:]) / window,
        "dpo_checkpoint": _latest(checkpoints),
    })
    return summary


# ------------------------------------------------------------------------------------------ 9. RL
def run_rl(out: str, init_from: str, *, steps: int = RL_STEPS) -> dict:
    """Step 9: GRPO from `init_from` (a checkpoints/ folder) on the toy problems. Returns its summary."""
    rl_dir = os.path.join(out, "rl")
    checkpoints = os.path.join(rl_dir, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    tokenizer_path = os.path.join(out, "sft", "data", TOKENIZER_FILE)
    shutil.copyfile(tokenizer_path, os.path.join(checkpoints, TOKENIZER_FILE))
    metrics = os.path.join(rl_dir, "metrics.jsonl")
    if _step_of(_latest(checkpoints)) >= steps:
        _say(f"[rl] complete ({_latest(checkpoints)}): skipped")
    else:
        model, tokenizer = _load(init_from, tokenizer_path)
        problems = [{**p, "prompt": prompt_ids(p, tokenizer)} for p in read_problems(os.path.join(out, "dpo", "problems.jsonl"))]
        config = GRPOConfig(steps=steps, prompts_per_step=RL_PROMPTS_PER_STEP, group_size=RL_GROUP_SIZE,
                            max_tokens=GEN_MAX_TOKENS, temperature=SAMPLE_TEMPERATURE, lr=RL_LR, filter_overlong=False, seed=0)
        with _Follow(metrics, lambda r: f"[rl] step {r['step']:3d}  reward {r['reward_mean']:.3f}  pass rate "
                                        f"{r['pass_rate']:.2f}  samples trained {r['samples_trained']}  "
                                        + (f"loss {r['loss']:+.4f}  " if "loss" in r else "(no informative group)  ")
                                        + f"{r['seconds']:.1f} s"):
            grpo_train(model, tokenizer, problems, make_unit_test_reward_fn(format_weight=0.1), config, log_path=metrics,
                       engine=_engine(model, tokenizer, RL_PROMPTS_PER_STEP * RL_GROUP_SIZE), checkpoint_dir=checkpoints)
    records = _read_records(metrics)[-steps:]
    return {"rl_init_from": init_from, "rl_steps": len(records), "rl_reward_per_step": [r["reward_mean"] for r in records],
            "rl_pass_rate_per_step": [r["pass_rate"] for r in records], "rl_checkpoint": _latest(checkpoints)}


# ------------------------------------------------------------------------------------------ 10. evaluation
def _evaluated_checkpoint(results: str) -> str | None:
    try:
        with open(results, encoding="utf-8") as file:
            return json.load(file)["generator"].get("checkpoint")
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def run_eval(out: str, checkpoint: str, *, max_tokens: int = EVAL_MAX_TOKENS) -> dict:
    """Step 10: HumanEval (164, greedy) on `checkpoint` (a step-N folder) through the `seedcoder eval humaneval`
    code path; skipped when eval/humaneval/results.json already holds that checkpoint's results."""
    eval_dir = os.path.join(out, "eval", "humaneval")
    results = os.path.join(eval_dir, "results.json")
    if _evaluated_checkpoint(results) == checkpoint:
        _say(f"[eval] complete ({results}): skipped")
    else:
        if os.path.isdir(eval_dir):  # another checkpoint's results (or an interrupted run): start over
            shutil.rmtree(eval_dir)
        parser = argparse.ArgumentParser(prog="seedcoder")
        add_eval_commands(parser.add_subparsers(dest="group"))
        argv = ["eval", "humaneval", "--checkpoint", checkpoint, "--out", eval_dir, "--max-tokens", str(max_tokens),
                "--no-progress"]
        _say("$ seedcoder " + " ".join(argv))
        args = parser.parse_args(argv)
        if args.handler(args) != 0:
            raise SystemExit("[demo] HumanEval evaluation failed")
    with open(results, encoding="utf-8") as file:
        report = json.load(file)
    passed = sum(1 for r in report["per_problem"] if r["correct"])
    return {"humaneval_pass@1": report["pass_at_k"]["pass@1"], "humaneval_problems": report["problems"],
            "humaneval_solved": passed, "humaneval_results": results}


# ------------------------------------------------------------------------------------------ all four
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_sft_synthesis(out: str, timeout_s: float = 180.0) -> dict:
    """Instruction synthesis (configs/curate_sft_demo.toml, issue [14]) against `seedcoder serve` with the pretrained
    demo model -> sft_synth/ (its report: sft_synth/report/report.md). A tiny base model cannot follow the answer
    formats, so expect most items dropped as off_format: the point is the pipeline and its report. Its chats are
    not trained on."""
    synth_out = os.path.join(out, "sft_synth")
    os.makedirs(synth_out, exist_ok=True)
    port = _free_port()
    command = [sys.executable, "-m", "seedcoder.cli", "serve", "--checkpoint", os.path.join(out, "checkpoints"),
               "--port", str(port), "--threads", "1", "--max-tokens", "256"]
    _say("$ seedcoder " + " ".join(command[3:]))
    with open(os.path.join(synth_out, "serve.log"), "ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"seedcoder serve did not start (see {synth_out}/serve.log)") from None
                time.sleep(0.5)
        generator = {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "timeout_s": 300,
                     "concurrency": 4, "cache_dir": os.path.join(synth_out, "_generator_cache")}
        results = run_pipeline(SFT_SYNTH_CONFIG, overrides={
            "out": synth_out, "progress": False, **{f"{step}.generator": generator for step in (
                "sft_synthesize", "sft_self_correct", "sft_filter")}})
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    dropped: dict[str, int] = {}
    for name in ("sft_seeds", "sft_synthesize", "sft_self_correct", "sft_filter", "sft_chats"):
        for reason, count in results[name]["totals"]["drop_reasons"].items():
            dropped[f"{name}: {reason}"] = dropped.get(f"{name}: {reason}", 0) + count
    summary = {"sft_synth_seeds": results["sft_seeds"]["totals"]["kept_rows"],
               "sft_synth_chats": results["sft_chats"]["totals"]["kept_rows"], "sft_synth_dropped": dropped,
               "sft_synth_report": os.path.join(synth_out, "report", "report.md")}
    _say(f"[sft-synth] {summary['sft_synth_seeds']} seeds -> {summary['sft_synth_chats']} chats; dropped: "
         + (", ".join(f"{key} {value}" for key, value in dropped.items() if "not_selected" not in key) or "none")
         + f"; report: {summary['sft_synth_report']}")
    return summary


def run_posttrain(out: str, nproc: int, banner: Callable[[str], None] | None = None) -> dict:
    """Steps 7-10 on the demo run in `out` (its checkpoints/ and data/tokenizer.json must exist). Returns the
    summary fields (also written to out/posttrain_summary.json)."""
    banner = banner or (lambda text: _say(f"\n=== {text} " + "=" * max(0, 100 - len(text))))
    out = os.path.abspath(out)
    if _latest(os.path.join(out, "checkpoints")) is None or not os.path.exists(os.path.join(out, "data", TOKENIZER_FILE)):
        raise ValueError(f"out: {out} holds no pretrained demo model (checkpoints/) and tokenizer (data/tokenizer.json)")
    summary: dict[str, Any] = {}
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], dict]) -> None:
        started = time.perf_counter()
        summary.update(fn())
        timings[name] = round(time.perf_counter() - started, 1)

    banner("7/10 SFT data synthesis (seeds -> styled instructions -> sandbox self-correction -> filters) against "
           "`seedcoder serve` with the pretrained model")
    timed("sft_synth", lambda: run_sft_synthesis(out))
    banner(f"7/10 SFT: standard-library functions + the toy problems' solutions, {SFT_STEPS} steps on {nproc} processes")
    timed("sft", lambda: run_sft(out, nproc))
    _say(f"[sft] loss {summary['sft_loss_first_steps']:.3f} -> {summary['sft_loss_last_steps']:.3f} "
         f"(mean of the first / last {summary['sft_window']} steps)")
    banner(f"8/10 DPO: pairs mined from the SFT model ({DPO_K} samples per toy problem, judged in the sandbox)")
    timed("dpo", lambda: run_dpo(out))
    if summary.get("dpo_checkpoint"):
        _say(f"[dpo] {summary['dpo_mined_pairs']} pairs; reward accuracy {summary['dpo_reward_accuracy_last_steps']:.2f}, "
             f"margin {summary['dpo_reward_margin_last_steps']:+.4f} (mean of the last steps)")
    start = os.path.join(out, "dpo", "checkpoints") if summary.get("dpo_checkpoint") else os.path.join(out, "sft", "checkpoints")
    banner(f"9/10 RL (GRPO): {RL_STEPS} steps from {os.path.relpath(start, out)}, reward = unit tests + 0.1 x format")
    timed("rl", lambda: run_rl(out, start))
    _say("[rl] reward per step: " + ", ".join(f"{r:.3f}" for r in summary["rl_reward_per_step"]))
    banner("10/10 evaluation: HumanEval (164 problems, greedy) on the RL model")
    timed("eval", lambda: run_eval(out, summary["rl_checkpoint"]))
    _say(f"[eval] HumanEval pass@1 {summary['humaneval_pass@1']:.4f} ({summary['humaneval_solved']} of "
         f"{summary['humaneval_problems']}); results: {summary['humaneval_results']}")
    summary["posttrain_wall_s"] = timings
    atomic_write_text(os.path.join(out, "posttrain_summary.json"), json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seedcoder.demo.posttrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "demo"), help="the demo's output directory")
    parser.add_argument("--nproc", type=int, default=2, help="SFT training processes (default 2)")
    args = parser.parse_args(argv)
    if args.nproc < 1:
        parser.error("--nproc: must be >= 1")
    summary = run_posttrain(args.out, args.nproc)
    return 0 if summary["sft_loss_last_steps"] < summary["sft_loss_first_steps"] else 1


if __name__ == "__main__":
    sys.exit(main())

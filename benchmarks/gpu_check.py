"""`make gpu-check`: one short call on a GPU machine turned into results (`make gpu-bench`: the long version).

    python3 -m benchmarks.gpu_check RESULTS_DIR [--full] [--phases install tests kernels train]

Runs with the GPU box's own python3 (torch, triton, numpy and pytest, no network, no venv), from the repository
root, in phases that each get a time budget (a phase past its budget is stopped and reported as TIMEOUT; the
phases after it still run):

  install   .whl/*.whl (small optional peers, e.g. liger-kernel) into WHEEL_SITE, which later phases put on
            PYTHONPATH; then `pip install --no-deps --no-build-isolation -e .`, building the CUDA extension for
            the card present only (TORCH_CUDA_ARCH_LIST from its compute capability).
  tests     pytest on the GPU: bf16 numerics of each kernel against its float64 reference (flash attention's
            tl.dot in bf16, which the CPU interpreter cannot check), then the `gpu`-marked tests of the kernels
            and the model; --full: every test of those files.
  kernels   python -m benchmarks.kernels --quick (--full: every case and peer, autotuned).
  train     python -m benchmarks.train: the 1B preset at 8K tokens, 1 warm-up + 2 timed steps, MFU (--full: the
            default steps and every implementation); then python -m benchmarks.curate_scorer: the curation
            scorer's files/s and tokens/s on this card (needs the tokenizers wheel in .whl/: `make gpu-wheels`).

It writes at most 8 files, flat, into RESULTS_DIR: gpu-check.md (goes into benchmarks/RESULTS.md unchanged: card,
date, driver / CUDA, torch and triton versions, the phase table, the kernel and training tables), gpu-check.log
(this script's log: commands, budgets, times), install.log, tests.log, bench.log (the benchmarks' output),
kernels.json, train.json and autotune.json (the autotuned kernels' choices: `python -m
seedcoder.kernels.autotune_table install RESULTS/autotune.json` makes them the next runs' table). Exit status 0
when every phase passed, 1 when one failed or ran out of time.

Without a CUDA GPU it says so, checks its own plumbing (arguments, the results folder is writable, the test
selection collects as it would on the box, i.e. without the packages the box lacks, the benchmark cases and the
training arguments build, the markdown assembles from empty results) and exits 2 (1 if the plumbing is broken),
having measured and written nothing. The test suite runs that dry run, so this script cannot rot between GPU runs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.abc
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEEL_DIR = ".whl"  # small wheels that travel with the call (an ignored folder named in its carry)
WHEEL_SITE = "/tmp/seedcoder-site"  # where they are installed (pip --target), put on PYTHONPATH
MAX_FILES = 8  # what comes back from a GPU call: at most 8 files
BOX_PACKAGES = ("torch", "triton", "numpy", "pytest", "pip", "setuptools")  # what the GPU box's python3 has

# The GPU tests: the kernels' and the model's files; in the quick set their `gpu`-marked tests plus, by node id,
# bf16 numerics of every kernel against float64 (flash attention: the 8B shape, causal, GQA 4:1, D 128, and a
# non-causal D 64 case; dtype0 is bfloat16 on CUDA, which the dry run checks).
TEST_FILES = ["tests/test_flash_attention.py", "tests/test_flash_attention_hopper.py", "tests/test_fused_linear_cross_entropy.py",
              "tests/test_cross_entropy.py", "tests/test_rms_norm.py", "tests/test_rotary.py", "tests/test_model.py"]
BF16_NUMERICS = [
    "tests/test_flash_attention.py::test_packed_documents_match_reference[True-32-8-128-dtype0]",
    "tests/test_flash_attention.py::test_packed_documents_match_reference[False-4-1-64-dtype0]",
    "tests/test_flash_attention_hopper.py::test_packed_documents_match_reference[True-32-8-128-dtype0-autotuned]",
    "tests/test_fused_linear_cross_entropy.py::test_matches_reference[all-mean-bfloat16]",
    "tests/test_fused_linear_cross_entropy.py::test_large_vocab[3-155136-2-sum-smoothing-bfloat16]",
    "tests/test_cross_entropy.py::test_matches_reference_vocab_155136[mean-plain-bfloat16]",
    "tests/test_cross_entropy.py::test_matches_reference_vocab_155136[none-all-bfloat16]",
    "tests/test_rms_norm.py::test_forward_and_grads_match_float64[7x4097-torch.bfloat16-residual]",
    "tests/test_rotary.py::test_forward_backward_vs_fp64[500000.0-B1_S113_Hq8_Hkv4_D128-torch.bfloat16]",
]
PYTEST = ["-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "--durations=10"]
TRAIN_ARGS = ["--preset", "1b", "--seq-len", "8192", "--batch", "1", "--warmup", "1", "--steps", "2",
              "--impl", "seedcoder", "seedcoder (packed docs)"]
# Seconds per phase: quick (gpu-check: 440 s, under 8 minutes in all) and --full (gpu-bench: "install tests" and
# "kernels train" each fit one 10-minute call). Not yet timed on a GPU: tune them from the first run's phase table.
BUDGETS = {"install": (100, 150), "tests": (170, 420), "kernels": (110, 420), "train": (90, 180)}
PHASES = tuple(BUDGETS)
RESULT_FILES = ("gpu-check.md", "gpu-check.log", "install.log", "tests.log", "bench.log", "kernels.json", "train.json",
                "autotune.json")


# ------------------------------------------------------------------------------------------ phases
@dataclass
class Phase:
    name: str
    budget_s: float
    status: str = "not run"  # PASS, FAIL, TIMEOUT, or not run
    seconds: float = 0.0
    detail: str = ""


class Log:
    """gpu-check.log, and the same lines on stdout."""

    def __init__(self, path: str | None):
        self.path = path

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def run_command(cmd: list[str], *, log_path: str, deadline: float, env: dict | None = None) -> tuple[int | None, float]:
    """Run cmd (its output appended to log_path) until it exits or the deadline passes; then its whole process
    group is stopped (TERM, then KILL). Returns (exit status or None on timeout, seconds)."""
    start = time.monotonic()
    with open(log_path, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):  # KILL too: what TERM left of the group (e.g. workers)
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            rc = None
        out.write(f"[exit {rc if rc is not None else 'TIMEOUT'} after {time.monotonic() - start:.0f} s]\n")
    return rc, time.monotonic() - start


def run_phase(phase: Phase, commands: list[list[str]], log: Log, log_path: str, env: dict) -> None:
    """The phase's commands in order within its one budget: a failing command fails the phase (the next still
    runs), running out of time stops it (TIMEOUT)."""
    deadline = time.monotonic() + phase.budget_s
    phase.status = "PASS"
    for cmd in commands:
        log(f"[{phase.name}] $ {' '.join(cmd)}")
        rc, seconds = run_command(cmd, log_path=log_path, deadline=deadline, env=env)
        phase.seconds += seconds
        if rc == 0:
            continue
        phase.status = "TIMEOUT" if rc is None else "FAIL"
        log(f"[{phase.name}] {'out of its ' + str(phase.budget_s) + ' s budget' if rc is None else f'exit {rc}'}; "
            f"the end of {os.path.basename(log_path)}:")
        log(tail(log_path, 1500))
        if rc is None:
            break
    log(f"[{phase.name}] {phase.status} in {phase.seconds:.0f} s")


def phase_detail(name: str, results: str, work: str, env: dict) -> str:
    """One line for the phase table: the build's target, the pytest counts, the targets' verdicts, the MFU."""
    if name == "install":
        return f"TORCH_CUDA_ARCH_LIST={env['TORCH_CUDA_ARCH_LIST']}"
    if name == "tests":
        return pytest_summary(os.path.join(results, "tests.log"))
    payload = read(os.path.join(work, name, f"{name}.json"))
    if payload is None:
        return "no report written"
    report = json.loads(payload)
    if name == "kernels":
        statuses = [t["status"] for t in report["targets"]]
        return "targets: " + ", ".join(f"{statuses.count(s)} {s}" for s in ("PASS", "MISS", "N/A"))
    return "; ".join(f"{r['impl']}: " + (f"SKIP({r['skip']})" if r["skip"] else
                                          f"{r['tokens_per_s']:,.0f} tokens/s, MFU {r['mfu_pct'] or 0:.1f}%")
                     for r in report["rows"])


def tail(path: str, chars: int) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return text[-chars:]


def pytest_summary(log_path: str) -> str:
    """The 'N passed, M failed ...' parts of every pytest summary line in the log."""
    found = re.findall(r"^=* ?(\d+ (?:passed|failed|skipped|errors?|deselected|xfailed|xpassed).*?) in [\d.]+s",
                       tail(log_path, 200_000), flags=re.M)
    return "; ".join(found)


# ------------------------------------------------------------------------------------------ the GPU run
def gpu_environment() -> dict:
    """The header: card, driver / CUDA, versions, date. Reads device properties only (creates no CUDA context)."""
    import torch
    import triton

    from benchmarks.common import driver_version

    props = torch.cuda.get_device_properties(0)
    return {"card": props.name, "compute_capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count,
            "gpu_memory_gb": round(props.total_memory / 1e9, 1), "driver": driver_version(),
            "cuda": torch.version.cuda or "none", "torch": torch.__version__, "triton": triton.__version__,
            "python": platform.python_version(), "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown (no git checkout)"


def cuda_arch_list(capability: str) -> str:
    """TORCH_CUDA_ARCH_LIST for the card present only: "9.0a" on Hopper (setup.py's sm_90a), else e.g. "8.0"."""
    return capability + ("a" if capability == "9.0" else "")


def phase_commands(name: str, *, full: bool, work: str) -> list[list[str]]:
    py = sys.executable
    if name == "install":
        wheels = sorted(os.path.join(WHEEL_DIR, w) for w in os.listdir(os.path.join(REPO, WHEEL_DIR))
                        if w.endswith(".whl")) if os.path.isdir(os.path.join(REPO, WHEEL_DIR)) else []
        commands = [[py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade", "--target",
                     WHEEL_SITE, *wheels]] if wheels else []
        return commands + [[py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", "."]]
    if name == "tests":
        if full:
            return [[py, *PYTEST, *TEST_FILES]]
        return [[py, *PYTEST, *BF16_NUMERICS], [py, *PYTEST, "-m", "gpu", *TEST_FILES]]
    if name == "kernels":
        return [[py, "-m", "benchmarks.kernels", "--out", os.path.join(work, "kernels")] + ([] if full else ["--quick"])]
    if name == "train":
        args = ["--preset", "1b", "--seq-len", "8192"] if full else TRAIN_ARGS
        return [[py, "-m", "benchmarks.train", *args, "--out", os.path.join(work, "train")],
                [py, "-m", "benchmarks.curate_scorer", "--out", os.path.join(work, "scorer")]]  # scoring throughput
    raise ValueError(f"unknown phase {name!r} (phases: {', '.join(PHASES)})")


PHASE_LOGS = {"install": "install.log", "tests": "tests.log", "kernels": "bench.log", "train": "bench.log"}


def run_on_gpu(args, log: Log) -> int:
    env_info = gpu_environment()
    log(f"gpu_check: {env_info['card']} (sm {env_info['compute_capability']}), driver {env_info['driver']}, CUDA "
        f"{env_info['cuda']}, torch {env_info['torch']}, triton {env_info['triton']}, python {env_info['python']}")
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (WHEEL_SITE, REPO, env.get("PYTHONPATH", "")) if p)
    env["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list(env_info["compute_capability"])
    env["MAX_JOBS"] = str(os.cpu_count() or 4)
    env["PIP_BREAK_SYSTEM_PACKAGES"] = "1"  # the box's own python3, no venv: install into it on purpose
    env["PIP_ROOT_USER_ACTION"] = "ignore"
    phases = [Phase(name, BUDGETS[name][1 if args.full else 0]) for name in args.phases]
    work = tempfile.mkdtemp(prefix="gpu-check-")
    for phase in phases:
        log(f"[{phase.name}] budget {phase.budget_s} s")
        run_phase(phase, phase_commands(phase.name, full=args.full, work=work), log,
                  os.path.join(args.results, PHASE_LOGS[phase.name]), env)
        phase.detail = phase_detail(phase.name, args.results, work, env)
    for source, name in (("kernels/kernels.json", "kernels.json"), ("train/train.json", "train.json"),
                         ("kernels/autotune.json", "autotune.json")):  # autotune.json: `autotune_table install` it
        payload = read(os.path.join(work, source))
        if payload is not None:
            write_text(os.path.join(args.results, name), payload)
    sections = {stem: read(os.path.join(work, stem, f"{stem}.md")) for stem in ("kernels", "train")}
    sections["scorer"] = scorer_table(read(os.path.join(work, "scorer", "curate_scorer.json")))
    markdown = assemble_markdown(env_info, phases, sections, full=args.full)
    write_text(os.path.join(args.results, "gpu-check.md"), markdown)
    shutil.rmtree(work, ignore_errors=True)
    failed = [p.name for p in phases if p.status != "PASS"]
    log(f"gpu_check: {'all phases passed' if not failed else 'FAILED: ' + ', '.join(failed)}; results in {args.results}: "
        + ", ".join(sorted(os.listdir(args.results))))
    return 1 if failed else 0


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def write_text(path: str, text: str) -> None:
    from seedcoder.fileio import atomic_write_text

    atomic_write_text(path, text)


# ------------------------------------------------------------------------------------------ markdown
ENV_ROWS = [("card", "card"), ("compute_capability", "compute capability"), ("sm_count", "SMs"),
            ("gpu_memory_gb", "GPU memory (GB)"), ("driver", "driver"), ("cuda", "CUDA (torch)"), ("torch", "torch"),
            ("triton", "triton"), ("python", "python"), ("date_utc", "date"), ("commit", "commit")]


def demote(markdown: str, levels: int) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def section_body(markdown: str, first_line: str) -> str | None:
    """The part of a benchmark's markdown from the line starting with first_line on (its own title and
    environment table are left out: the section header has them)."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(first_line)), None)
    return None if start is None else "\n".join(lines[start:]).strip()


def scorer_table(payload: str | None) -> str | None:
    """benchmarks.curate_scorer's JSON as a markdown table (the curation scorer's throughput on this card)."""
    if payload is None:
        return None
    r = json.loads(payload)
    return "\n".join([
        "| scorer | context | files | tokens | files/s | tokens/s | input order files/s | encoding files/s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
        f"| {r['model']} ({r['parameters']:,} parameters), {r['device']} | {r['max_tokens']} | {r['files']} | "
        f"{r['tokens']:,} | {r['files_per_s']:.1f} | {r['tokens_per_s']:,.0f} | {r['unsorted_files_per_s']:.1f} | "
        f"{r['encode_files_per_s']:.1f} |"])


def assemble_markdown(env: dict, phases: list[Phase], sections: dict[str, str | None], *, full: bool) -> str:
    """gpu-check.md: a section of benchmarks/RESULTS.md. sections maps "kernels" / "train" / "scorer" to the markdown
    those benchmarks wrote (None: not run or no output)."""
    from benchmarks.report import FAKE_BANNER

    target = "make gpu-bench" if full else "make gpu-check"
    out = [f"### GPU check: {env.get('card', 'unknown card')}, {env.get('date_utc', 'unknown date')} (`{target}`)", "",
           "| | |", "|---|---|"]
    out += [f"| {name} | {env[key]} |" for key, name in ENV_ROWS if key in env]
    out += ["", "| phase | result | seconds | budget s | detail |", "|---|---|--:|--:|---|"]
    out += [f"| {p.name} | {p.status} | {p.seconds:.0f} | {p.budget_s:g} | {p.detail} |" for p in phases]
    for stem, title, first_line in (("kernels", "Kernels" + ("" if full else " (quick set)"), "## Results"),
                                    ("train", "Training step", "| impl |"),
                                    ("scorer", "Curation scorer throughput (benchmarks.curate_scorer)", "| scorer |")):
        source = sections.get(stem) or ""
        body = section_body(source, first_line)
        out += ["", f"#### {title}", ""]
        out += [FAKE_BANNER, ""] if FAKE_BANNER in source else []  # a test's injected timings stay marked as such
        out += [demote(body, 3) if body else "not measured (the phase did not run or wrote nothing)"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ dry run (no GPU)
def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def box_distributions() -> set[str]:
    """BOX_PACKAGES and everything they require (extras aside), as installed here; plus this project."""
    seen, todo = {"seedcoder"}, list(BOX_PACKAGES)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [re.match(r"[A-Za-z0-9._-]+", req).group(0) for req in dist.requires or [] if "extra ==" not in req]
    return seen


class BoxImportBlocker(importlib.abc.MetaPathFinder):
    """Makes the top-level modules of distributions installed here but not on the GPU box unimportable."""

    def __init__(self):
        allowed = box_distributions()
        self.blocked = {module for module, dists in metadata.packages_distributions().items()
                        if not any(canonical(d) in allowed for d in dists)}

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (the GPU box does not have it)", name=name)
        return None


class _Collected:
    """pytest plugin: the collected node ids and the collection errors."""

    def __init__(self):
        self.items: list = []
        self.errors: list[str] = []

    def pytest_collection_finish(self, session):
        self.items = list(session.items)

    def pytest_collectreport(self, report):
        if report.failed:
            self.errors.append(f"{report.nodeid}: {str(report.longrepr).strip().splitlines()[-1]}")


def check_test_selection() -> list[str]:
    """Collect TEST_FILES and BF16_NUMERICS as the GPU box would (CUDA 'available', so its parametrisations; the
    packages it lacks unimportable): every file has `gpu` tests, every node id exists, nothing fails to collect."""
    import pytest
    import torch

    missing = [p.split("::")[0] for p in TEST_FILES + BF16_NUMERICS if not os.path.exists(os.path.join(REPO, p.split("::")[0]))]
    if missing:
        return [f"test file missing: {p}" for p in sorted(set(missing))]
    plugin = _Collected()
    available, torch.cuda.is_available = torch.cuda.is_available, lambda: True
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # plugins installed here (xdist, ...) are not on the box
    try:
        rc = pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider", "--rootdir", REPO,
                          *(os.path.join(REPO, p) for p in TEST_FILES)], plugins=[plugin])
    finally:
        torch.cuda.is_available = available
    problems = [f"collection: {e}" for e in plugin.errors]
    if rc != 0 and not problems:
        problems.append(f"pytest --collect-only exited {rc}")
    for path in TEST_FILES:
        if not any(i.nodeid.startswith(path + "::") and i.get_closest_marker("gpu") for i in plugin.items):
            problems.append(f"{path}: no `gpu`-marked test collected")
    by_id = {item.nodeid: item for item in plugin.items}
    for node in BF16_NUMERICS:
        item = by_id.get(node)
        if item is None:
            problems.append(f"{node}: not collected (renamed or reparametrised? update BF16_NUMERICS)")
        elif getattr(item, "callspec", None) is None or torch.bfloat16 not in item.callspec.params.values():
            problems.append(f"{node}: not a bfloat16 case")
    return problems


def check_benchmarks() -> list[str]:
    """The quick kernel cases and the training arguments build (nothing is allocated or measured)."""
    import torch

    from benchmarks import kernels, train

    problems = []
    cases = kernels.build_cases(kernels.OPS, torch.bfloat16, quick=True)
    ops = {case.op for case in cases}
    if ops != set(kernels.OPS):
        problems.append(f"benchmarks.kernels --quick: no cases for {', '.join(sorted(set(kernels.OPS) - ops))}")
    lengths = {case.shape for case in cases if case.op == "attention"}
    if len(lengths) != 2 or {case.mode for case in cases if case.op == "attention"} != {"fwd", "bwd"}:
        problems.append(f"benchmarks.kernels --quick: attention should be fwd/bwd at 2 lengths, got {sorted(lengths)}")
    if any(case.op in ("cross_entropy", "fused_linear_cross_entropy") and str(kernels.VOCAB) not in case.shape
           for case in cases):
        problems.append("benchmarks.kernels --quick: CE / FLCE not at Seed-Coder's vocabulary")
    problems += check_attention_grid(kernels.build_cases(["attention"], torch.bfloat16, quick=False))
    try:
        train_args = train.parse_args(TRAIN_ARGS + ["--out", "unused"])
    except SystemExit:
        return problems + [f"benchmarks.train rejects {' '.join(TRAIN_ARGS)}"]
    if train.model_config(train_args.preset).vocab_size != kernels.VOCAB:
        problems.append("benchmarks.train: the 1b preset's vocabulary is not Seed-Coder's")
    return problems


ATTENTION_PEERS = {"sdpa-flash", "sdpa-cudnn", "flex-attention", "flash-attn", "seedcoder-sm80"}


def check_attention_grid(cases) -> list[str]:
    """The attention rows that decide issue [12] build (`make gpu-bench`, the full set): fwd and bwd, causal and
    not, D64 and D128 at the two longest lengths; packed documents and the dense batch of equal FLOPs; each against
    every peer (SDPA flash and cuDNN, FlexAttention, flash-attn, our sm_80 kernel), GQA Hq:Hkv 4:1."""
    from benchmarks import kernels

    problems = []
    labels = {(case.shape, case.mode) for case in cases}
    for s in sorted(kernels.ATTN_SEQLENS)[-2:]:
        for label in (f"dense S{s}", f"dense S{s} D64", f"dense S{s} D64 non-causal", f"dense S{s} D128 non-causal"):
            problems += [f"attention grid: no {mode} row for {label!r}" for mode in ("fwd", "bwd")
                         if (label, mode) not in labels]
    problems += [f"attention grid: no {label!r} rows" for label in ("varlen", "dense-matched")
                 if not any(shape == label for shape, _ in labels)]
    for case in cases:
        missing = ATTENTION_PEERS - {impl.name for impl in case.impls}
        if missing:
            problems.append(f"attention {case.shape} {case.mode}: no {', '.join(sorted(missing))}")
    if kernels.ATTN_HEADS != 4 * kernels.ATTN_KV_HEADS:
        problems.append(f"attention grid: GQA {kernels.ATTN_HEADS}:{kernels.ATTN_KV_HEADS}, not 4:1")
    return problems


def check_results_folder(path: str) -> list[str]:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".gpu-check-probe")
        write_text(probe, "probe\n")
        os.remove(probe)
    except OSError as e:
        return [f"results folder {path}: not writable ({e.strerror or e})"]
    extra = sorted(set(os.listdir(path)) - set(RESULT_FILES))
    if len(RESULT_FILES) > MAX_FILES:
        return [f"{len(RESULT_FILES)} result files planned, a GPU call returns at most {MAX_FILES}"]
    return [f"results folder {path}: already holds {', '.join(extra)} (only {MAX_FILES} files come back)"] if extra else []


def dry_run(args, log: Log) -> int:
    """No GPU: check the plumbing as the box would see it (main installed BoxImportBlocker), measure nothing.
    Exit 2 (1 if the plumbing is broken)."""
    import torch

    log(f"gpu_check: NO GPU: torch {torch.__version__} sees no CUDA device here; nothing is measured or written. "
        "Checking the script's plumbing as the GPU box would run it ...")
    checks = [("results folder", lambda: check_results_folder(args.results)),
              ("test selection collects without the packages the box lacks", check_test_selection),
              ("benchmark cases and training arguments build", check_benchmarks),
              ("markdown assembles from empty results", lambda: check_markdown(args))]
    problems = []
    for name, check in checks:
        try:
            found = check()
        except Exception as e:  # a broken check is a broken plumbing, reported as such
            found = [f"{type(e).__name__}: {e}"]
        log(f"  {'ok ' if not found else 'BROKEN'} {name}" + "".join(f"\n      {p}" for p in found))
        problems += found
    log(f"gpu_check: NO GPU found; plumbing {'OK' if not problems else 'BROKEN'}; run `make gpu-check` on a GPU machine.")
    return 1 if problems else 2


def check_markdown(args) -> list[str]:
    phases = [Phase(name, BUDGETS[name][1 if args.full else 0]) for name in args.phases]
    text = assemble_markdown({"card": "none (dry run)"}, phases, {}, full=args.full)
    needed = ["### GPU check: none (dry run)", "| phase | result |", "#### Kernels", "#### Training step"]
    return [f"markdown lacks {n!r}" for n in needed if n not in text]


# ------------------------------------------------------------------------------------------ main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help=f"folder for the results (at most {MAX_FILES} files; created if missing)")
    parser.add_argument("--full", action="store_true",
                        help="gpu-bench: every test of the files, every kernel case and peer, longer budgets")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES),
                        help="run only these phases (in this order), e.g. to split --full over several calls")
    args = parser.parse_args(argv)
    args.results = os.path.abspath(args.results)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    blocker = BoxImportBlocker()  # before torch: what torch imports here must also exist on the box
    sys.meta_path.insert(0, blocker)
    try:
        import torch
    except ImportError as e:
        print(f"gpu_check: {sys.executable} cannot import torch ({e}); run it with a python that has torch and triton "
              "(the GPU box's python3, or .venv/bin/python here)", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        return dry_run(args, Log(None))
    sys.meta_path.remove(blocker)  # on the box itself: nothing to emulate
    for name in RESULT_FILES:  # a rerun into the same folder starts its logs afresh
        if os.path.exists(os.path.join(args.results, name)):
            os.remove(os.path.join(args.results, name))
    problems = check_results_folder(args.results)
    if problems:
        print("gpu_check: " + "; ".join(problems), file=sys.stderr)
        return 1
    log = Log(os.path.join(args.results, "gpu-check.log"))
    log(f"gpu_check: {'full (gpu-bench)' if args.full else 'quick (gpu-check)'}, phases {' '.join(args.phases)}, "
        f"budgets {', '.join(f'{p} {BUDGETS[p][1 if args.full else 0]} s' for p in args.phases)}")
    return run_on_gpu(args, log)


if __name__ == "__main__":
    sys.exit(main())

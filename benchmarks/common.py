"""The measuring half of the benchmarks: cases, peers, timing, peak memory, the environment and its ceilings.

A benchmark is a list of `Case`s (one op, one mode, one shape, one dtype). Each case lists implementations
(`Impl`: a name and a factory that allocates its inputs and returns a `Prepared` callable) and the op's
model traffic (`Traffic`: the bytes the op must read and write at minimum, with the formula that produced
them). `measure_case` runs every implementation on the GPU (`triton.testing.do_bench` for the median and
p20/p80, the CUDA caching allocator for the peak memory) and records a `Result`, or SKIP(reason) when the
peer is missing or fails. `benchmarks.report` turns cases + results + the environment into rows, target verdicts
and report files; the two halves are apart so that tests feed the reporting half fake results on a CPU machine.
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib
import importlib.util
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from seedcoder import fileio

GB = 1e9
MB = 1e6
QUANTILES = [0.5, 0.2, 0.8]  # median, p20, p80 (the order do_bench returns them in)
MIN_SAMPLES = 20  # timed calls per implementation at least, however slow the call


# ------------------------------------------------------------------------------------------ model traffic
@dataclass
class Traffic:
    """The bytes an op must move at minimum ("model bytes") and the formula that gives them.

    Built term by term: `Traffic().read("x", "N·H", n * h, 2).write("y", "N·H", n * h, 2)`; `total` is
    the byte count, `formula` the printable sum ("read x[N·H]·2B; write y[N·H]·2B").
    """

    terms: list[tuple[str, str, str, int, int]] = field(default_factory=list)  # (read|write, name, symbol, count, itemsize)

    def read(self, name: str, symbol: str, count: int, itemsize: int) -> Traffic:
        self.terms.append(("read", name, symbol, int(count), int(itemsize)))
        return self

    def write(self, name: str, symbol: str, count: int, itemsize: int) -> Traffic:
        self.terms.append(("write", name, symbol, int(count), int(itemsize)))
        return self

    @property
    def total(self) -> int:
        return sum(count * itemsize for _, _, _, count, itemsize in self.terms)

    @property
    def formula(self) -> str:
        parts = []
        for direction in ("read", "write"):
            terms = [f"{name}[{symbol}]·{itemsize}B" for d, name, symbol, _, itemsize in self.terms if d == direction]
            if terms:
                parts.append(f"{direction} " + " + ".join(terms))
        return "; ".join(parts)


# ------------------------------------------------------------------------------------------ cases
class Skip(Exception):
    """An implementation that cannot run here; the report prints SKIP(reason), never a number."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Prepared:
    """What gets timed: `fn()` runs once per iteration; do_bench sets `grad_to_none` tensors' .grad to None first."""

    fn: Callable[[], object]
    grad_to_none: Sequence[torch.Tensor] = ()


@dataclass
class Impl:
    """One implementation of a case. factory() allocates inputs and returns a Prepared (or raises Skip)."""

    name: str
    factory: Callable[[], Prepared]
    ours: bool = False
    module: str | None = None  # the third-party module it needs (the dry run reports whether it is installed)


@dataclass
class Case:
    op: str
    mode: str  # "fwd", "bwd" or "fwd+bwd"
    shape: str
    dtype: str
    traffic: Traffic
    impls: list[Impl]
    flops: int = 0  # model FLOPs, for compute-bound cases (fused linear CE); 0 = memory-bound
    # Outputs every implementation must allocate (e.g. the weight gradient); "extra memory" = peak Δ - these.
    required_output_bytes: int = 0

    @property
    def label(self) -> str:
        return f"{self.op} {self.mode} {self.shape} {self.dtype}"


def prepare(mode: str, f: Callable, args: Sequence) -> Prepared:
    """Wrap `f(*args)` for timing in one mode, after one warm-up call (JIT / torch.compile happen there).

    fwd: time f(*args). bwd: run f once, then time the backward of its outputs with fixed random output
    gradients (retain_graph), covering every input gradient (dx and dW). fwd+bwd: f returns a scalar
    loss; time f(*args).backward().
    """
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if mode == "fwd":
        fn = lambda: f(*args)
    elif mode == "bwd":
        out = f(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        outs = tuple(o for o in outs if isinstance(o, torch.Tensor) and o.requires_grad)
        if not outs:
            raise ValueError("bwd mode: the implementation returned no output that requires grad")
        grads = tuple(torch.randn_like(o) for o in outs)
        fn = lambda: torch.autograd.backward(outs, grads, retain_graph=True)
    elif mode == "fwd+bwd":
        fn = lambda: f(*args).backward()
    else:
        raise ValueError(f"unknown mode {mode!r} (expected fwd, bwd or fwd+bwd)")
    fn()
    synchronize()
    return Prepared(fn, leaves)


def compiled(fn: Callable) -> Callable:
    """torch.compile of a reference, with a fresh dynamo cache: each case compiles for its own shape instead
    of piling recompiles onto one code object (past the recompile limit dynamo would silently run eager)."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def optional_import(module: str, attr: str | None = None):
    """Import a peer; a missing module or attribute raises Skip with the reason."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise Skip(f"{e.name or module} not installed") from None
    except Exception as e:
        raise Skip(f"import {module} failed: {error_summary(e)}") from None
    if attr is None:
        return mod
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise Skip(f"{module}.{attr} not found (installed version lacks it)") from None


def module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


SI_PREFIXES = ("", "K", "M", "G", "T", "P", "E")
COUNT_PREFIXES = ("", "K", "M", "B", "T")  # parameter counts: thousand, million, billion, trillion


def scaled(value: float, prefixes: Sequence[str] = SI_PREFIXES, unit: str = "") -> str:
    """value in 3 significant digits with the prefix that keeps it under 1000: scaled(2.1e5, unit="FLOP") is
    "210 KFLOP", scaled(1.61e9, COUNT_PREFIXES) is "1.61B"."""
    index = 0
    while abs(value) >= 999.5 and index < len(prefixes) - 1:
        value /= 1000
        index += 1
    text = f"{value:.3g}" if abs(value) < 999.5 else f"{value:.0f}"
    return f"{text} {prefixes[index]}{unit}" if unit else f"{text}{prefixes[index]}"


def error_summary(e: BaseException, limit: int = 110) -> str:
    """First line of an exception, shortened, safe inside a markdown table cell."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    text = text.replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------ measuring
@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


@dataclass
class Result:
    """One implementation on one case: a timing and peak memory, or a skip reason."""

    impl: str
    ours: bool = False
    timing: Timing | None = None
    peak_bytes: int | None = None
    skip: str | None = None


def synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_prepared(prepared: Prepared, *, warmup_ms: int, rep_ms: int) -> Timing:
    from triton.testing import do_bench

    median, p20, p80 = do_bench(prepared.fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=list(prepared.grad_to_none) or None,
                                quantiles=QUANTILES)
    return Timing(median, p20, p80)


def peak_memory_of(prepared: Prepared) -> int:
    """Bytes allocated at the peak of one call, above what was allocated before it (gradients included)."""
    for t in prepared.grad_to_none:
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    prepared.fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def measure_case(case: Case, *, warmup_ms: int = 25, rep_ms: int = 100, log=None) -> list[Result]:
    """Run every implementation of a case on the GPU; a failure of one becomes its SKIP(error summary)."""
    results = []
    for impl in case.impls:
        prepared = None
        try:
            prepared = impl.factory()
            start = time.perf_counter()
            peak = peak_memory_of(prepared)  # one synchronized call: also tells how long a call takes
            once_ms = (time.perf_counter() - start) * 1e3
            # slow cases (e.g. ~100 ms fused linear CE) still get MIN_SAMPLES timed calls for the p20/p80
            timing = time_prepared(prepared, warmup_ms=math.ceil(max(warmup_ms, 3 * once_ms)),
                                   rep_ms=math.ceil(max(rep_ms, MIN_SAMPLES * once_ms)))
            results.append(Result(impl.name, impl.ours, timing, peak))
        except Skip as s:
            results.append(Result(impl.name, impl.ours, skip=s.reason))
        except torch.OutOfMemoryError:
            results.append(Result(impl.name, impl.ours, skip="out of memory"))
        except Exception as e:  # a peer that errors is reported, not fatal
            results.append(Result(impl.name, impl.ours, skip=error_summary(e)))
        finally:
            prepared = None
            gc.collect()
            torch.cuda.empty_cache()
        if log is not None:
            r = results[-1]
            what = f"SKIP({r.skip})" if r.skip else f"{r.timing.median_ms:.3f} ms"
            print(f"  {case.label:<55} {impl.name:<24} {what}", file=log, flush=True)
    return results


# ------------------------------------------------------------------------------------------ environment
def driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except Exception:
        pass
    return "unknown"


def measure_copy_bandwidth(nbytes: int = 2 << 30) -> float:
    """GB/s of a device-to-device copy of a large buffer: 2·bytes (read + write) / median time."""
    from triton.testing import do_bench

    def copy_ms() -> float:
        src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(0, 255)
        dst = torch.empty_like(src)
        return do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")

    ms = copy_ms()
    torch.cuda.empty_cache()  # the buffers died with copy_ms
    return 2 * nbytes / (ms * 1e-3) / GB


def measure_matmul_tflops(n: int = 8192, dtype: torch.dtype = torch.bfloat16) -> float:
    """TFLOP/s of an n×n×n matmul (2·n³ FLOPs / median time)."""
    from triton.testing import do_bench

    def matmul_ms() -> float:
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        return do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median")

    ms = matmul_ms()
    torch.cuda.empty_cache()
    return 2 * n**3 / (ms * 1e-3) / 1e12


def collect_environment(*, measure: bool = True, **extra) -> dict:
    """The header: GPU, versions, date, and (measure=True) the copy bandwidth and bf16 matmul rate."""
    import triton

    env = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda_runtime": torch.version.cuda or "none",
        "driver": driver_version() if torch.cuda.is_available() else "none",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["compute_capability"] = f"{props.major}.{props.minor}"
        env["gpu_memory_gb"] = round(props.total_memory / GB, 1)
        env["sm_count"] = props.multi_processor_count
    if measure:
        env["copy_bw_gbps"] = measure_copy_bandwidth()
        env["matmul_bf16_tflops"] = measure_matmul_tflops()
    env.update(extra)
    return env


def atomic_write_text(path: str, text: str) -> None:
    """seedcoder.fileio.atomic_write_text, creating the folder first."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fileio.atomic_write_text(path, text)


def need_gpu_message(what: str) -> str:
    return (f"{what}: needs a CUDA GPU, and torch {torch.__version__} sees none here; nothing was measured "
            f"(run it on the GPU machine, e.g. via `make gpu-check`).")


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)

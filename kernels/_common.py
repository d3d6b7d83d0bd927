"""What every op family shares: when to launch Triton, argument checks, launch heuristics, and the
registry of compile specs that the compile gate (`python -m seedcoder.kernels.compile_gate`) builds.

Dispatch rule (one place, used by every op): CUDA tensors launch the Triton kernels; CPU tensors use the
torch reference, except under TRITON_INTERPRET=1, where the Triton kernels run in the interpreter (that
is how the test suite checks kernel numerics on a machine without a GPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (read at kernel definition time by Triton)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(t: torch.Tensor) -> bool:
    """Launch the Triton kernel for this tensor (CUDA), or run it in the interpreter (CPU + TRITON_INTERPRET=1)."""
    return t.is_cuda or (t.device.type == "cpu" and interpreting())


# ----------------------------------------------------------------------------------------------- checks
def check_tensor(
    name: str,
    t: Any,
    *,
    dtypes: tuple[torch.dtype, ...] | None = FLOAT_DTYPES,
    ndim: int | tuple[int, ...] | None = None,
    device: torch.device | None = None,
    last_dim_contiguous: bool = False,
) -> None:
    """Raise a TypeError/ValueError naming the argument when `t` is not what a kernel accepts."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name}: dtype {str(t.dtype).removeprefix('torch.')} is not supported (expected one of {allowed})")
    if ndim is not None:
        allowed_ndim = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed_ndim:
            raise ValueError(f"{name}: expected {' or '.join(map(str, allowed_ndim))} dimensions, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: is on {t.device}, expected {device} (all inputs must share one device)")
    if last_dim_contiguous and t.dim() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name}: the last dimension must be contiguous (stride 1), got strides {t.stride()}")


def check_same_dtype(**tensors: torch.Tensor) -> None:
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        desc = ", ".join(f"{n}={str(d).removeprefix('torch.')}" for n, d in dtypes.items())
        raise TypeError(f"dtype mismatch: {desc}")


# ------------------------------------------------------------------------------------------ outputs
# Tests set SEEDCODER_POISON_OUTPUTS=1 so every kernel output starts as NaN (floats) or -1 (ints): an
# element a kernel forgets to write fails the test instead of passing on leftover memory.
_POISON = os.environ.get("SEEDCODER_POISON_OUTPUTS", "0") == "1"


def new_empty(shape, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torch.empty for kernel outputs; poisoned under SEEDCODER_POISON_OUTPUTS=1."""
    t = torch.empty(shape, dtype=dtype, device=device)
    if _POISON:
        t.fill_(float("nan") if t.is_floating_point() else -1)
    return t


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Poison a buffer a kernel will overwrite in place (no-op unless SEEDCODER_POISON_OUTPUTS=1)."""
    if _POISON:
        t.fill_(float("nan") if t.is_floating_point() else -1)
    return t


# ------------------------------------------------------------------------------------------ heuristics
def next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


# ------------------------------------------------------------------------------------------ compile gate
@dataclass(frozen=True)
class CompileSpec:
    """One compilation the compile gate must pass: a JIT function, its argument types and constexprs.

    signature maps every argument name to a Triton type string ("*bf16", "i32", "fp32", "constexpr").
    The launcher's own heuristic should produce the constexprs/num_warps listed here, so every
    configuration a launch can pick is compiled ahead of time for each GPU target.

    ints holds every integer argument's value at a representative real launch (a Seed-Coder shape on an H100):
    at launch the JIT specialises each int on divisibility by 16 (and == 1) and each pointer on 16-byte
    alignment, which decides whether loads vectorise; the gate derives the same specialisation from these
    values (pointers taken as aligned, as torch allocates them) through Triton's own code.
    """

    name: str
    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3
    archs: tuple[int, ...] | None = None  # GPU generations this config is for (None: every target)
    quick: bool = True  # part of the quick gate (`--quick`, run by the test suite); the full gate builds all
    ints: dict[str, int] = field(default_factory=dict)
    # On the training step's hot path at the shape of `ints`: the gate fails when its PTX has no 16-byte loads.
    hot: bool = False
    # Instructions the build must contain (counted by the gate: "wgmma", "tma", "setmaxnreg", "cp_async_16"):
    # the gate fails a configuration that was built to have them and lost one (a Hopper feature that fell back).
    expect: tuple[str, ...] = ()


COMPILE_SPECS: list[CompileSpec] = []


def register_compile_spec(spec: CompileSpec) -> None:
    COMPILE_SPECS.append(spec)


TRITON_DTYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

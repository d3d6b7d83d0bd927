"""Numerical checks shared by the kernel tests (FlashAttention's rule).

A low-precision kernel may err against a float64 reference at most `factor` (2) times what the same math
in plain PyTorch at the input dtype errs against that reference, plus a small atol. NaN never passes.
"""

from __future__ import annotations

import torch


def max_abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_close_rule(name: str, out: torch.Tensor, ref: torch.Tensor, baseline: torch.Tensor, *,
                      factor: float = 2.0, atol: float = 1e-6) -> None:
    """out: the kernel's result; ref: the float64/float32 reference; baseline: plain PyTorch at the input dtype."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(out).all() or not torch.isfinite(ref).all(), f"{name}: non-finite values (NaN/inf) in the output"
    assert not torch.isnan(out).any(), f"{name}: NaN in the output"
    err, base = max_abs_err(out, ref), max_abs_err(baseline, ref)
    assert err <= factor * base + atol, (
        f"{name}: max |err| {err:.3e} > {factor} x plain-PyTorch error {base:.3e} + atol {atol:.1e}")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)

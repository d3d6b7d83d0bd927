"""Every public kernel, forward and backward, on plain CPU tensors: the torch-reference path that users get without
a GPU, which the rest of the suite never runs (conftest sets TRITON_INTERPRET=1, routing CPU tensors to Triton's
interpreter instead).

triton.jit reads TRITON_INTERPRET when a kernel is defined, so the checks run in one child process with a clean
environment: this file executed as a script. The child asserts that the interpreter is off, that no Triton kernel
is launched and that each op called its torch reference, and compares values and gradients (fp32 and bf16 inputs,
odd shapes) with float64 PyTorch math written here, independent of the kernels' own references.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import torch

# ------------------------------------------------------------------------------------------ float64 truth


def truth_rms_norm(x, weight, eps, residual=None):
    h = x if residual is None else x + residual
    y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight
    return y if residual is None else (y, h)


def truth_rotary(x, position_ids, theta):
    """HF rotate_half RoPE; x (..., S, H, D) with position_ids (..., S)."""
    half = x.shape[-1] // 2
    inv_freq = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    angle = position_ids.to(torch.float64)[..., None] * inv_freq
    cos, sin = torch.cat((angle.cos(), angle.cos()), -1)[..., None, :], torch.cat((angle.sin(), angle.sin()), -1)[..., None, :]
    rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
    return x * cos + rotated * sin


def truth_cross_entropy(logits, labels, ignore_index, label_smoothing, z_loss, reduction):
    valid = labels != ignore_index
    lse = torch.logsumexp(logits, -1)
    z_y = logits.gather(-1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1)
    loss = lse - (1 - label_smoothing) * z_y - label_smoothing * logits.mean(-1) + z_loss * lse**2
    loss = torch.where(valid, loss, 0.0)
    if reduction == "mean":
        return loss.sum() / valid.sum()
    return loss.sum() if reduction == "sum" else loss


def truth_attention(q, k, v, bounds, causal, scale):
    """Packed q (T, Hq, D), k/v (T, Hkv, D), document bounds [0, ..., T] -> (out (T, Hq, D), lse (Hq, T))."""
    group = q.shape[1] // k.shape[1]
    outs, lses = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        qd = q[lo:hi].transpose(0, 1)
        kd, vd = (t[lo:hi].transpose(0, 1).repeat_interleave(group, 0) for t in (k, v))
        scores = qd @ kd.transpose(1, 2) * scale
        if causal:
            scores = scores.masked_fill(~torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril(), -math.inf)
        lse = torch.logsumexp(scores, -1)
        outs.append((torch.softmax(scores, -1) @ vd).transpose(0, 1))
        lses.append(lse)
    return torch.cat(outs), torch.cat(lses, 1)


# ------------------------------------------------------------------------------------------ the child's checks


def randn(*shape, seed, dtype=torch.float32, scale=1.0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale).to(dtype)


def grads_of(outputs, inputs, upstream):
    """Values and gradients of sum(output · upstream) over the outputs."""
    loss = sum((o.to(u.dtype) * u).sum() for o, u in zip(outputs, upstream))
    return torch.autograd.grad(loss, inputs)


def assert_matches(name, got, want, dtype):
    """got (the op, in dtype) against want (float64): fp32 math is off by the round-off of its reductions (atol);
    a bf16 result also by its one final rounding, at most half an ulp: 2^-8 relative (the references compute in
    fp32 from the bf16 inputs, which the float64 truth sees exactly, and round once at the end)."""
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert not torch.isnan(got).any(), f"{name}: NaN"
    rtol = 2**-8 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=1e-5 * max(1.0, want.abs().max().item()),
                               msg=lambda m: f"{name}: {m}")


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def check_rms_norm(kernels):
    x, weight, residual = randn(3, 5, 37, seed=1), 1 + randn(37, seed=2, scale=0.1), randn(3, 5, 37, seed=3)
    dy, dh = randn(3, 5, 37, seed=4, dtype=torch.float64), randn(3, 5, 37, seed=5, dtype=torch.float64)
    got_in, want_in = leaves(x, weight), leaves(x.double(), weight.double())
    got, want = kernels.rms_norm(*got_in, eps=1e-5), truth_rms_norm(*want_in, eps=1e-5)
    assert_matches("rms_norm y", got, want, torch.float32)
    for name, g, w in zip(("dx", "dweight"), grads_of([got], got_in, [dy]), grads_of([want], want_in, [dy])):
        assert_matches(f"rms_norm {name}", g, w, torch.float32)

    got_in, want_in = leaves(x, weight, residual), leaves(x.double(), weight.double(), residual.double())
    got = kernels.rms_norm(got_in[0], got_in[1], eps=1e-5, residual=got_in[2])
    want = truth_rms_norm(want_in[0], want_in[1], 1e-5, residual=want_in[2])
    for name, g, w in zip(("y", "new_residual"), got, want):
        assert_matches(f"rms_norm(residual) {name}", g, w, torch.float32)
    for name, g, w in zip(("dx", "dweight", "dresidual"), grads_of(got, got_in, [dy, dh]), grads_of(want, want_in, [dy, dh])):
        assert_matches(f"rms_norm(residual) {name}", g, w, torch.float32)


def check_rotary(kernels):
    theta = 10_000.0
    packed_positions = torch.cat((torch.arange(5), torch.arange(6)))  # documents of 5 and 6 tokens
    layouts = {  # q, k, the positions, the position_ids argument
        "batched": (randn(2, 7, 3, 10, seed=6), randn(2, 7, 1, 10, seed=7), torch.arange(7).expand(2, 7), None),
        "packed": (randn(11, 3, 10, seed=8), randn(11, 1, 10, seed=9), packed_positions, packed_positions),
    }
    for layout, (q, k, pos, pos_arg) in layouts.items():
        upstream = [randn(*t.shape, seed=10 + i, dtype=torch.float64) for i, t in enumerate((q, k))]
        got_in, want_in = leaves(q, k), leaves(q.double(), k.double())
        got = kernels.apply_rotary(*got_in, pos_arg, theta=theta)
        want = [truth_rotary(t, pos, theta) for t in want_in]
        for name, g, w in zip(("q", "k"), got, want):
            assert_matches(f"rotary {layout} {name}", g, w, torch.float32)
        for name, g, w in zip(("dq", "dk"), grads_of(got, got_in, upstream), grads_of(want, want_in, upstream)):
            assert_matches(f"rotary {layout} {name}", g, w, torch.float32)

        got_in, want_in = leaves(q, k), leaves(q.double(), k.double())
        projected = [t * 1.0 for t in got_in]  # in place needs non-leaf tensors (a projection's output)
        got = kernels.apply_rotary(*projected, pos_arg, theta=theta, inplace=True)
        want = [truth_rotary(t, pos, theta) for t in want_in]
        assert all(g is p for g, p in zip(got, projected))
        for name, g, w in zip(("q", "k"), got, want):
            assert_matches(f"rotary {layout} in place {name}", g, w, torch.float32)
        for name, g, w in zip(("dq", "dk"), grads_of(got, got_in, upstream), grads_of(want, want_in, upstream)):
            assert_matches(f"rotary {layout} in place {name}", g, w, torch.float32)
    try:
        kernels.apply_rotary(*leaves(q, k), pos_arg, theta=theta, inplace=True)
        raise AssertionError("rotary in place on a leaf that requires grad did not raise")
    except RuntimeError as error:
        assert "inplace=True: q is a leaf tensor that requires grad" in str(error), error


def ce_labels(shape, vocab, seed):
    labels = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))
    labels.view(-1)[::4] = -100  # ignored tokens
    return labels


def check_cross_entropy(kernels):
    logits, labels = randn(2, 5, 37, seed=20, scale=3.0), ce_labels((2, 5), 37, seed=21)
    options = {"ignore_index": -100, "label_smoothing": 0.1, "z_loss": 1e-3}
    for reduction in ("mean", "none"):
        upstream = randn(*((2, 5) if reduction == "none" else ()), seed=22, dtype=torch.float64)
        (got_in,), (want_in,) = leaves(logits), leaves(logits.double())
        got = kernels.cross_entropy(got_in, labels, reduction=reduction, **options)
        want = truth_cross_entropy(want_in, labels, reduction=reduction, **options)
        assert_matches(f"cross_entropy {reduction} loss", got, want, torch.float32)
        (g,), (w,) = grads_of([got], [got_in], [upstream]), grads_of([want], [want_in], [upstream])
        assert_matches(f"cross_entropy {reduction} dlogits", g, w, torch.float32)


def check_fused_linear_cross_entropy(kernels):
    hidden, weight, labels = randn(2, 6, 24, seed=30), randn(37, 24, seed=31, scale=0.3), ce_labels((2, 6), 37, seed=32)
    options = {"ignore_index": -100, "label_smoothing": 0.1, "z_loss": 1e-3}
    for reduction in ("mean", "sum"):
        upstream = randn(seed=33, dtype=torch.float64)
        got_in, want_in = leaves(hidden, weight), leaves(hidden.double(), weight.double())
        got = kernels.fused_linear_cross_entropy(*got_in, labels, reduction=reduction, **options)
        want = truth_cross_entropy(want_in[0] @ want_in[1].t(), labels, reduction=reduction, **options)
        assert_matches(f"fused_linear_cross_entropy {reduction} loss", got, want, torch.float32)
        for name, g, w in zip(("dhidden", "dweight"), grads_of([got], got_in, [upstream]),
                              grads_of([want], want_in, [upstream])):
            assert_matches(f"fused_linear_cross_entropy {reduction} {name}", g, w, torch.float32)


def check_flash_attention(kernels):
    lengths = [1, 9, 0, 17]  # an empty document too
    bounds = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32)
    total = bounds[-1]
    cases = [  # name, dtype, Hq, Hkv, causal, options
        ("packed causal GQA", torch.float32, 4, 2, True, {}),
        ("packed not causal MQA", torch.float32, 4, 1, False, {"softmax_scale": 0.3}),
        ("packed deterministic", torch.float32, 2, 2, True, {"deterministic": True}),
        ("packed bf16", torch.bfloat16, 4, 2, True, {}),
    ]
    for index, (name, dtype, n_heads, n_kv_heads, causal, options) in enumerate(cases):
        q, k, v = (randn(total, h, 12, seed=40 + 3 * index + i, dtype=dtype) for i, h in
                   enumerate((n_heads, n_kv_heads, n_kv_heads)))
        upstream = [randn(total, n_heads, 12, seed=60 + index, dtype=dtype).double()]  # dO exact in dtype
        got_in, want_in = leaves(q, k, v), leaves(q.double(), k.double(), v.double())
        out, lse = kernels.flash_attention(*got_in, causal=causal, cu_seqlens=cu_seqlens, max_seqlen=max(lengths),
                                           return_lse=True, **options)
        scale = options.get("softmax_scale", 1 / math.sqrt(12))
        want_out, want_lse = truth_attention(*want_in, bounds, causal, scale)
        assert_matches(f"flash_attention {name} out", out, want_out, dtype)
        assert_matches(f"flash_attention {name} lse", lse, want_lse, torch.float32)
        for grad_name, g, w in zip(("dq", "dk", "dv"), grads_of([out], got_in, upstream),
                                   grads_of([want_out], want_in, upstream)):
            assert_matches(f"flash_attention {name} {grad_name}", g, w, dtype)

    batch, seqlen = 2, 13  # (B, S, H, D): B documents of S tokens
    q, k, v = randn(batch, seqlen, 4, 12, seed=70), randn(batch, seqlen, 1, 12, seed=71), randn(batch, seqlen, 1, 12, seed=72)
    upstream = [randn(batch, seqlen, 4, 12, seed=73, dtype=torch.float64)]
    got_in, want_in = leaves(q, k, v), leaves(*(t.double().flatten(0, 1) for t in (q, k, v)))
    out, lse = kernels.flash_attention(*got_in, return_lse=True)
    want_out, want_lse = truth_attention(*want_in, list(range(0, batch * seqlen + 1, seqlen)), True, 1 / math.sqrt(12))
    want_out, want_lse = want_out.view(out.shape), want_lse.view(4, batch, seqlen).transpose(0, 1)
    assert_matches("flash_attention batched out", out, want_out, torch.float32)
    assert_matches("flash_attention batched lse", lse, want_lse, torch.float32)
    for grad_name, g, w in zip(("dq", "dk", "dv"), grads_of([out], got_in, upstream), grads_of([want_out], want_in, upstream)):
        assert_matches(f"flash_attention batched {grad_name}", g, w.view(g.shape), torch.float32)


def counted(fn, name, calls):
    def wrapper(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return fn(*args, **kwargs)

    return wrapper


def child_main() -> None:
    assert os.environ.get("TRITON_INTERPRET") is None, "the child must run without TRITON_INTERPRET"
    import importlib

    import triton

    def no_launch(*args, **kwargs):
        raise AssertionError("a Triton kernel was launched for CPU tensors")

    triton.runtime.jit.JITFunction.run = no_launch

    import seedcoder.kernels as kernels
    from seedcoder.kernels import _common

    assert not _common.interpreting() and not _common.use_triton(torch.zeros(1))
    calls = {}
    for module, reference in (("rms_norm", "rms_norm_reference"), ("rotary", "rotary_reference"),
                              ("cross_entropy", "cross_entropy_reference"),
                              ("fused_linear_cross_entropy", "fused_linear_cross_entropy_reference"),
                              ("flash_attention", "flash_attention_reference")):
        mod = importlib.import_module(f"seedcoder.kernels.{module}")
        setattr(mod, reference, counted(getattr(mod, reference), reference, calls))

    checks = {"rms_norm_reference": check_rms_norm, "rotary_reference": check_rotary,
              "cross_entropy_reference": check_cross_entropy,
              "fused_linear_cross_entropy_reference": check_fused_linear_cross_entropy,
              "flash_attention_reference": check_flash_attention}
    for reference, check in checks.items():
        before = calls.get(reference, 0)
        check(kernels)
        assert calls.get(reference, 0) > before, f"{check.__name__}: the op never called {reference}"
        print(f"ok {check.__name__}")


# ------------------------------------------------------------------------------------------ the test


def test_every_kernel_forward_and_backward_on_plain_cpu_tensors():
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"child failed:\n{result.stdout}\n{result.stderr[-6000:]}"
    done = [line.removeprefix("ok ") for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert done == ["check_rms_norm", "check_rotary", "check_cross_entropy", "check_fused_linear_cross_entropy",
                    "check_flash_attention"], result.stdout


if __name__ == "__main__":
    child_main()

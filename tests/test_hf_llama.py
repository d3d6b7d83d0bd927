"""The Hugging Face Llama patch: a tiny random LlamaForCausalLM (2 layers, hidden 64, 4 heads / 2 kv heads,
vocab 1000), fp32, gives the same loss and the same gradients of every parameter with our kernels (run by
Triton's interpreter on the CPU, on the GPU when there is one) as unpatched, with labels containing -100;
the calls really go through our kernels (counted by wrappers around our public functions); instance mode
leaves other models alone; global mode patches models built before and after, and reverts.

Tolerance: fp32 throughout, so kernel and torch differ only in summation order and exp/rsqrt rounding.
Loss: rtol 1e-5. Every gradient: max |ours - HF| <= 2e-5 x max |HF| of that tensor (+1e-9); measured here
~1e-6 (loss ~1e-7).
"""

from __future__ import annotations

import collections
import copy
import importlib
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.loss.loss_utils import ForCausalLMLoss  # noqa: E402
from transformers.models.llama import modeling_llama  # noqa: E402

from seedcoder.kernels import hf_llama  # noqa: E402

GRAD_RTOL = 2e-5
LOSS_RTOL = 1e-5
PATCH_UNDER_COMPILE: dict = {}
KERNELS = {"rms_norm": "rms_norm", "rotary": "apply_rotary", "cross_entropy": "cross_entropy",
           "fused_linear_cross_entropy": "fused_linear_cross_entropy"}


def tiny_model(device, attn="eager", seed=0) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, rope_theta=500_000.0, initializer_range=0.1,
                         tie_word_embeddings=False)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # non-trivial norm weights, so their gradients (dW) are tested too
        for module in model.modules():
            if isinstance(module, modeling_llama.LlamaRMSNorm):
                module.weight.uniform_(0.5, 1.5)
    return model.to(device).train()


def batch(device, seed=1):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 1000, (2, 13), generator=g)
    labels = input_ids.clone()
    labels[0, :4] = -100  # a prompt that is not trained on
    labels[1, 7] = -100
    labels[1, -2:] = -100  # padding
    return input_ids.to(device), labels.to(device)


def loss_and_grads(model, input_ids, labels, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, labels=labels, **kwargs)
    logits = out.logits.detach().clone() if out.logits is not None else None  # before backward: ours overwrites them
    out.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return out.loss.detach(), logits, grads


def assert_same(loss, grads, ref_loss, ref_grads):
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, rtol=LOSS_RTOL, atol=0.0)
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        err = (grads[name] - ref).abs().max().item()
        bound = GRAD_RTOL * ref.abs().max().item() + 1e-9
        assert err <= bound, f"grad of {name}: max |err| {err:.3e} > {bound:.3e}"


@pytest.fixture
def calls(monkeypatch):
    """Counts calls of our public kernel functions (wrapping them, so the kernels still run)."""
    counts = collections.Counter()
    for module_name, fn_name in KERNELS.items():
        module = importlib.import_module(f"seedcoder.kernels.{module_name}")
        fn = getattr(module, fn_name)

        def counted(*args, _fn=fn, _name=module_name, **kwargs):
            counts[_name] += 1
            return _fn(*args, **kwargs)

        monkeypatch.setattr(module, fn_name, counted)
    return counts


@pytest.fixture
def global_patch_reverted():
    yield
    hf_llama.revert_seedcoder_kernels_for_llama()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_instance_patch_matches_unpatched(device, calls, attn):
    reference = tiny_model(device, attn)
    model = copy.deepcopy(reference)
    input_ids, labels = batch(device)
    ref_loss, ref_logits, ref_grads = loss_and_grads(reference, input_ids, labels)

    hf_llama.apply_seedcoder_kernels_to_llama(model=model)
    loss, _, grads = loss_and_grads(model, input_ids, labels)  # its logits hold dlogits now (cross_entropy's contract)
    assert_same(loss, grads, ref_loss, ref_grads)
    # one forward: 2 norms per layer + the final norm, one rotary call per layer, one loss
    assert calls == {"rms_norm": 5, "rotary": 2, "cross_entropy": 1}
    with torch.no_grad():  # without a gradient the loss only reads the logits
        torch.testing.assert_close(model(input_ids=input_ids, labels=labels).logits, ref_logits, rtol=1e-4, atol=1e-5)

    # the unpatched model built alongside is untouched: HF's code, bit for bit, and no call of ours
    calls.clear()
    again_loss, _, again_grads = loss_and_grads(reference, input_ids, labels)
    assert sum(calls.values()) == 0
    assert torch.equal(again_loss, ref_loss) and all(torch.equal(again_grads[n], g) for n, g in ref_grads.items())
    fresh = tiny_model(device, attn)
    loss_and_grads(fresh, input_ids, labels)
    assert sum(calls.values()) == 0


def test_each_switch_patches_only_its_part(device, calls):
    reference = tiny_model(device)
    input_ids, labels = batch(device)
    ref_loss, _, ref_grads = loss_and_grads(reference, input_ids, labels)
    for switch, expected in [("rms_norm", {"rms_norm": 5}), ("rotary", {"rotary": 2}), ("cross_entropy", {"cross_entropy": 1})]:
        model = copy.deepcopy(reference)
        flags = {"rms_norm": False, "rotary": False, "cross_entropy": False, switch: True}
        hf_llama.apply_seedcoder_kernels_to_llama(model=model, **flags)
        calls.clear()
        loss, _, grads = loss_and_grads(model, input_ids, labels)
        assert dict(calls) == expected, switch
        assert_same(loss, grads, ref_loss, ref_grads)


def test_global_patch_routes_old_and_new_models_and_reverts(device, calls, global_patch_reverted):
    built_before = tiny_model(device)
    reference = copy.deepcopy(built_before)
    input_ids, labels = batch(device)
    ref_loss, _, ref_grads = loss_and_grads(reference, input_ids, labels)
    calls.clear()

    hf_llama.apply_seedcoder_kernels_to_llama()
    for model in (built_before, tiny_model(device)):  # the second one has the same weights (same seed)
        calls.clear()
        loss, _, grads = loss_and_grads(model, input_ids, labels)
        assert calls == {"rms_norm": 5, "rotary": 2, "cross_entropy": 1}
        assert_same(loss, grads, ref_loss, ref_grads)

    hf_llama.revert_seedcoder_kernels_for_llama()
    assert modeling_llama.LlamaRMSNorm.forward.__qualname__ == "LlamaRMSNorm.forward"
    assert "loss_function" not in modeling_llama.LlamaForCausalLM.__dict__
    calls.clear()
    loss, _, grads = loss_and_grads(tiny_model(device), input_ids, labels)
    assert sum(calls.values()) == 0
    assert torch.equal(loss, ref_loss)


@pytest.mark.parametrize("mode", ["instance", "global"])
def test_fused_linear_cross_entropy_forward(device, calls, global_patch_reverted, mode):
    reference = tiny_model(device)
    model = copy.deepcopy(reference)
    input_ids, labels = batch(device)
    ref_loss, ref_logits, ref_grads = loss_and_grads(reference, input_ids, labels)
    ref_sum, _, ref_sum_grads = loss_and_grads(reference, input_ids, labels, num_items_in_batch=torch.tensor(40))
    with torch.no_grad():
        ref_eval = reference.eval()(input_ids=input_ids, labels=labels)
    calls.clear()

    if mode == "global":
        hf_llama.apply_seedcoder_kernels_to_llama(fused_linear_cross_entropy=True)
    else:
        hf_llama.apply_seedcoder_kernels_to_llama(model=model, fused_linear_cross_entropy=True)
    out = model(input_ids=input_ids, labels=labels)
    assert out.logits is None  # training with labels: no logits materialised
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    assert_same(out.loss.detach(), grads, ref_loss, ref_grads)
    assert calls == {"rms_norm": 5, "rotary": 2, "fused_linear_cross_entropy": 1}
    if mode == "global":
        return  # the rest is the same code in both modes

    # num_items_in_batch (gradient accumulation): sum / count, as HF
    loss, _, grads = loss_and_grads(model, input_ids, labels, num_items_in_batch=torch.tensor(40))
    assert_same(loss, grads, ref_sum, ref_sum_grads)

    # return_dict=False keeps HF's tuple convention (loss first)
    as_tuple = model(input_ids=input_ids, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], ref_loss, rtol=LOSS_RTOL, atol=0.0)

    # eval: logits are computed (HF's forward), the loss goes through our cross_entropy
    model.eval()
    calls.clear()
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=labels)
    assert calls["cross_entropy"] == 1 and calls["fused_linear_cross_entropy"] == 0
    torch.testing.assert_close(out.logits, ref_eval.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.loss, ref_eval.loss, rtol=LOSS_RTOL, atol=0.0)


@pytest.mark.parametrize("loss", ["fused_linear_cross_entropy", "cross_entropy"])
def test_patched_model_compiles_fullgraph(device, calls, loss):
    """torch.compile(fullgraph=True) traces the instance-patched model (our custom ops, the rotary routing counter)
    without graph breaks, forward and backward, with the same loss and gradients."""
    reference = tiny_model(device)
    model = copy.deepcopy(reference)
    input_ids, labels = batch(device)
    ref_loss, _, ref_grads = loss_and_grads(reference, input_ids, labels)
    hf_llama.apply_seedcoder_kernels_to_llama(model=model, fused_linear_cross_entropy=loss == "fused_linear_cross_entropy",
                                              **PATCH_UNDER_COMPILE)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss, _, grads = loss_and_grads(compiled, input_ids, labels)
    assert_same(loss, {n.removeprefix("_orig_mod."): g for n, g in grads.items()}, ref_loss, ref_grads)
    assert hf_llama._RotaryRouting.depth == 0


def test_causal_lm_loss_matches_hf(device, calls):
    """The loss function alone, with HF's options: mean over non-ignored, num_items_in_batch, shift_labels."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 9, 50, generator=g).to(device)
    labels = torch.randint(0, 50, (2, 9), generator=g).to(device)
    labels[0, 2:5] = -100
    for kwargs in ({}, {"num_items_in_batch": torch.tensor(7)}, {"num_items_in_batch": 7},
                   {"shift_labels": torch.roll(labels, -1, dims=1)}):
        ref_in = logits.clone().requires_grad_()
        ours_in = logits.clone().requires_grad_()
        ref = ForCausalLMLoss(ref_in, labels, 50, **kwargs)
        ours = hf_llama.seedcoder_causal_lm_loss(ours_in, labels, 50, **kwargs)
        torch.testing.assert_close(ours, ref, rtol=LOSS_RTOL, atol=0.0)
        ref.backward()
        ours.backward()
        torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-5, atol=1e-7)
    assert calls["cross_entropy"] == 4


def test_bad_model_argument():
    with pytest.raises(TypeError, match="model: expected a transformers Llama model"):
        hf_llama.apply_seedcoder_kernels_to_llama(model="not a model")


def test_module_imports_without_transformers():
    """seedcoder.kernels.hf_llama imports with transformers unavailable; calling the patch says what is missing."""
    probe = (
        "import sys\n"
        "sys.modules['transformers'] = None\n"
        "import seedcoder.kernels.hf_llama as h\n"
        "try:\n"
        "    h.apply_seedcoder_kernels_to_llama()\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ImportError: apply_seedcoder_kernels_to_llama needs Hugging Face transformers" in proc.stdout

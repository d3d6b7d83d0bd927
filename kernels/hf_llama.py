"""Swap seedcoder's kernels into Hugging Face transformers' Llama (like Liger's `apply_liger_kernel_to_llama`).

    from seedcoder.kernels.hf_llama import apply_seedcoder_kernels_to_llama
    apply_seedcoder_kernels_to_llama()             # every Llama model: already built or built later
    apply_seedcoder_kernels_to_llama(model=model)  # only this instance; other models keep HF's code

What is replaced:
- rms_norm: `LlamaRMSNorm.forward` -> `rms_norm(x, weight, eps)` (fp32 statistics like HF; the output dtype
  follows HF's `weight * x.to(input_dtype)`, i.e. the promotion of x's and weight's dtypes).
- rotary: `modeling_llama.apply_rotary_pos_emb`, which LlamaAttention calls with q/k in (B, H, S, D) (the
  transposed view of the (B, S, H, D) projection output) and HF's cos/sin tables (B or 1, S, D). Our kernel
  takes the (B, S, H, D) view back (strided, no copy) with the same tables; the result is transposed back.
  Calls it does not cover (partial rotary, other table shapes or dtypes) go to HF's function.
- cross_entropy: the causal-LM loss (`LlamaForCausalLM.loss_function`) -> `cross_entropy` on the logits,
  with HF's label shift, ignore_index and num_items_in_batch (sum / count) semantics. As with Liger, when
  the logits require grad the loss writes the gradient in place into the logits buffer during the FORWARD:
  `output.logits` of a training forward holds dlogits (compute metrics under no_grad, or from a clone).
- fused_linear_cross_entropy: `LlamaForCausalLM.forward`, in training with labels, computes the loss from the
  last hidden states and `lm_head.weight` without materialising logits (the output's logits is None then,
  as in Liger); in eval, or without labels, it runs HF's forward (which still uses the patched loss).

Global mode (model=None) patches the classes and routes every rotary call, so every Llama instance uses the
kernels, including ones built before the call (methods are looked up on the class). Instance mode patches only
the given model: its RMSNorm modules' forward, its loss_function, its forward (fused mode), and its attention
modules, which raise a flag while they run so that the module-level rotary dispatcher (installed in place of
modeling_llama.apply_rotary_pos_emb by either mode) routes their calls, and only theirs, to our kernel. The
flag is a process-wide counter, not per thread: an unpatched model running concurrently in another thread during
that window would also get our kernel (which computes the same function).
`revert_seedcoder_kernels_for_llama()` undoes the global patch.

transformers is imported only when a function here is called: importing seedcoder.kernels never needs it.
Written against transformers 5.x and kept to what 4.50+ also has (module-level apply_rotary_pos_emb,
PreTrainedModel.loss_function, ForCausalLMLoss's signature); tested with the installed version.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types

import torch

_MISSING = object()
_ORIGINALS: dict[tuple[object, str], object] = {}  # (owner, attribute) -> value before the global patch


class _RotaryRouting:
    """Where the module-level rotary dispatcher sends calls: to our kernel when the global patch is on, or while
    an instance-patched attention module runs (depth > 0); otherwise to HF's function (`hf`)."""

    global_on = False
    depth = 0
    hf = None  # transformers' apply_rotary_pos_emb, saved when the dispatcher is installed


_FORWARD_NAMES: dict[str, tuple[str, ...]] = {}  # {"names": HF forward's parameter names}, read when patching
_KERNEL_MODULES: dict[str, types.ModuleType] = {}  # filled when patching, so compiled code never runs an import


def _kernel(module: str, name: str):
    """Our function, looked up at call time (so a test can wrap it). importlib gets the submodule even when the
    package re-exports a function of the same name (seedcoder.kernels.rms_norm the function vs the module)."""
    mod = _KERNEL_MODULES.get(module)
    if mod is None:
        mod = _KERNEL_MODULES[module] = importlib.import_module(f"{__package__}.{module}")
    return getattr(mod, name)


def _modeling_llama():
    try:
        from transformers.models.llama import modeling_llama
    except ImportError as e:
        raise ImportError("apply_seedcoder_kernels_to_llama needs Hugging Face transformers (pip install transformers)") from e
    return modeling_llama


# ------------------------------------------------------------------------------------------ replacements
def _rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm.forward on our kernel."""
    eps = getattr(self, "variance_epsilon", getattr(self, "eps", 1e-6))
    y = _kernel("rms_norm", "rms_norm")(hidden_states, self.weight, eps)
    out_dtype = torch.promote_types(hidden_states.dtype, self.weight.dtype)  # HF: weight * x.to(input_dtype)
    return y if y.dtype == out_dtype else y.to(out_dtype)


def _our_rotary_applies(q, k, cos, sin, unsqueeze_dim) -> bool:
    return (q.dim() == 4 and k.dim() == 4 and cos.dim() == 3 and cos.shape == sin.shape
            and cos.shape[-1] == q.shape[-1] and unsqueeze_dim in (1, 2)
            and q.dtype == k.dtype and cos.dtype == sin.dtype and cos.dtype in (torch.float32, q.dtype)
            and q.stride(-1) == 1 and k.stride(-1) == 1)


def _apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
    """Stands in for modeling_llama.apply_rotary_pos_emb(q, k, cos, sin, [position_ids,] unsqueeze_dim=1)."""
    unsqueeze_dim = kwargs.get("unsqueeze_dim", args[-1] if args else 1)
    routed = _RotaryRouting.global_on or _RotaryRouting.depth > 0
    if not (routed and _our_rotary_applies(q, k, cos, sin, unsqueeze_dim)):
        return _RotaryRouting.hf(q, k, cos, sin, *args, **kwargs)
    apply_rotary = _kernel("rotary", "apply_rotary")
    if unsqueeze_dim == 2:  # q, k already (B, S, H, D)
        return apply_rotary(q, k, cos=cos, sin=sin)
    q_out, k_out = apply_rotary(q.transpose(1, 2), k.transpose(1, 2), cos=cos, sin=sin)  # (B, H, S, D) -> (B, S, H, D) views
    return q_out.transpose(1, 2), k_out.transpose(1, 2)


def _attention_forward_with_our_rotary(self, *args, **kwargs):
    """Instance-mode LlamaAttention.forward: HF's forward, with rotary calls routed to our kernel while it runs."""
    _RotaryRouting.depth += 1
    try:
        return type(self).forward(self, *args, **kwargs)
    finally:
        _RotaryRouting.depth -= 1


def _shift_labels(labels, shift_labels, ignore_index: int) -> torch.Tensor:
    """HF's causal-LM shift: token t predicts label t+1; the last position gets ignore_index."""
    if shift_labels is None:
        labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)
        shift_labels = labels[..., 1:]
    return shift_labels.reshape(-1)


def _finish_loss(loss: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    loss = loss.float()  # HF's loss is fp32 (it upcasts the logits); ours comes back in the logits' dtype
    if num_items_in_batch is not None:
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss


def seedcoder_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, num_items_in_batch=None,
                             ignore_index: int = -100, shift_labels: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """transformers' ForCausalLMLoss on our cross_entropy (no fp32 copy of the logits: the kernel reads them in
    their dtype and accumulates in fp32). Mean over non-ignored tokens, or sum / num_items_in_batch when given."""
    target = _shift_labels(labels, shift_labels, ignore_index).to(logits.device)
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = _kernel("cross_entropy", "cross_entropy")(logits.reshape(-1, vocab_size), target, ignore_index=ignore_index,
                                                     reduction=reduction)
    return _finish_loss(loss, num_items_in_batch)


def seedcoder_fused_causal_lm_loss(hidden_states: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor,
                                   num_items_in_batch=None, ignore_index: int = -100,
                                   shift_labels: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """The same loss computed from the last hidden states and the lm_head weight (V, H), without logits."""
    target = _shift_labels(labels, shift_labels, ignore_index).to(hidden_states.device)
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = _kernel("fused_linear_cross_entropy", "fused_linear_cross_entropy")(
        hidden_states.reshape(-1, hidden_states.shape[-1]), lm_head_weight, target, ignore_index=ignore_index,
        reduction=reduction)
    return _finish_loss(loss, num_items_in_batch)


def _loss_function_property():
    """LlamaForCausalLM.loss_function in global mode: ours, unless a loss function was set on the instance."""

    def getter(self):
        own = self.__dict__.get("_loss_function")
        return own if own is not None else seedcoder_causal_lm_loss

    def setter(self, value):
        self._loss_function = value

    return property(getter, setter)


def _unfused_forward():
    cls = _modeling_llama().LlamaForCausalLM
    return _ORIGINALS.get((cls, "forward"), cls.forward)


@functools.cache
def _forward_parameter_names(forward) -> tuple[str, ...]:
    """Named parameters of HF's forward in positional order, without self (read once, when patching: inspect is
    no code for torch.compile to trace). transformers renamed some (past_key_values -> cache), hence not hard-coded."""
    params = inspect.signature(forward).parameters.values()  # follows __wrapped__ through HF's decorators
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))[1:]


def _fused_linear_ce_forward(self, *args, **kwargs):
    """LlamaForCausalLM.forward that, in training with labels, never materialises the logits."""
    original = _unfused_forward()
    names = _FORWARD_NAMES.get("names") or _forward_parameter_names(original)
    if len(args) > len(names):
        raise TypeError(f"forward() takes at most {len(names)} positional arguments ({len(args)} given)")
    arguments = dict(zip(names, args))
    arguments.update(kwargs)
    extra = {k: v for k, v in arguments.items() if k not in names}  # HF passes these to the model and to the loss
    labels = arguments.pop("labels", None)
    shift_labels = extra.get("shift_labels")
    lm_head = self.get_output_embeddings()
    if not (self.training and (labels is not None or shift_labels is not None)) or getattr(lm_head, "bias", None) is not None:
        return original(self, *args, **kwargs)

    logits_to_keep = arguments.pop("logits_to_keep", 0)
    return_dict = arguments.pop("return_dict", None)  # a parameter in 4.x, a kwarg in 5.x
    extra.pop("return_dict", None)
    outputs = getattr(self, self.base_model_prefix)(**arguments)
    hidden_states = outputs[0]
    keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep  # HF's slice_logits_to_keep
    hidden_states = hidden_states[:, keep, :]
    if hidden_states.dtype == lm_head.weight.dtype:
        loss_kwargs = {k: v for k, v in extra.items() if k != "shift_labels"}
        loss = seedcoder_fused_causal_lm_loss(hidden_states, lm_head.weight, labels if labels is not None else shift_labels,
                                              shift_labels=shift_labels, **loss_kwargs)
    else:  # mixed dtypes (the fused kernel takes one dtype): HF's unfused computation from the same hidden states
        loss = self.loss_function(logits=lm_head(hidden_states), labels=labels, vocab_size=self.config.vocab_size, **extra)

    from transformers.modeling_outputs import CausalLMOutputWithPast

    # the base model's outputs besides last_hidden_state (cache / past_key_values, hidden_states, attentions) are
    # fields of CausalLMOutputWithPast too, under the same names in the same transformers version
    carried = {k: v for k, v in outputs.items() if k != "last_hidden_state"}
    output = CausalLMOutputWithPast(loss=loss, logits=None, **carried)
    if return_dict is None:
        return_dict = getattr(self.config, "return_dict", True)
    return output if return_dict else output.to_tuple()


# ------------------------------------------------------------------------------------------ patching
def _patch_global(owner, name: str, value) -> None:
    key = (owner, name)
    if key not in _ORIGINALS:
        _ORIGINALS[key] = owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, value)


def _install_rotary_dispatcher(modeling_llama) -> None:
    """Put the dispatcher in place of HF's function, once; it calls HF's function for calls it does not route.
    It stays installed (inert unless routed) so that instance patches survive a global revert."""
    if modeling_llama.apply_rotary_pos_emb is not _apply_rotary_pos_emb:
        _RotaryRouting.hf = modeling_llama.apply_rotary_pos_emb
        modeling_llama.apply_rotary_pos_emb = _apply_rotary_pos_emb


def apply_seedcoder_kernels_to_llama(model: torch.nn.Module | None = None, *, rms_norm: bool = True, rotary: bool = True,
                                     cross_entropy: bool = True, fused_linear_cross_entropy: bool = False) -> None:
    """Swap our kernels into transformers' Llama. model=None: every Llama model (classes patched);
    model=an instance (LlamaForCausalLM or LlamaModel): only that model's modules.

    fused_linear_cross_entropy=True: in training with labels, the loss comes from hidden states and lm_head.weight
    without logits (output.logits is None); cross_entropy then still serves eval / no-fusion calls.
    """
    ml = _modeling_llama()
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a transformers Llama model (torch.nn.Module), got {type(model).__name__}")
    for wanted, module in [(rms_norm, "rms_norm"), (rotary, "rotary"), (cross_entropy, "cross_entropy"),
                           (fused_linear_cross_entropy, "fused_linear_cross_entropy")]:
        if wanted:
            _kernel(module, "__name__")  # import now: a missing kernel fails here, and compiled code never imports
    if rotary:
        _install_rotary_dispatcher(ml)

    if model is None:
        if rms_norm:
            _patch_global(ml.LlamaRMSNorm, "forward", _rms_norm_forward)
        if rotary:
            _RotaryRouting.global_on = True
        if cross_entropy:
            _patch_global(ml.LlamaForCausalLM, "loss_function", _loss_function_property())
        if fused_linear_cross_entropy:
            _FORWARD_NAMES["names"] = _forward_parameter_names(_unfused_forward())
            _patch_global(ml.LlamaForCausalLM, "forward", _fused_linear_ce_forward)
        return

    for module in model.modules():
        if rms_norm and isinstance(module, ml.LlamaRMSNorm):
            module.forward = types.MethodType(_rms_norm_forward, module)
        if rotary and isinstance(module, ml.LlamaAttention):
            module.forward = types.MethodType(_attention_forward_with_our_rotary, module)
        if isinstance(module, ml.LlamaForCausalLM):
            if cross_entropy:
                module.loss_function = seedcoder_causal_lm_loss
            if fused_linear_cross_entropy:
                _FORWARD_NAMES["names"] = _forward_parameter_names(_unfused_forward())
                module.forward = types.MethodType(_fused_linear_ce_forward, module)


def revert_seedcoder_kernels_for_llama() -> None:
    """Undo the global patch: HF's classes and routing come back. (Instance patches live and die with their model;
    the rotary dispatcher stays in modeling_llama for them, passing every other call to HF's function.)"""
    for (owner, name), value in reversed(list(_ORIGINALS.items())):
        if value is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, value)
    _ORIGINALS.clear()
    _RotaryRouting.global_on = False

"""seedcoder.kernels: Triton kernels for LLM training, importable with only torch and triton.

    from seedcoder.kernels import rms_norm, apply_rotary, cross_entropy, fused_linear_cross_entropy, flash_attention

Each op family lives in one file (Triton kernels, the torch reference, the autograd function and its
torch custom ops). CUDA tensors run the kernels; CPU tensors run the torch reference, or the kernels in
Triton's interpreter under TRITON_INTERPRET=1. The public functions share their modules' names (as in
quack): import the modules themselves with importlib.import_module("seedcoder.kernels.rms_norm").
"""

from .cross_entropy import cross_entropy, cross_entropy_reference
from .flash_attention import flash_attention, flash_attention_reference
from .fused_linear_cross_entropy import fused_linear_cross_entropy, fused_linear_cross_entropy_reference
from .rms_norm import rms_norm, rms_norm_reference
from .rotary import apply_rotary, rotary_cos_sin, rotary_reference

__all__ = [
    "apply_rotary",
    "cross_entropy",
    "cross_entropy_reference",
    "flash_attention",
    "flash_attention_reference",
    "fused_linear_cross_entropy",
    "fused_linear_cross_entropy_reference",
    "rms_norm",
    "rms_norm_reference",
    "rotary_cos_sin",
    "rotary_reference",
]

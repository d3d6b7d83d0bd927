"""seedcoder.kernels: Triton kernels for LLM training, importable with only torch and triton.

    from seedcoder.kernels import rms_norm, apply_rotary, cross_entropy, fused_linear_cross_entropy, flash_attention

Each op family lives in one file (Triton kernels, the torch reference, the autograd function and its
torch custom ops). CUDA tensors run the kernels; CPU tensors run the torch reference, or the kernels in
Triton's interpreter under TRITON_INTERPRET=1. The public functions share their modules' names (as in
quack): import the modules themselves with importlib.import_module("seedcoder.kernels.rms_norm").

The op files live in the repository's top-level kernels/ folder, beside tests/ and benchmarks/. That folder has no
__init__.py on purpose: a regular package named `kernels` on sys.path (the repository root is there for pytest and
`python -m benchmarks.x`) would shadow Hugging Face's `kernels`, which transformers imports. A wheel carries the op
files in this package's own folder (setup.py); a checkout adds kernels/ to this package's search path.
"""

import os as _os

_here = _os.path.dirname(_os.path.abspath(__file__))
if not _os.path.isfile(_os.path.join(_here, "rms_norm.py")):
    __path__.append(_os.path.join(_os.path.dirname(_os.path.dirname(_here)), "kernels"))

from .cross_entropy import cross_entropy, cross_entropy_reference  # noqa: E402
from .flash_attention import flash_attention, flash_attention_reference  # noqa: E402
from .fused_linear_cross_entropy import fused_linear_cross_entropy, fused_linear_cross_entropy_reference  # noqa: E402
from .rms_norm import rms_norm, rms_norm_reference  # noqa: E402
from .rotary import apply_rotary, rotary_cos_sin, rotary_reference  # noqa: E402

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

"""Two bugs of Triton 3.6's CPU interpreter, patched for the test process (a GPU is unaffected).

1. A scalar becomes int() of a 1-element array, which NumPy >= 2.4 rejects, so `range(runtime_scalar)` in a
   kernel fails (triton-lang/triton#9171).
2. Float downcasts (fp32 -> bf16/fp16 via .to()) truncate instead of rounding to nearest even as the GPU does:
   an extra ulp of error on every low-precision output, which the 2x rule can catch.
"""

from __future__ import annotations

import numpy as np
import torch

_TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_BITS_NP = {16: np.uint16, 32: np.uint32}
_BITS_TORCH = {16: torch.int16, 32: torch.int32}


def apply() -> None:
    import triton.runtime.interpreter as interpreter
    from triton._C.libtriton import ir

    original_patch, original_convert = interpreter._patch_lang_tensor, interpreter._convert_float

    def patch_lang_tensor(tensor, scope):
        original_patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    def convert_float(data, src_dtype, dst_dtype, rounding_mode):
        if (src_dtype.name not in _TORCH_DTYPE or dst_dtype.name not in _TORCH_DTYPE
                or rounding_mode not in (None, ir.ROUNDING_MODE.RTNE)):
            return original_convert(data, src_dtype, dst_dtype, rounding_mode)
        src_bits, dst_bits = src_dtype.primitive_bitwidth, dst_dtype.primitive_bitwidth
        raw = np.ascontiguousarray(data).view(_BITS_NP[src_bits]).astype(np.int64)
        raw = raw - (raw >= 2 ** (src_bits - 1)) * 2 ** src_bits  # reinterpret as signed for torch's int types
        src = torch.from_numpy(raw).to(_BITS_TORCH[src_bits]).view(_TORCH_DTYPE[src_dtype.name])
        out = src.to(_TORCH_DTYPE[dst_dtype.name]).view(_BITS_TORCH[dst_bits]).numpy()
        return out.view(_BITS_NP[dst_bits])

    if int(np.__version__.split(".")[0]) >= 2:
        interpreter._patch_lang_tensor = patch_lang_tensor
    interpreter._convert_float = convert_float

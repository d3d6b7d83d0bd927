"""seedcoder.kernels: Triton kernels for LLM training, importable with only torch and triton.

    from seedcoder.kernels import rms_norm, apply_rotary, cross_entropy, fused_linear_cross_entropy

Each op family lives in one file (Triton kernels, the torch reference, the autograd function and its
torch custom ops). CUDA tensors run the kernels; CPU tensors run the torch reference, or the kernels in
Triton's interpreter under TRITON_INTERPRET=1.
"""

# (the op imports are added as each op family lands)

"""The optional CUDA C++ extension (csrc/cuda, built by setup.py on a machine with CUDA torch and nvcc)."""

from __future__ import annotations

import functools

import torch


@functools.cache
def cuda_ops():
    """torch.ops.seedcoder_cuda, loading seedcoder._cuda first; a clear error when it was not built."""
    try:
        import seedcoder._cuda  # noqa: F401  (registers the ops)
    except ImportError as e:
        raise RuntimeError(
            "backend='cuda' needs the CUDA extension seedcoder._cuda, which is not built here: it is built by "
            "`pip install --no-build-isolation -e .` on a machine with a CUDA build of torch and nvcc "
            f"(torch {torch.__version__}, torch.version.cuda={torch.version.cuda}); use backend='triton' instead"
        ) from e
    return torch.ops.seedcoder_cuda

"""Build: the Python package, `kernels/` installed as `seedcoder.kernels`, and the CUDA extension.

The CUDA extension (`seedcoder._cuda`, sources in csrc/cuda/) is built only where torch has CUDA and nvcc
is present (the GPU box). On a CPU-only torch it is skipped and the Triton kernels / torch references serve.
Install with `pip install --no-build-isolation -e .` so the build sees the torch already installed
(build isolation would download a CUDA torch of several GB).
"""

import glob
import os
import shutil

from setuptools import setup


def cuda_extensions():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        return [], {}
    if torch.version.cuda is None or CUDA_HOME is None or shutil.which("nvcc", path=os.path.join(CUDA_HOME, "bin")) is None:
        print("seedcoder: CPU-only torch or no nvcc, skipping the CUDA extension (Triton kernels still work)")
        return [], {}
    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) + glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    nvcc_flags = ["-O3", "--use_fast_math", "-std=c++17", "-lineinfo"]
    if archs is None:  # default: the two targets we tune for, plus the local card
        nvcc_flags += ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90a,code=sm_90a"]
    ext = CUDAExtension(
        name="seedcoder._cuda",
        sources=sources,
        include_dirs=[os.path.join(here, "csrc", "cuda")],
        extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": nvcc_flags},
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()

setup(
    name="seedcoder",
    version="0.1.0",
    description="Seed-Coder reproduction: model-centric code data curation and LLM training on our own kernels",
    python_requires=">=3.10",
    packages=["seedcoder", "seedcoder.kernels"],
    package_dir={"seedcoder": "seedcoder", "seedcoder.kernels": "kernels"},
    install_requires=["torch>=2.6", "triton>=3.6", "numpy"],
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.6", "transformers>=4.50", "safetensors", "liger-kernel"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)

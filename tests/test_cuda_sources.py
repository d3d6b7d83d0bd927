"""The CUDA C++ kernels compile with nvcc for sm_80 and sm_90a through CMakeLists.txt (no GPU needed) without
register spills, and the torch bindings compile against torch's headers (syntax check: a CPU torch has no
CUDA libraries to link). Slow (2-4 minutes of nvcc and g++ on 2 cores): `make test-slow` runs them, `make test`
leaves them out."""

import glob
import os
import re
import shutil
import subprocess
import sysconfig

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
BINDINGS = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))
pytestmark = pytest.mark.slow
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("cmake") is None,
                                reason="nvcc or cmake not installed")


@needs_nvcc
def test_cuda_kernels_compile_for_sm80_and_sm90a_without_spills(tmp_path):
    assert CUDA_SOURCES, "no csrc/cuda/*.cu sources"
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", ROOT, "-B", str(build)], check=True, capture_output=True, text=True)
    proc = subprocess.run(["cmake", "--build", str(build), "-j2", "--target", "seedcoder_cuda_kernels"],
                          capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    for arch in ("sm_80", "sm_90a"):
        assert f"for '{arch}'" in log, f"ptxas compiled nothing for {arch}:\n{log[-3000:]}"
    # ptxas -v: "Compiling entry function '<mangled>' for 'sm_90a'" ... "N bytes spill stores, M bytes spill loads"
    spills = [m.group(0) for m in re.finditer(r"[1-9]\d* bytes spill (stores|loads)", log)]
    assert not spills, "register spills in CUDA kernels:\n" + "\n".join(re.findall(r".*(?:Compiling entry|spill).*", log))


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
@pytest.mark.skipif(not os.path.isdir("/usr/local/cuda/include"), reason="CUDA headers not at /usr/local/cuda/include")
@pytest.mark.parametrize("source", BINDINGS, ids=os.path.basename)
def test_torch_bindings_compile(source):
    torch_inc = os.path.join(os.path.dirname(torch.__file__), "include")
    cmd = ["g++", "-std=c++17", "-fsyntax-only", f"-I{torch_inc}", f"-I{torch_inc}/torch/csrc/api/include",
           "-I/usr/local/cuda/include", f"-I{sysconfig.get_paths()['include']}", f"-I{ROOT}/csrc/cuda",
           "-DTORCH_EXTENSION_NAME=_cuda", "-DTORCH_API_INCLUDE_EXTENSION_H", source]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{os.path.basename(source)} does not compile:\n{proc.stderr[-4000:]}"


def test_bindings_exist_for_every_kernel_source():
    stems = {os.path.basename(p)[:-3] for p in CUDA_SOURCES}
    ops = {os.path.basename(p)[: -len("_ops.cpp")] for p in BINDINGS if p.endswith("_ops.cpp")}
    assert stems == ops, f"each csrc/cuda/<op>.cu needs csrc/cuda/<op>_ops.cpp (kernels {sorted(stems)}, bindings {sorted(ops)})"

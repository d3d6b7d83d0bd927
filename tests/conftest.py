"""Test setup: without a GPU the Triton kernels run in Triton's CPU interpreter.

TRITON_INTERPRET must be set before the kernels are defined (triton.jit reads it), so it is set here,
before any test module imports seedcoder.kernels. SEEDCODER_POISON_OUTPUTS=1 makes every kernel output
start as NaN, so an unwritten element fails a test.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
    import interpreter_fixes

    interpreter_fixes.apply()
os.environ["SEEDCODER_POISON_OUTPUTS"] = "1"

DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture
def device() -> torch.device:
    """Where kernel tests run: the GPU when there is one, else the CPU under TRITON_INTERPRET=1."""
    return DEVICE


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run `make gpu-check` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny-model tests (`pytestmark = pytest.mark.usefixtures(...)`):
    tiny matmuls only lose from thread hand-offs, and far more so on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

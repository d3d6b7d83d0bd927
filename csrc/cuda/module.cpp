// The Python module seedcoder._cuda. Importing it registers the ops of the torch library `seedcoder_cuda`
// (each <op>_ops.cpp adds its ops with TORCH_LIBRARY_FRAGMENT); Python reaches them as
// torch.ops.seedcoder_cuda.<name>. See kernels/_cuda_ext.py.
#include <torch/extension.h>

TORCH_LIBRARY(seedcoder_cuda, m) {}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "seedcoder CUDA C++ kernels (ops live in torch.ops.seedcoder_cuda)"; }

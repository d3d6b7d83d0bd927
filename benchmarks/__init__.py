"""seedcoder benchmarks: `python -m benchmarks.kernels` (kernel throughput vs peers); shared machinery in common.py."""

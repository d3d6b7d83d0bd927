"""seedcoder: a hand-optimized training stack for Seed-Coder-style code LLMs.

Importing the package is cheap on purpose: `seedcoder.kernels` needs only torch and triton,
and the trainer's dependencies are imported by the modules that use them.
"""

__version__ = "0.1.0"

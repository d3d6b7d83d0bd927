"""`from seedcoder.kernels import ...` needs only torch and triton: it imports no other third-party module,
and works when the trainer's dependencies cannot be imported at all."""

import json
import os
import subprocess
import sys

PUBLIC = "rms_norm, apply_rotary, cross_entropy, fused_linear_cross_entropy"

PROBE = f"""
import json, sys
baseline = set(sys.modules)
import torch, triton
after_deps = set(sys.modules)
from seedcoder.kernels import {PUBLIC}
new = {{m.split('.')[0] for m in set(sys.modules) - after_deps}}
print(json.dumps(sorted(new)))
"""

# Third-party packages the trainer and tests use; the kernels must not need any of them.
TRAINER_DEPS = ["numpy", "transformers", "safetensors", "tokenizers", "liger_kernel", "tqdm", "tensorboard", "pyarrow", "yaml"]


def run_probe(block: list[str]) -> subprocess.CompletedProcess:
    blocker = "".join(f"sys.modules[{name!r}] = None\n" for name in block)  # None in sys.modules makes import fail
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a user's import, not the test interpreter
    return subprocess.run([sys.executable, "-c", "import sys\n" + blocker + PROBE], env=env, capture_output=True, text=True,
                          timeout=300)


def test_kernels_import_adds_only_seedcoder_modules():
    proc = run_probe([])
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    stdlib = set(sys.stdlib_module_names)
    assert new - stdlib - {"seedcoder"} == set(), f"seedcoder.kernels imported third-party modules: {sorted(new - stdlib)}"


def test_kernels_import_with_trainer_dependencies_unavailable():
    proc = run_probe(TRAINER_DEPS)
    assert proc.returncode == 0, proc.stderr[-3000:]

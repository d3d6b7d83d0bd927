"""Post-training stages on the pretraining stack: SFT (`seedcoder.posttrain.sft`), DPO (`seedcoder.posttrain.dpo`),
GRPO (`seedcoder.posttrain.grpo`, its rollouts in-process or from a server: `seedcoder.posttrain.rollout_server`);
DPO and GRPO run in one process or sharded over torchrun's ranks (`seedcoder.posttrain.policy`).

Submodules are imported on use (`from seedcoder.posttrain.sft import build_sft_dataset`); importing the package
alone loads nothing heavy. The SFT stage runs as `python -m seedcoder.train sft --config configs/sft_tiny_demo.toml`.
"""

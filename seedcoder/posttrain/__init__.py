"""Post-training stages on the pretraining stack: SFT (`seedcoder.posttrain.sft`), DPO (`seedcoder.posttrain.dpo`).

Submodules are imported on use (`from seedcoder.posttrain.sft import build_sft_dataset`); importing the package
alone loads nothing heavy. The SFT stage runs as `python -m seedcoder.train sft --config configs/sft_tiny_demo.toml`.
"""

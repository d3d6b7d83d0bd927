"""`make demo` (`python -m seedcoder.demo`): the main job, end to end, on this interpreter's standard library.

- `pretrain.py`: steps 1-6 (data -> tokenizer -> shards, pretraining interrupted and resumed, sampling, curation,
  pretraining on the curated shards) and `main`, which runs all ten steps and writes summary.json;
- `posttrain.py`: steps 7-10 (SFT -> DPO -> RL -> HumanEval) on the model of step 3; alone:
  `python -m seedcoder.demo.posttrain --out runs/demo`;
- `runs.py`: the torchrun command line of a training stage, and whether a run's loss fell (used by both).
"""

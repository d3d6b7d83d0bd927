"""Experiments that measure whether a part of the stack does what it claims, end to end, with a report.

* `filter_ablation` (`seedcoder experiment filter-ablation --config configs/ablation_filter_demo.toml`): does
  model-based quality filtering help? The same model, token budget, seeds and schedule trained on (a) every file
  that passed the rules, (b) a random drop, (c) the scorer's bottom fraction dropped, (d) the oracle's bottom
  fraction dropped; per-token loss on HumanEval and on held-out files, pass@k on easy problems
  (docs/experiments.md).
* `self_curation` (`seedcoder experiment self-curate`): the self-curation loop in rounds (its own module).
* `corpus`: the filter ablation's corpus with real quality spread, sampled offline from the standard library and the
  installed site-packages, decontaminated, with held-out files.
* `arms`: the arms' datasets (the same number of files dropped by each criterion).
* `evals`: per-token loss of a checkpoint on documents, HumanEval documents, the easy pass@k problems.
* `report`: results.json, report.md and the curves PNG from the finished runs.
"""

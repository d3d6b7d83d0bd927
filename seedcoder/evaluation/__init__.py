"""Code evaluation: HumanEval pass@k, MBPP-style and stdin/stdout problems, single-line FIM, scored in the sandbox.

    from seedcoder.evaluation import OpenAIGenerator, evaluate_problems, load_humaneval
    report = evaluate_problems(load_humaneval(), OpenAIGenerator("http://127.0.0.1:8000/v1", "m"), n=1, ks=[1])

Where each concern lives:

* `problems.py`: the problems (HumanEval, MBPP-style and stdio JSONL, FIM lines; their file schemas) and how a
  completion becomes sandbox jobs;
* `generators.py`: where completions come from (an OpenAI-compatible server, our embedded engine, the references);
* `harness.py`: the run (batches to the sandbox), pass@k, code taken from fenced answers, the outputs and the table;
* `cli.py`: `seedcoder eval humaneval|mbpp|stdio|fim-line`.

Nothing here imports torch: the embedded engine is loaded only by `EngineGenerator.from_checkpoint`.
"""

from seedcoder.evaluation.generators import (
    EngineGenerator,
    EvaluationError,
    Generator,
    OpenAIGenerator,
    ReferenceGenerator,
)
from seedcoder.evaluation.harness import (
    evaluate_fim_line,
    evaluate_problems,
    format_table,
    humaneval_code,
    mean_pass_at_k,
    pass_at_k,
)
from seedcoder.evaluation.problems import (
    EvalDataError,
    Problem,
    break_one_line,
    extract_code_block,
    fenced_blocks,
    fim_exact_match,
    fim_line_tasks,
    load_humaneval,
    load_mbpp,
    load_stdio,
    spm_prompt,
    truncate_at_stop,
)

__all__ = [
    "EngineGenerator", "EvalDataError", "EvaluationError", "Generator", "OpenAIGenerator", "Problem",
    "ReferenceGenerator", "break_one_line", "evaluate_fim_line", "evaluate_problems", "extract_code_block",
    "fenced_blocks", "fim_exact_match", "fim_line_tasks", "format_table", "humaneval_code", "load_humaneval",
    "load_mbpp", "load_stdio", "mean_pass_at_k", "pass_at_k", "spm_prompt", "truncate_at_stop",
]

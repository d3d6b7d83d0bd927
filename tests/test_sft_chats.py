"""The sft_chats step (seedcoder.curate.sft_chats): messages with the system prompt, weights from difficulty,
chats.jsonl; `seedcoder data sft build` reading its output directly (weights -> shard scores ln(weight)); and the
report's SFT section over a small SFT line (self-correction rounds, filter, decontaminate, chats)."""

from __future__ import annotations

import json
import math
import os

import pytest
from sft_script_server import ScriptServer
from test_sft_filter import INLINE, generator, make_dataset, rows_of, sft_row

from seedcoder.chat_template import DEFAULT_SYSTEM_PROMPT
from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate import sft_chats, sft_filter
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.pipeline import run_step
from seedcoder.curate.report import build_report
from seedcoder.curate.step import StepContext
from seedcoder.data.manifest import load_manifest
from seedcoder.data.shard_reader import ShardReader
from seedcoder.posttrain.sft import SFTDataError, build_sft_dataset
from seedcoder.tokenizer import train_tokenizer

DIFFICULTIES = [3.0, 4.0, 6.5, 7.0, 10.0, None]


def run(module, out, source, options, name=None):
    name = name or module.STEP.name
    ctx = StepContext(kind=module.STEP.name, name=name, out_dir=str(out), options=module.STEP.check_options(options),
                      inputs={"in": str(source)}, executor=INLINE)
    return module.STEP.run(ctx)


def filtered_rows():
    """Rows as sft_filter keeps them, with difficulties spread over the weight table, and one without a response."""
    rows = []
    for number, difficulty in enumerate(DIFFICULTIES):
        row = sft_row(number)
        rows.append({**row, "response_syntax_ok": True, "judge_score": 8.0, "topic": "arithmetic",
                     "difficulty": difficulty})
    rows.append({**sft_row(9, response=""), "response_syntax_ok": None, "judge_score": None, "topic": None,
                 "difficulty": 5.0})
    return rows


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    rows = filtered_rows()
    corpus = [DEFAULT_SYSTEM_PROMPT, "system\nuser\nassistant\n"] + [row["text"] + row["response"] for row in rows]
    train_tokenizer(corpus * 3, str(path), vocab_size=400, min_frequency=1)
    return str(path)


def test_messages_weights_and_chats_jsonl(tmp_path):
    rows = filtered_rows()
    source = make_dataset(tmp_path / "filtered", [rows[:3], rows[3:]], step="sft_filter")
    out = tmp_path / "chats"
    success = run(sft_chats, out, source, {})
    kept = rows_of(out)
    assert [row["id"] for row in kept] == [f"s{n:03d}" for n in range(6)]
    assert [row["weight"] for row in kept] == [1.0, 2.0, 2.0, 4.0, 4.0, 1.0]  # {0: 1, 4: 2, 7: 4}; untagged: 1
    assert [row["difficulty"] for row in kept] == DIFFICULTIES
    for row, original in zip(kept, rows):
        assert json.loads(row["messages"]) == [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                                               {"role": "user", "content": original["text"]},
                                               {"role": "assistant", "content": original["response"]}]
        assert row["topic"] == "arithmetic" and row["judge_score"] == 8.0  # earlier columns kept
    assert [row["drop_reason"] for row in rows_of(out, dropped=True)] == ["empty_chat: the row has no response"]
    with open(out / sft_chats.CHATS_FILE, encoding="utf-8") as file:
        lines = [json.loads(line) for line in file]
    assert lines == [{"messages": json.loads(row["messages"]), "weight": row["weight"], "difficulty": row["difficulty"],
                      "id": row["id"]} for row in kept]
    assert success["sft_chats"] == {"file": "chats.jsonl", "rows": 6, "rows_per_weight": {"1": 2, "2": 2, "4": 2}}
    stamp = os.stat(out / sft_chats.CHATS_FILE).st_mtime_ns
    run(sft_chats, out, source, {})  # finished: skipped
    assert os.stat(out / sft_chats.CHATS_FILE).st_mtime_ns == stamp

    other = tmp_path / "other"
    run(sft_chats, other, source, {"system_prompt": "", "weight_by_difficulty": {"0": 0.5, "6.5": 3}})
    kept = rows_of(other)
    assert [row["weight"] for row in kept] == [0.5, 0.5, 3.0, 3.0, 3.0, 1.0]
    assert [message["role"] for message in json.loads(kept[0]["messages"])] == ["user", "assistant"]


def test_bad_options_and_inputs(tmp_path):
    def check(options):
        return sft_chats.STEP.check_options(options, name="sft_chats")

    for table, pattern in [({}, "needs an entry for difficulty 0"), ({"0": 1, "x": 2}, "key 'x' is not a difficulty"),
                           ({"0": 1, "11": 2}, "key '11' is outside 0..10"),
                           ({"0": 0}, r"weight_by_difficulty.0: a weight must be a finite number > 0"),
                           ({"4": 2.0}, "needs an entry for difficulty 0")]:
        with pytest.raises(ConfigError, match=r"\[sft_chats\]: weight_by_difficulty"):
            check({"weight_by_difficulty": table})
        with pytest.raises(ConfigError, match=pattern):
            check({"weight_by_difficulty": table})
    with pytest.raises(ConfigError, match="'sft_chats.weights' \\(did you mean 'sft_chats.weight_by_difficulty'"):
        check({"weights": {"0": 1}})
    assert check({"weight_by_difficulty": {"0": 1, "5": 2}})["weight_by_difficulty"] == {"0": 1.0, "5": 2.0}
    files = make_dataset(tmp_path / "files", [[{"id": "f", "repo": "r", "path": "a.py", "language": "python",
                                                "text": "x = 1\n", "source": "file"}]])
    with pytest.raises(CurateStateError, match="no 'response' column"):
        run(sft_chats, tmp_path / "out", files, {})


def test_sft_build_reads_the_step_output_and_scores_are_log_weights(tmp_path, tokenizer_path):
    source = make_dataset(tmp_path / "filtered", [filtered_rows()], step="sft_filter")
    chats = tmp_path / "chats"
    run(sft_chats, chats, source, {})
    report = build_sft_dataset([str(chats)], tmp_path / "sft", tokenizer=tokenizer_path)
    assert report["documents"] == 6 and report["bad_rows"] == 0
    manifest = load_manifest(str(tmp_path / "sft"))
    assert manifest["sources"]["sft"]["documents"] == 6
    documents = []
    for shard in manifest["shards"]:
        with ShardReader(str(tmp_path / "sft" / shard["path"])) as reader:
            assert reader.has_loss_mask
            documents += [(reader.metadata(i), float(reader.scores[i])) for i in range(len(reader))]
    weights = {row["id"]: row["weight"] for row in rows_of(chats)}
    assert [metadata["id"] for metadata, _ in documents] == list(weights)
    assert [(metadata["file"], metadata["line"]) for metadata, _ in documents] == \
        [("part-00000.parquet", n) for n in range(1, 7)]
    assert [score for _, score in documents] == pytest.approx([math.log(weight) for weight in weights.values()])
    assert [metadata["weight"] for metadata, _ in documents] == list(weights.values())
    # the same conversations from chats.jsonl make the same documents
    again = build_sft_dataset([str(chats / sft_chats.CHATS_FILE)], tmp_path / "sft_jsonl", tokenizer=tokenizer_path)
    assert (again["documents"], again["tokens"], again["loss_tokens"]) == \
        (report["documents"], report["tokens"], report["loss_tokens"])

    with pytest.raises(SFTDataError, match="not a finished curation dataset"):
        build_sft_dataset([str(tmp_path)], tmp_path / "bad", tokenizer=tokenizer_path)
    with pytest.raises(SFTDataError, match="no 'messages' column"):
        build_sft_dataset([source], tmp_path / "bad", tokenizer=tokenizer_path)


def test_the_report_has_an_sft_section(tmp_path):
    shards = [[sft_row(0), sft_row(1, "easy"), sft_row(2)], [sft_row(3, "bad_judge"), sft_row(4), sft_row(5)]]
    benchmark = tmp_path / "bench.jsonl"
    solution = "def secret_benchmark_function(alpha, beta, gamma):\n    return alpha * beta + gamma - alpha / beta\n"
    benchmark.write_text(json.dumps({"task_id": "Mine/0", "prompt": solution}) + "\n")
    shards[1][2]["response"] = f"Like this:\n\n```python\n{solution}```\n"  # s005's response copies the benchmark
    rounds = {"0": 3, "1": 2, "2": 1, "3": 0, "never": 2}
    corrected = make_dataset(tmp_path / "sft_self_correct", shards, step="sft_self_correct",
                             extra={"correction_rounds": rounds})
    with open(os.path.join(corrected, "self_correction.png"), "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n")  # the step's plot (its content is not the report's business)
    with ScriptServer() as server:
        filtered = tmp_path / "sft_filter"
        run(sft_filter, filtered, corrected, {"generator": generator(server)})
    decontaminated = str(tmp_path / "sft_decontaminate")
    run_step("decontaminate", out=decontaminated, inputs={"in": str(filtered)}, executor=INLINE,
             options={"humaneval": False, "files": [str(benchmark)], "columns": ["text", "response"]},
             name="sft_decontaminate")
    chats = tmp_path / "sft_chats"
    run(sft_chats, chats, decontaminated, {})
    files = make_dataset(tmp_path / "files", [[{"id": "f", "repo": "r", "path": "a.py", "language": "python",
                                                "text": "x = 1\n", "source": "file"}]], step="syntax")
    report_dir = tmp_path / "report"
    report = build_report([files, corrected, str(filtered), decontaminated, str(chats)], str(report_dir),
                          count_tokens=False, progress=False)
    sft = report["sft"]
    assert [(step["name"], step["step"], step["kept"], step["dropped"]) for step in sft["steps"]] == [
        ("sft_self_correct", "sft_self_correct", 6, 0), ("sft_filter", "sft_filter", 4, 2),
        ("sft_decontaminate", "decontaminate", 3, 1), ("sft_chats", "sft_chats", 3, 0)]  # not the files' syntax step
    assert sft["steps"][1]["drop_reasons"] == {"judge_low": 1, "low_difficulty": 1}
    assert sft["steps"][2]["drop_reasons"] == {"contaminated": 1}
    assert [row["drop_reason"] for row in rows_of(decontaminated, dropped=True)] == \
        ["contaminated: 10-gram overlap with benchmark item Mine/0 in response"]
    assert sft["correction_rounds"]["counts"] == rounds and sft["correction_rounds"]["plot"] == "self_correction.png"
    difficulty = sft["difficulty"]
    assert difficulty["step"] == "sft_chats" and difficulty["rows"] == 3 and difficulty["untagged"] == 0
    assert difficulty["counts"] == [0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0]
    assert difficulty["topics"] == [["arithmetic", 3]] and difficulty["distinct_topics"] == 1
    assert "sft_difficulty.png" in report["files"] and (report_dir / "sft_difficulty.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (report_dir / "report.md").read_text()
    section = markdown[markdown.index("## SFT synthesis"):]
    assert "| sft_filter | sft_filter | 4 | 2 | judge_low 1, low_difficulty 1 |" in section
    assert "| revisions | 0 | 1 | 2 | 3 | never |" in section and "| items | 3 | 2 | 1 | 0 | 2 |" in section
    assert "![self-correction rounds](../sft_self_correct/self_correction.png)" in section
    assert "| items | 0 | 0 | 0 | 0 | 0 | 3 | 0 | 0 | 0 | 0 | 0 |" in section
    assert "![difficulty](sft_difficulty.png)" in section and "| arithmetic | 3 |" in section
    assert json.loads((report_dir / "report.json").read_text())["sft"] == sft
    # a pipeline without SFT rows has no SFT section
    plain = build_report([files], str(tmp_path / "plain"), count_tokens=False, progress=False)
    assert plain["sft"] is None and "SFT synthesis" not in (tmp_path / "plain" / "report.md").read_text()
    assert ds.success_record(str(chats))["sft_chats"]["rows_per_weight"] == {"2": 3}  # difficulty 5 -> weight 2

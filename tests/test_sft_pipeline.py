"""configs/curate_sft_demo.toml end to end against the scripted generator (real HTTP): seeds whose snippets carry a
behaviour marker go through synthesis, dedup, decontamination, sandbox self-correction and the filters into chats
that `sft build` reads; the report counts every step, the self-correction rounds and the difficulties."""

import json
import os

from sft_script_server import ScriptServer

from seedcoder.curate.pipeline import run_pipeline
from seedcoder.posttrain.sft import build_sft_dataset
from seedcoder.tokenizer import train_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "curate_sft_demo.toml")
BEHAVIOURS = ("good", "broken_then_fixed", "never_fixed", "off_format", "easy", "bad_judge", "syntax", "prose")


def seed_files(folder):
    """One Python file per behaviour, its function's docstring carrying the marker."""
    os.makedirs(folder)
    for index, behaviour in enumerate(BEHAVIOURS):
        body = "\n".join(f"    total = total + {i}  # step {i}" for i in range(6))
        with open(os.path.join(folder, f"m{index}.py"), "w") as file:
            file.write(f'def f{index}(values):\n    """Sum the values (script:{behaviour})."""\n    total = 0\n{body}\n'
                       "    return total\n")


def test_the_sft_synthesis_config_end_to_end(tmp_path):
    seed_files(tmp_path / "seeds")
    out = tmp_path / "out"
    with ScriptServer() as server:
        generator = {"backend": "openai", "base_url": server.base_url, "timeout_s": 30, "max_retries": 0,
                     "cache_dir": str(out / "_generator_cache")}
        overrides = {"out": str(out), "workers": 1, "progress": False, "ingest.inputs": [str(tmp_path / "seeds")],
                     "sft_seeds.per_language": 20, "sft_self_correct.timeout_s": 5.0,
                     # the scripted instructions differ only in their marker: at 0.8 they are one near-duplicate
                     # cluster (they were, in a run at the config's threshold), which would leave one item to follow
                     "sft_near_dedup.threshold": 0.99,
                     **{f"{step}.generator": generator for step in ("sft_synthesize", "sft_self_correct", "sft_filter")}}
        results = run_pipeline(CONFIG, overrides=overrides)
        calls = sum(server.calls.values())
        assert run_pipeline(CONFIG, overrides=overrides)  # finished: nothing asked again
        assert sum(server.calls.values()) == calls

    def reasons(step):
        return {reason: count for reason, count in results[step]["totals"]["drop_reasons"].items()}

    assert results["sft_seeds"]["totals"]["kept_rows"] == len(BEHAVIOURS)
    assert reasons("sft_synthesize") == {"off_format": 1}
    assert reasons("sft_self_correct") == {"never_passed": 1}
    assert results["sft_self_correct"]["correction_rounds"] == {"0": 4, "1": 1, "2": 0, "never": 1}
    # script:syntax answered `respond` with a broken block, but its item is verifiable: the sandbox-verified solution
    # replaced that response, so the syntax filter has nothing left to drop
    assert reasons("sft_filter") == {"judge_low": 1, "low_difficulty": 1}
    assert all(results[step]["totals"]["dropped_rows"] == 0 for step in ("sft_exact_dedup", "sft_near_dedup"))
    kept = results["sft_chats"]["totals"]["kept_rows"]
    assert kept == 4  # good, broken_then_fixed, syntax and prose pass every filter

    chats = [json.loads(line) for line in (out / "sft_chats" / "chats.jsonl").read_text().splitlines()]
    assert len(chats) == kept
    for chat in chats:
        assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant"]
        assert chat["difficulty"] == 5.0 and chat["weight"] == 2.0  # weight_by_difficulty: 4 and up -> 2
    fixed = [chat for chat in chats if "script:broken_then_fixed" in chat["messages"][1]["content"]]
    assert fixed and "return a + b" in fixed[0]["messages"][2]["content"]  # the verified, revised solution

    report = (out / "report" / "report.md").read_text()
    for text in ("## SFT synthesis", "### Self-correction rounds", "### Difficulty", "off_format", "never_passed"):
        assert text in report
    assert (out / "report" / "sft_difficulty.png").read_bytes()[:4] == b"\x89PNG"

    # `sft build` reads the step's output directly
    texts = [m["content"] for chat in chats for m in chat["messages"]] * 4
    train_tokenizer(texts, str(tmp_path / "tokenizer.json"), vocab_size=400, min_frequency=1)
    report = build_sft_dataset([str(out / "sft_chats")], str(tmp_path / "sft"), tokenizer=str(tmp_path / "tokenizer.json"))
    assert report["documents"] == kept

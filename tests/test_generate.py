"""The generation engine (KV cache, continuous batching, sampling, stops, log-probs, loading) and the chat template.

A tiny byte-level BPE tokenizer and a random debug-preset model are built here from scratch; every check
compares the engine against an independent computation: the model's full forward pass, step by step.
"""

import importlib.util
import json
import math
import shutil

import pytest
import torch
from toy_models import toy_model, toy_tokenizer_file

from seedcoder.chat_template import (
    CHAT_TEMPLATE_JINJA,
    DEFAULT_SYSTEM_PROMPT,
    ChatTemplateError,
    render_chat,
    tokenize_chat,
)
from seedcoder.checkpoint import CheckpointError
from seedcoder.data.tokenizer_tables import BOS_TOKEN, EOS_TOKEN
from seedcoder.generate import Engine, GenerationError, load_engine
from seedcoder.model import Transformer, model_config
from seedcoder.sampling import (
    SamplingParams,
    SamplingParamsError,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    process_logits,
    sample_tokens,
)
from seedcoder.vllm_engine import BackendUnavailable, VLLMEngine, write_hf_tokenizer_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "import os\nimport sys\n\nfor name in os.listdir('.'):\n    print(name, file=sys.stderr)\n",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
] * 8
PROMPTS = ["def add(a, b):", "import os\n", "class Point:\n    def __init__(self, x, y):\n        self.x = x\n", "fo"]



@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return toy_tokenizer_file(tmp_path_factory.mktemp("tokenizer"), CORPUS, vocab_size=320)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_path))


@pytest.fixture(scope="module")
def model(tokenizer):
    return toy_model(tokenizer.get_vocab_size(), seed=0)


def engine(model, tokenizer, **kwargs):
    return Engine(model, tokenizer, **kwargs)


def encode(tokenizer, text):
    return tokenizer.encode(text).ids


@torch.no_grad()
def full_logits(model, ids):
    """Raw fp32 logits of the full forward pass over ids: (len(ids), V)."""
    return model(torch.tensor([ids]))[0].float()


def penalized(logits, seen_ids, penalty):
    """The repetition penalty written out independently: per seen token, z / p if z > 0 else z * p."""
    logits = logits.clone()
    for token in set(seen_ids):
        logits[token] = logits[token] / penalty if logits[token] > 0 else logits[token] * penalty
    return logits


def reference_greedy(model, prompt, max_tokens, penalty=1.0, stop_ids=()):
    """Step-by-step argmax of the full forward pass (no cache); also returns the smallest top-1/top-2 gap."""
    ids, out, gap = list(prompt), [], math.inf
    for _ in range(max_tokens):
        logits = penalized(full_logits(model, ids)[-1], ids, penalty)
        top2 = logits.topk(2).values
        gap = min(gap, float(top2[0] - top2[1]))
        token = int(logits.argmax())
        out.append(token)
        ids.append(token)
        if token in stop_ids:
            break
    return out, gap


# ------------------------------------------------------------------------------------------ cache correctness
def test_greedy_equals_full_forward_argmax_for_prompts_of_different_lengths(model, tokenizer):
    prompts = [encode(tokenizer, p) for p in PROMPTS]
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths share the batch
    outs = engine(model, tokenizer).generate(prompts, SamplingParams.greedy(max_tokens=14, stop_token_ids=()))
    for prompt, (completion,) in zip(prompts, outs):
        expected, gap = reference_greedy(model, prompt, 14)
        assert gap > 1e-3  # the fixture's logits are not near ties, so equality below is meaningful
        assert completion.token_ids == expected
        assert completion.finish_reason == "length"
        assert completion.text == tokenizer.decode(expected, skip_special_tokens=True)
        assert completion.logprobs == [0.0] * 14  # greedy: a point mass
        reference = torch.log_softmax(full_logits(model, prompt + expected)[len(prompt) - 1:-1], dim=-1)
        expected_lp = reference.gather(1, torch.tensor(expected)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(completion.model_logprobs), expected_lp, atol=1e-4, rtol=0)


def test_continuous_batching_with_more_prompts_than_slots(model, tokenizer):
    prompts = [encode(tokenizer, p) for p in PROMPTS] + [encode(tokenizer, "def fib(n):\n")]
    max_tokens = [6, 15, 3, 11, 8]
    eng = engine(model, tokenizer, max_batch=2)
    outs = eng.generate(prompts, [SamplingParams.greedy(max_tokens=m, stop_token_ids=()) for m in max_tokens])
    for prompt, m, (completion,) in zip(prompts, max_tokens, outs):
        assert completion.token_ids == reference_greedy(model, prompt, m)[0]
    assert eng.stats["peak_running"] == 2  # never more than the slots
    assert eng.stats["admitted_while_running"] >= 3  # requests joined while others were decoding
    assert not eng.has_unfinished()


def test_greedy_with_repetition_penalty_and_n_samples_sharing_one_prefill(model, tokenizer):
    prompt = encode(tokenizer, PROMPTS[2])
    eng = engine(model, tokenizer, max_batch=4)
    outs = eng.generate([prompt], SamplingParams.greedy(n=3, max_tokens=12, repetition_penalty=1.7, stop_token_ids=()))
    expected, _ = reference_greedy(model, prompt, 12, penalty=1.7)
    assert expected != reference_greedy(model, prompt, 12)[0]  # the penalty changes this output
    assert [c.token_ids for c in outs[0]] == [expected] * 3
    assert eng.stats["prefill_tokens"] == len(prompt)  # one prefill, its K/V blocks shared with the other two samples


def test_sampled_logprobs_match_a_fresh_forward_pass(model, tokenizer):
    params = SamplingParams(n=2, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.2, max_tokens=10,
                            stop_token_ids=(), seed=3, top_logprobs=3)
    prompts = [encode(tokenizer, p) for p in PROMPTS[:3]]
    outs = engine(model, tokenizer).generate(prompts, params)
    for prompt, completions in zip(prompts, outs):
        for completion in completions:
            tokens = completion.token_ids
            logits = full_logits(model, prompt + tokens)[len(prompt) - 1:-1]
            for step, token in enumerate(tokens):
                raw = logits[step]
                assert completion.model_logprobs[step] == pytest.approx(float(raw.log_softmax(-1)[token]), abs=1e-4)
                best = raw.log_softmax(-1).topk(3)
                assert list(completion.top_logprobs[step]) == best.indices.tolist()
                assert list(completion.top_logprobs[step].values()) == pytest.approx(best.values.tolist(), abs=1e-4)
                seen = torch.zeros_like(raw, dtype=torch.bool)
                seen[prompt + tokens[:step]] = True
                processed = process_logits(raw[None], seen[None], temperature=0.8, top_k=40, top_p=0.9,
                                           repetition_penalty=1.2)[0]
                expected = float(processed.log_softmax(-1)[token])
                assert math.isfinite(expected)  # the sampled token was inside top-k / top-p
                assert completion.logprobs[step] == pytest.approx(expected, abs=1e-4)
    assert outs[0][0].token_ids != outs[0][1].token_ids  # the n samples draw independently


# ------------------------------------------------------------------------------------------ sampling on hand-made logits
def test_repetition_penalty_top_k_top_p_on_hand_made_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, 3.0]]

    inf = float("-inf")
    rows = torch.tensor([[1.0, 5.0, 3.0, 4.0], [1.0, 5.0, 3.0, 4.0], [2.0, 2.0, 2.0, 1.0]])
    assert apply_top_k(rows, [2, 0, 1]).tolist() == [[inf, 5.0, inf, 4.0], [1.0, 5.0, 3.0, 4.0], [2.0, 2.0, 2.0, inf]]

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    nucleus = probs.log().expand(4, 4)
    kept = apply_top_p(nucleus, [0.4, 0.75, 0.85, 1.0]).isfinite().sum(-1).tolist()
    assert kept == [1, 2, 3, 4]
    shuffled = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()  # the kept set follows probability, not position
    assert apply_top_p(shuffled, 0.75).isfinite().tolist() == [[False, True, False, True]]

    # temperature divides; 0 leaves the row for greedy argmax
    x = process_logits(torch.tensor([[1.0, 2.0], [1.0, 2.0]]), None, temperature=[0.5, 0.0], top_k=0, top_p=1.0,
                       repetition_penalty=1.0)
    assert x.tolist() == [[2.0, 4.0], [1.0, 2.0]]


@pytest.mark.parametrize("scale", [0.1, 8.0])  # flat rows (the cut is past the candidates: a full sort) and peaked ones
def test_top_p_over_a_large_vocabulary_equals_a_full_sort(scale):
    logits = torch.randn(6, 5000, generator=torch.Generator().manual_seed(0)) * scale
    top_p = [0.3, 0.8, 0.95, 1.0, 0.5, 0.9]
    expected = torch.full_like(logits, float("-inf"))
    for row, p in enumerate(top_p):
        probs, order = logits[row].softmax(-1).sort(descending=True)
        keep = int((probs.cumsum(-1) < p).sum()) + 1 if p < 1 else len(probs)  # smallest prefix reaching p
        expected[row, order[:keep]] = logits[row, order[:keep]]
    assert torch.equal(apply_top_p(logits, top_p), expected)


def test_sampling_frequencies_follow_the_filtered_distribution():
    rows = 20000
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0]).log_softmax(-1).expand(rows, 5).contiguous()
    params = [SamplingParams(temperature=0.5, top_k=3, top_p=1.0, repetition_penalty=1.0)] * rows
    out = sample_tokens(logits, None, params, [None] * rows, torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.tensor(out.tokens), minlength=5).float() / rows
    expected = torch.cat([(torch.tensor([2.0, 1.0, 0.5]) / 0.5).softmax(-1), torch.zeros(2)])
    torch.testing.assert_close(counts, expected, atol=0.015, rtol=0)
    assert out.logprobs[0] == pytest.approx(float(expected[out.tokens[0]].log()), abs=1e-5)
    assert out.model_logprobs[0] == pytest.approx(float(logits[0, out.tokens[0]]), abs=1e-6)


# ------------------------------------------------------------------------------------------ stops, seeds, streaming
def test_stop_strings_and_stop_tokens(model, tokenizer):
    eng = engine(model, tokenizer)
    prompt = encode(tokenizer, PROMPTS[1])
    free = eng.generate([prompt], SamplingParams.greedy(max_tokens=20, stop_token_ids=()))[0][0]
    pieces = [tokenizer.decode([t], skip_special_tokens=True) for t in free.token_ids]
    position = next(i for i in range(4, 20) if pieces[i].strip())  # a visible piece a few tokens in
    stop = pieces[position]
    cut = free.text.find(stop)
    assert cut > 0

    stopped = eng.generate([prompt], SamplingParams.greedy(max_tokens=20, stop_token_ids=(), stop=["NEVER", stop]))[0][0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut]
    assert stopped.token_ids == free.token_ids[:len(stopped.token_ids)]  # the tokens up to the one completing it
    assert len(stopped.token_ids) == len(stopped.logprobs) == len(stopped.model_logprobs)

    token = free.token_ids[position]
    first = free.token_ids.index(token)
    by_token = eng.generate([prompt], SamplingParams.greedy(max_tokens=20, stop_token_ids=(token,)))[0][0]
    assert by_token.finish_reason == "stop"
    assert by_token.token_ids == free.token_ids[:first + 1]  # the stop token is reported, not in the text
    assert by_token.text == tokenizer.decode(free.token_ids[:first], skip_special_tokens=True)


def test_eos_is_the_default_stop_token(tokenizer):
    model = Transformer(model_config("debug", vocab_size=tokenizer.get_vocab_size()))
    eos = tokenizer.token_to_id(EOS_TOKEN)
    with torch.no_grad():  # a constant final hidden state (ones) and a head that maps it to <eos> only
        model.tok_embeddings.weight.fill_(1.0)
        for block in model.layers:
            block.attention.wo.weight.zero_()
            block.feed_forward.w2.weight.zero_()
        model.output.weight.zero_()
        model.output.weight[eos] = 1.0
    out = Engine(model, tokenizer).generate(["def"], SamplingParams(max_tokens=10, seed=0))[0][0]
    assert (out.token_ids, out.text, out.finish_reason) == ([eos], "", "stop")
    out = Engine(model, tokenizer).generate(["def"], SamplingParams(max_tokens=3, stop_token_ids=(), seed=0))[0][0]
    assert out.token_ids == [eos] * 3 and out.finish_reason == "length"


def test_seed_reproducibility(model, tokenizer):
    params = SamplingParams(n=2, temperature=1.0, top_p=0.95, max_tokens=12, stop_token_ids=(), seed=7)
    alone = engine(model, tokenizer).generate([PROMPTS[0]], params)[0]
    batched = engine(model, tokenizer).generate([PROMPTS[2], PROMPTS[0], PROMPTS[1]],
                                                [SamplingParams(seed=1), params, SamplingParams()])[1]
    assert [c.token_ids for c in alone] == [c.token_ids for c in batched]  # whatever else shares the batch
    other = engine(model, tokenizer).generate([PROMPTS[0]], SamplingParams(**{**params.__dict__, "seed": 8}))[0]
    assert [c.token_ids for c in other] != [c.token_ids for c in alone]


def test_streamed_updates_add_up_and_hold_back_stop_string_prefixes(model, tokenizer):
    eng = engine(model, tokenizer)
    prompt = encode(tokenizer, PROMPTS[0])
    full = eng.generate([prompt], SamplingParams.greedy(max_tokens=16, stop_token_ids=()))[0][0]
    stop = full.text[len(full.text) // 2:len(full.text) // 2 + 3]
    params = SamplingParams.greedy(max_tokens=16, stop_token_ids=(), stop=[stop])
    request = eng.add_request(prompt, params)
    streamed, final = "", None
    while eng.has_unfinished():
        for update in eng.step():
            assert update.request_id == request
            streamed += update.text
            assert stop not in streamed
            if update.finished:
                final = update.completion
    assert final.finish_reason == "stop" and streamed == final.text == full.text[:full.text.find(stop)]


def test_abort_frees_the_slot_and_the_others_continue(model, tokenizer):
    eng = engine(model, tokenizer, max_batch=3)
    prompts = [encode(tokenizer, p) for p in PROMPTS[:3]]
    params = SamplingParams.greedy(max_tokens=10, stop_token_ids=())
    ids = [eng.add_request(p, params) for p in prompts]
    tokens = {rid: [] for rid in ids}
    for _ in range(3):
        for update in eng.step():
            tokens[update.request_id] += update.token_ids
    eng.abort(ids[0])  # slot 0: the last running sequence moves into it
    while eng.has_unfinished():
        for update in eng.step():
            assert update.request_id != ids[0]
            tokens[update.request_id] += update.token_ids
    assert len(tokens[ids[0]]) == 3
    for rid, prompt in zip(ids[1:], prompts[1:]):
        assert tokens[rid] == reference_greedy(model, prompt, 10)[0]


def test_bad_parameters_and_prompts_are_named(model, tokenizer):
    for kwargs, name in [({"temperature": -1}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"n": 0}, "n"),
                         ({"max_tokens": 0}, "max_tokens"), ({"stop": [""]}, "stop"), ({"top_k": -2}, "top_k"),
                         ({"repetition_penalty": 0}, "repetition_penalty"), ({"stop_token_ids": [-1]}, "stop_token_ids"),
                         ({"top_logprobs": 99}, "top_logprobs"), ({"temperature": float("nan")}, "temperature")]:
        with pytest.raises(SamplingParamsError, match=name) as error:
            SamplingParams(**kwargs)
        assert error.value.param == name
    assert SamplingParams(stop="\n").stop == ("\n",)
    eng = engine(model, tokenizer, max_seq_len=16)
    with pytest.raises(GenerationError, match="empty"):
        eng.generate([""])
    with pytest.raises(GenerationError, match=r"prompts\[1\].*max_seq_len 16"):
        eng.generate(["a", list(range(16))])
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        eng.generate([[1, 10**6]])
    with pytest.raises(ValueError, match="2 SamplingParams for 1 prompts"):
        eng.generate(["a"], [SamplingParams(), SamplingParams()])
    assert not eng.has_unfinished()  # nothing was queued by the failed calls
    # the context limit ends a completion with "length"
    out = eng.generate([list(range(1, 11))], SamplingParams.greedy(max_tokens=100, stop_token_ids=()))[0][0]
    assert out.finish_reason == "length" and len(out.token_ids) == 6


# ------------------------------------------------------------------------------------------ loading and backends
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # save_checkpoint in one process, on purpose
def test_from_checkpoint_ours_trainer_and_hugging_face(model, tokenizer, tokenizer_path, tmp_path):
    from seedcoder.checkpoint import save_checkpoint, save_model_only
    from seedcoder.hf_convert import convert_to_hf

    prompts = [PROMPTS[0], PROMPTS[3]]
    params = SamplingParams.greedy(max_tokens=8, stop_token_ids=())
    expected = [c[0].token_ids for c in engine(model, tokenizer).generate(prompts, params)]

    ours = tmp_path / "ours"
    save_model_only(model, ours)
    with pytest.raises(CheckpointError, match="no tokenizer found"):
        Engine.from_checkpoint(ours, device="cpu")
    loaded = Engine.from_checkpoint(ours, device="cpu", tokenizer=tokenizer_path)
    assert [c[0].token_ids for c in loaded.generate(prompts, params)] == expected

    # a trainer checkpoint finds the tokenizer of its training data (train_state.json: config.data.path)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(tokenizer_path, data / "tokenizer.json")
    save_checkpoint(tmp_path / "run", 5, model=model, optimizer=None, model_config=model.cfg.to_dict(),
                    train_state={"config": {"data": {"path": str(data)}}})
    trainer = Engine.from_checkpoint(tmp_path / "run", device="cpu")  # the folder of step-N checkpoints
    assert [c[0].token_ids for c in trainer.generate(prompts, params)] == expected

    hf = tmp_path / "hf"
    convert_to_hf(ours, hf, tokenizer=tokenizer_path, log=lambda *_: None)
    from_hf = Engine.from_checkpoint(hf, device="cpu")
    assert [c[0].token_ids for c in from_hf.generate(prompts, params)] == expected

    with pytest.raises(CheckpointError, match="not a checkpoint"):
        Engine.from_checkpoint(data)


def test_hf_tokenizer_files_give_transformers_the_same_chat_format(tokenizer_path, tmp_path):
    transformers = pytest.importorskip("transformers")
    shutil.copy(tokenizer_path, tmp_path / "tokenizer.json")
    write_hf_tokenizer_files(tmp_path, 512)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    messages = [{"role": "user", "content": "Write add(a, b)."}, {"role": "assistant", "content": "def add(a, b):"},
                {"role": "user", "content": "Thanks"}]
    assert hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == render_chat(messages)
    assert hf_tokenizer.encode("def add", add_special_tokens=True) == hf_tokenizer.encode("def add", add_special_tokens=False)
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == hf_tokenizer.eos_token_id


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_names_the_missing_package(tmp_path):
    with pytest.raises(BackendUnavailable, match="'vllm' package is not installed"):
        VLLMEngine(tmp_path)
    with pytest.raises(BackendUnavailable, match="vllm"):
        load_engine(tmp_path, backend="vllm")


def test_benchmark_greedy_tokens_equal_transformers_generate(tmp_path, capsys):
    """benchmarks/generate.py end to end on a small model: our greedy tokens equal HF transformers' generate."""
    pytest.importorskip("transformers")
    from benchmarks import generate as bench

    assert bench.main(["--preset", "debug", "--batch", "3", "--prompt-len", "4", "9", "--new-tokens", "5", "--repeats",
                       "1", "--modes", "greedy", "--out", str(tmp_path)]) == 0
    rows = {r["impl"]: r for r in json.loads((tmp_path / "generate.json").read_text())["rows"]}
    assert rows["hf transformers generate"]["greedy_match"] == "3/3"
    assert rows["seedcoder engine"]["tokens_per_s"] > 0 and rows["hf transformers generate"]["tokens_per_s"] > 0
    assert rows["vllm"]["skip"] or rows["vllm"]["greedy_match"]
    assert "tokens/s = batch x new tokens" in (tmp_path / "generate.md").read_text()


# ------------------------------------------------------------------------------------------ chat
def test_chat_template_text():
    messages = [{"role": "user", "content": "Write add."}, {"role": "assistant", "content": "def add(a, b): ..."}]
    assert render_chat(messages, add_generation_prompt=False) == (
        f"{BOS_TOKEN}system\n{DEFAULT_SYSTEM_PROMPT}{EOS_TOKEN}{BOS_TOKEN}user\nWrite add.{EOS_TOKEN}"
        f"{BOS_TOKEN}assistant\ndef add(a, b): ...{EOS_TOKEN}")
    custom = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert render_chat(custom, bos_token="<s>", eos_token="</s>") == "<s>system\nBe brief.</s><s>user\nHi</s><s>assistant\n"
    assert render_chat(messages[:1], system_prompt=None) == f"{BOS_TOKEN}user\nWrite add.{EOS_TOKEN}{BOS_TOKEN}assistant\n"
    for bad, match in [([{"role": "robot", "content": "x"}], r"messages\[0\].*role"),
                       ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], r"messages\[1\].*first"),
                       ([{"role": "user", "content": 3}], "content"), ("hello", "list of messages"),
                       ([{"role": "user", "content": [{"type": "image_url"}]}], r"content\[0\]")]:
        with pytest.raises(ChatTemplateError, match=match):
            render_chat(bad)


def test_chat_template_jinja_matches_render_chat_in_transformers(tokenizer):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN)
    conversations = [[{"role": "user", "content": "x = 1\n  y"}],
                     [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": " a "}]]
    for messages in conversations:
        for generation_prompt in (True, False):
            assert hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                          chat_template=CHAT_TEMPLATE_JINJA) == render_chat(messages, generation_prompt)


def test_tokenized_chat_and_assistant_mask(tokenizer):
    messages = [{"role": "user", "content": "Write add."}, {"role": "assistant", "content": "  def add(a, b):\n"},
                {"role": "user", "content": "More"}, {"role": "assistant", "content": "return a + b"}]
    chat = tokenize_chat(messages, tokenizer, add_generation_prompt=False)
    assert len(chat.input_ids) == len(chat.assistant_mask)
    assert tokenizer.decode(chat.input_ids, skip_special_tokens=False) == chat.text == render_chat(messages, False)
    eos, bos = tokenizer.token_to_id(EOS_TOKEN), tokenizer.token_to_id(BOS_TOKEN)
    spans, current = [], []
    for token, masked in zip(chat.input_ids, chat.assistant_mask):
        if masked:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    spans.append(current) if current else None
    assert [tokenizer.decode(s, skip_special_tokens=False) for s in spans] == [
        "  def add(a, b):\n" + EOS_TOKEN, "return a + b" + EOS_TOKEN]
    prompt = tokenize_chat(messages[:1], tokenizer)
    assert prompt.input_ids[-1 - len(tokenizer.encode("assistant\n").ids)] == bos and not any(prompt.assistant_mask)
    # an assistant header ends the same way in training data and in the generation prompt
    header = tokenize_chat(messages[:2], tokenizer, add_generation_prompt=False).input_ids
    assert header[:len(prompt.input_ids)] == prompt.input_ids
    assert eos in chat.input_ids


def test_engine_chat_is_generate_on_the_template(model, tokenizer):
    eng = engine(model, tokenizer)
    messages = [{"role": "user", "content": "Write add."}]
    params = SamplingParams.greedy(max_tokens=6, stop_token_ids=())
    ids = tokenize_chat(messages, tokenizer).input_ids
    assert eng.chat([messages], params)[0][0].token_ids == reference_greedy(model, ids, 6)[0]


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_cuda_greedy_and_logprobs(model, tokenizer):
    cuda = Transformer(model.cfg).to("cuda")
    cuda.load_state_dict(model.state_dict())
    prompts = [encode(tokenizer, p) for p in PROMPTS]
    outs = Engine(cuda.eval(), tokenizer, max_batch=2).generate(prompts, SamplingParams.greedy(max_tokens=10, stop_token_ids=()))
    for prompt, (completion,) in zip(prompts, outs):
        assert completion.token_ids == reference_greedy(model, prompt, 10)[0]
    bf16 = cuda.to(torch.bfloat16)  # flash-attention prefill, bf16 decode: log-probs close to the fp32 forward pass
    out = Engine(bf16, tokenizer).generate(prompts, SamplingParams(max_tokens=8, stop_token_ids=(), seed=0))
    for prompt, (completion,) in zip(prompts, out):
        logits = full_logits(model, prompt + completion.token_ids)[len(prompt) - 1:-1].log_softmax(-1)
        expected = logits.gather(1, torch.tensor(completion.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(completion.model_logprobs), expected, atol=0.15, rtol=0)

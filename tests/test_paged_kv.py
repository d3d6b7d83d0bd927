"""The paged KV cache (seedcoder.model.KVCache) and the engine's budget, admission and recompute preemption.

Every check compares against an independent computation: the model's full forward pass without a cache, or the
engine with an unlimited budget (which the tests in test_generate.py compare against the full forward pass).
Small blocks (3 to 16 positions) make a few dozen tokens span many blocks, shared, freed and reused.
"""

import pytest
import torch
from toy_models import toy_model, toy_tokenizer

from seedcoder.generate import Engine, GenerationError
from seedcoder.model import KVCache
from seedcoder.sampling import SamplingParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "import os\nimport sys\n\nfor name in os.listdir('.'):\n    print(name, file=sys.stderr)\n",
] * 8


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return toy_tokenizer(tmp_path_factory.mktemp("tokenizer"), CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer):
    return toy_model(tokenizer.get_vocab_size(), seed=0)


def prompts_of(lengths, vocab, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


@torch.no_grad()
def full_logits(model, ids):
    return model(torch.tensor([ids]))[0]


# ------------------------------------------------------------------------------------------ the cache
@torch.no_grad()
def test_decode_through_fragmented_block_tables_gives_the_full_forward_logits(model):
    """Blocks of 3: three sequences prefilled in one packed row, one freed and its blocks reused by a new one, then
    all decoded together a token at a time (their new blocks interleave in the pool): every step's logits are the
    full forward pass's."""
    vocab = model.cfg.vocab_size
    rows = prompts_of((19, 14, 23, 17), vocab, seed=1)
    prompt_lengths = [7, 5, 11]
    cache = KVCache(model.cfg, slots=3, capacity=32, device=torch.device("cpu"), dtype=torch.float32, block_size=3)
    ids = torch.tensor([sum((rows[i][:n] for i, n in enumerate(prompt_lengths)), [])])
    positions = torch.cat([torch.arange(n) for n in prompt_lengths])
    slots = torch.repeat_interleave(torch.tensor([2, 0, 1]), torch.tensor(prompt_lengths))  # rows 0, 1, 2 -> slots 2, 0, 1
    cu = torch.tensor([0, 7, 12, 23], dtype=torch.int32)
    logits = model(ids, position_ids=positions[None], cu_seqlens=cu, max_seqlen=11,
                   kv_cache=cache.prefill(slots, positions), logits_at=cu[1:].long() - 1)
    expected = torch.stack([full_logits(model, rows[i][:n])[-1] for i, n in enumerate(prompt_lengths)])
    # fp32 logits of magnitude ~10 (init_std 0.3) round at ~1e-5; reading a wrong block is off by whole units
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=5e-5)
    assert cache.used_blocks == 3 + 2 + 4
    cache.free(0)  # row 1's blocks go back; row 3 (length 4) takes them, then more past the others' blocks
    assert cache.used_blocks == 7
    prompt = torch.tensor(rows[3][:4])
    cache.prefill(torch.zeros(4, dtype=torch.long), torch.arange(4))
    model(prompt[None], kv_cache=cache)
    lengths = {0: (3, 4), 1: (2, 11), 2: (0, 7)}  # slot -> (row, its cached positions)
    for step in range(6):
        positions = torch.tensor([lengths[slot][1] + step for slot in range(3)])
        tokens = torch.tensor([[rows[lengths[slot][0]][int(positions[slot])]] for slot in range(3)])
        logits = model(tokens, position_ids=positions[:, None], kv_cache=cache.decode(positions, int(positions.max())))
        expected = torch.stack([full_logits(model, rows[lengths[slot][0]][:int(positions[slot]) + 1])[-1]
                                for slot in range(3)])
        torch.testing.assert_close(logits[:, 0], expected, rtol=1e-5, atol=5e-5)
    assert cache.used_blocks == sum(-(-(lengths[s][1] + 6) // 3) for s in range(3))
    assert all(table != list(range(table[0], table[0] + len(table))) for table in cache.tables)  # interleaved


@torch.no_grad()
def test_fork_shares_full_blocks_copies_the_partial_one_and_frees_by_reference_count(model):
    rows = prompts_of((10,), model.cfg.vocab_size, seed=2)
    prompt = rows[0]
    cache = KVCache(model.cfg, slots=2, capacity=16, device=torch.device("cpu"), dtype=torch.float32, block_size=4)
    model(torch.tensor([prompt]), kv_cache=cache.prefill(torch.zeros(10, dtype=torch.long), torch.arange(10)))
    cache.fork(0, 1, 10)
    assert cache.tables[1][:2] == cache.tables[0][:2] and cache.tables[1][2] != cache.tables[0][2]
    assert cache.used_blocks == 4
    # the two samples diverge at position 10, each writing into its own copy of the partial block
    tokens = [5, 77]
    positions = torch.tensor([10, 10])
    logits = model(torch.tensor(tokens)[:, None], position_ids=positions[:, None], kv_cache=cache.decode(positions, 10))
    expected = torch.stack([full_logits(model, prompt + [t])[-1] for t in tokens])
    torch.testing.assert_close(logits[:, 0], expected, rtol=1e-5, atol=5e-5)
    cache.free(0)
    assert cache.used_blocks == 3  # the shared blocks stay while slot 1 holds them
    cache.free(1)
    assert cache.used_blocks == 0 and cache.tables == [[], []]


def test_cache_limits_are_named(model):
    cache = KVCache(model.cfg, slots=2, capacity=8, device=torch.device("cpu"), dtype=torch.float32, block_size=4,
                    max_blocks=2)
    cache.prefill(torch.tensor([0] * 5), torch.arange(5))
    with pytest.raises(RuntimeError, match="all 2 blocks"):
        cache.prefill(torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="over the capacity 8"):
        cache.prefill(torch.tensor([0]), torch.tensor([8]))
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        KVCache(model.cfg, slots=2, capacity=8, device=torch.device("cpu"), dtype=torch.float32, block_size=0)


# ------------------------------------------------------------------------------------------ the engine
def test_a_budget_far_below_batch_times_longest_gives_every_request_the_unlimited_outputs(model, tokenizer):
    """kv_cache_tokens 96 (12 blocks of 8) for 4 slots of sequences reaching up to 96 positions: the newest sequences
    are preempted and recomputed, and every completion (seeded sampling with a repetition penalty, which needs
    each sequence's seen tokens restored) has the tokens of an unlimited engine and its log-probs up to rounding
    (a recompute is a prefill where the unlimited engine decoded). Every block is free at the end."""
    prompts = prompts_of((5, 13, 29, 3, 21, 9), model.cfg.vocab_size, seed=3)
    params = [SamplingParams(n=2, temperature=0.9, top_p=0.95, repetition_penalty=1.3, max_tokens=m, stop_token_ids=(),
                             seed=i, logprobs=True) for i, m in enumerate((90, 70, 60, 40, 75, 85))]
    longest = max(len(p) + sp.max_tokens for p, sp in zip(prompts, params))
    unlimited = Engine(model, tokenizer, max_batch=4, kv_block_size=8)
    small = Engine(model, tokenizer, max_batch=4, kv_block_size=8, kv_cache_tokens=96)
    assert longest == 96  # a quarter of max_batch x the longest: each one fits alone, four together do not
    expected, got = unlimited.generate(prompts, params), small.generate(prompts, params)
    assert unlimited.stats["preempted"] == 0
    assert small.stats["preempted"] >= 3 and small.stats["recomputed_tokens"] > 0
    for prompt, want_group, got_group in zip(prompts, expected, got):
        for want, completion in zip(want_group, got_group):
            assert completion.token_ids == want.token_ids and completion.finish_reason == want.finish_reason
            torch.testing.assert_close(torch.tensor(completion.logprobs), torch.tensor(want.logprobs), atol=1e-4, rtol=0)
            torch.testing.assert_close(torch.tensor(completion.model_logprobs), torch.tensor(want.model_logprobs),
                                       atol=1e-4, rtol=0)
            # and against the full forward pass, independent of either engine
            reference = full_logits(model, prompt + completion.token_ids)[len(prompt) - 1:-1].log_softmax(-1)
            torch.testing.assert_close(torch.tensor(completion.model_logprobs),
                                       reference.gather(1, torch.tensor(completion.token_ids)[:, None])[:, 0],
                                       atol=1e-4, rtol=0)
    assert small.stats["peak_kv_blocks"] <= 12
    assert small.kv_cache.used_blocks == 0 and all(not table for table in small.kv_cache.tables)
    assert unlimited.kv_cache.used_blocks == 0
    assert small.kv_cache.nbytes() == 12 * small.kv_cache.bytes_per_block()  # a given budget is allocated at once
    assert not small.has_unfinished()


def test_pool_holds_the_sum_of_lengths_not_batch_times_longest(model, tokenizer):
    """One long rollout beside short ones: the pool holds their blocks, not max_batch slots of the longest length
    (the slot cache this replaced held max_batch x capacity, capacity the longest length rounded up to 256)."""
    eng = Engine(model, tokenizer, max_batch=4, kv_block_size=16)
    prompts = prompts_of((7, 9, 11, 5), model.cfg.vocab_size, seed=4)
    params = [SamplingParams.greedy(max_tokens=m, stop_token_ids=()) for m in (300, 4, 6, 3)]
    outs = eng.generate(prompts, params)
    assert [len(o[0].token_ids) for o in outs] == [300, 4, 6, 3]
    per_token = eng.kv_cache.bytes_per_block() // 16
    slot_cache_bytes = 4 * 512 * per_token  # 4 slots x 307 positions rounded up to 512
    assert eng.stats["peak_kv_blocks"] <= -(-307 // 16) + 3  # the long one's 20 blocks + one per short one
    assert eng.kv_cache.nbytes() <= 2 * eng.stats["peak_kv_blocks"] * eng.kv_cache.bytes_per_block()  # doubling
    assert eng.kv_cache.nbytes() < slot_cache_bytes / 2
    assert eng.kv_cache.used_blocks == 0


def test_abort_and_fail_all_free_the_blocks(model, tokenizer):
    eng = Engine(model, tokenizer, max_batch=3, kv_block_size=4)
    prompts = prompts_of((6, 9, 3), model.cfg.vocab_size, seed=5)
    params = SamplingParams.greedy(n=2, max_tokens=20, stop_token_ids=())
    ids = [eng.add_request(p, params) for p in prompts]
    for _ in range(4):
        eng.step()

    def blocks_of_running():  # shared prompt blocks count once
        return {block for s in eng._running for block in eng.kv_cache.tables[s.slot]}

    assert len(blocks_of_running()) == eng.kv_cache.used_blocks > 0
    eng.abort(ids[0])
    eng.step()
    assert all(s.request.request_id != ids[0] for s in eng._running)
    assert len(blocks_of_running()) == eng.kv_cache.used_blocks  # request 0's blocks went back, none leaked
    eng.fail_all()
    assert eng.kv_cache.used_blocks == 0 and not eng.has_unfinished()


def test_a_request_longer_than_the_whole_budget_fails_naming_kv_cache_tokens(model, tokenizer):
    eng = Engine(model, tokenizer, max_batch=2, kv_block_size=16, kv_cache_tokens=60)
    assert eng.kv_cache_tokens == 64  # rounded up to whole blocks
    prompt = list(range(1, 11))
    with pytest.raises(GenerationError, match=r"prompts\[1\].*need up to 75 positions.*kv_cache_tokens budget 64") as error:
        eng.generate([prompt, prompt], [SamplingParams(max_tokens=54), SamplingParams(max_tokens=65)])
    assert error.value.param == "max_tokens"
    with pytest.raises(GenerationError, match="kv_cache_tokens"):
        eng.add_request(prompt, SamplingParams(max_tokens=1000))
    assert not eng.has_unfinished()  # nothing was queued by the failed calls
    out = eng.generate([prompt], SamplingParams.greedy(max_tokens=54, stop_token_ids=()))[0][0]
    assert len(out.token_ids) == 54
    capped = Engine(model, tokenizer, max_seq_len=40, kv_cache_tokens=48, kv_block_size=16)  # the context caps the need
    assert len(capped.generate([prompt], SamplingParams.greedy(max_tokens=1000, stop_token_ids=()))[0][0].token_ids) == 30
    for value in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="kv_cache_tokens must be a positive integer"):
            Engine(model, tokenizer, kv_cache_tokens=value)

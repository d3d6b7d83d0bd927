"""The Llama-3 model: presets, shapes, loss path, meta-device init, document masking, config validation."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from seedcoder.model import PRESETS, KVCache, ModelConfig, Transformer, model_config


def build(name="debug", seed=0, **overrides) -> Transformer:
    model = Transformer(model_config(name, **overrides))
    model.init_weights(seed)
    return model


def llama_param_count(cfg: ModelConfig) -> int:
    """Independent count: two V x d tables, per layer q/o (d x d), k/v (d x kv*hd), 3 FFN matrices, 2 norms."""
    kv = cfg.n_kv_heads * cfg.head_dim
    per_layer = 2 * cfg.dim * cfg.dim + 2 * cfg.dim * kv + 3 * cfg.dim * cfg.ffn_dim + 2 * cfg.dim
    return 2 * cfg.vocab_size * cfg.dim + cfg.n_layers * per_layer + cfg.dim


# ------------------------------------------------------------------------------------------ presets
def test_seedcoder_8b_preset_is_the_released_shape():
    cfg = PRESETS["seedcoder-8b"]
    assert (cfg.n_layers, cfg.dim, cfg.ffn_dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (32, 4096, 14336, 32, 8, 128)
    assert (cfg.vocab_size, cfg.rope_theta, cfg.norm_eps, cfg.max_seq_len) == (155_136, 500_000.0, 1e-6, 32768)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert all(p.is_meta for p in model.parameters())
    n = model.num_params()
    assert n == llama_param_count(cfg)
    assert 8.24e9 < n < 8.26e9  # "8.25B"
    assert model.num_params(exclude_embedding=True) == n - 155_136 * 4096
    block = model.layers[0]
    assert block.attention.wq.weight.shape == (4096, 4096)
    assert block.attention.wk.weight.shape == (1024, 4096)
    assert block.feed_forward.w1.weight.shape == (14336, 4096)
    assert model.output.weight.shape == (155_136, 4096)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


@pytest.mark.parametrize("name", ["1b", "tiny", "debug"])
def test_preset_parameter_counts(name):
    cfg = PRESETS[name]
    with torch.device("meta"):
        model = Transformer(cfg)
    assert model.num_params() == llama_param_count(cfg)
    assert len(model.layers) == cfg.n_layers


def test_1b_preset_shape():
    cfg = PRESETS["1b"]
    assert (cfg.n_layers, cfg.dim, cfg.ffn_dim, cfg.n_heads, cfg.n_kv_heads) == (16, 2048, 8192, 32, 8)
    with torch.device("meta"):
        model = Transformer(cfg)
    blocks = sum(p.numel() for p in model.layers.parameters())
    assert 0.9e9 < blocks < 1.0e9 and 1.6e9 < model.num_params() < 1.62e9


def test_flops_per_token_formula():
    model = build()
    cfg = model.cfg
    n = model.num_params(exclude_embedding=True)
    assert model.flops_per_token(128) == 6 * n + 6 * cfg.n_layers * cfg.n_heads * cfg.head_dim * 128
    assert model.flops_per_token(256) > model.flops_per_token(128)


# ------------------------------------------------------------------------------------------ forward
def test_forward_shapes_and_loss_matches_logits_path():
    torch.manual_seed(0)
    model = build()
    ids = torch.randint(0, model.cfg.vocab_size, (3, 24))
    labels = torch.randint(0, model.cfg.vocab_size, (3, 24))
    labels[0, :5] = -100
    logits = model(ids)
    assert logits.shape == (3, 24, model.cfg.vocab_size) and logits.dtype == torch.float32
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
    loss_sum = model(ids, labels=labels)
    assert loss_sum.dim() == 0
    torch.testing.assert_close(loss_sum, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(model(ids, labels=labels, loss_reduction="mean"), expected / (labels != -100).sum(),
                               rtol=1e-5, atol=1e-5)
    per_token = model(ids, labels=labels, loss_reduction="none")
    assert per_token.shape == (3, 24) and bool((per_token[0, :5] == 0).all())


def test_loss_gradients_match_logits_path():
    torch.manual_seed(1)
    model = build(seed=5)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 16))
    labels = torch.roll(ids, -1, dims=1)
    labels[:, -1] = -100
    model(ids, labels=labels).backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logits = model(ids)
    F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum").backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(fused[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert fused["tok_embeddings.weight"].abs().sum() > 0 and fused["layers.0.attention.wq.weight"].abs().sum() > 0


def test_bf16_forward_and_loss():
    model = build().to(torch.bfloat16)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 16))
    assert model(ids).dtype == torch.bfloat16
    loss = model(ids, labels=ids, loss_reduction="mean")
    assert torch.isfinite(loss) and 4.0 < loss.item() < 7.0  # ~ln(256) for a fresh model


# ------------------------------------------------------------------------------------------ init
def test_meta_init_is_deterministic_and_matches_eager_init():
    cfg = model_config("debug")
    models = []
    for _ in range(2):
        with torch.device("meta"):
            model = Transformer(cfg)
        model.to_empty(device="cpu")
        model.init_weights(seed=7)
        models.append(model.state_dict())
    eager = Transformer(cfg)
    eager.init_weights(seed=7)
    other = Transformer(cfg)
    other.init_weights(seed=8)
    for name, value in models[0].items():
        assert torch.equal(value, models[1][name]), name
        assert torch.equal(value, eager.state_dict()[name]), name
    assert not torch.equal(models[0]["layers.0.attention.wq.weight"], other.state_dict()["layers.0.attention.wq.weight"])
    state = models[0]
    assert torch.equal(state["norm.weight"], torch.ones(cfg.dim))
    std_q = state["layers.0.attention.wq.weight"].std().item()
    std_o = state["layers.0.attention.wo.weight"].std().item()
    assert abs(std_q - cfg.init_std) < 0.1 * cfg.init_std
    assert abs(std_o - cfg.init_std / (2 * cfg.n_layers) ** 0.5) < 0.1 * std_o


def test_init_weights_seed_none_follows_global_rng():
    torch.manual_seed(3)
    a = build(seed=None).state_dict()
    torch.manual_seed(3)
    b = build(seed=None).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ document masking
DOC_LENGTHS = (5, 7, 4)  # one packed row of 16 tokens


def packed_row(vocab: int, generator: torch.Generator):
    docs = [torch.randint(0, vocab, (n,), generator=generator) for n in DOC_LENGTHS]
    ids = torch.cat(docs).unsqueeze(0)
    position_ids = torch.cat([torch.arange(n) for n in DOC_LENGTHS]).unsqueeze(0)
    cu_seqlens = torch.tensor([0, *torch.tensor(DOC_LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    return docs, ids, position_ids, cu_seqlens


@pytest.mark.parametrize("packing", ["position_ids", "cu_seqlens", "both"])
def test_changing_one_document_leaves_the_others_alone(packing):
    model = build(seed=2)
    docs, ids, position_ids, cu_seqlens = packed_row(model.cfg.vocab_size, torch.Generator().manual_seed(0))
    kwargs = {"position_ids": position_ids if packing != "cu_seqlens" else None,
              "cu_seqlens": cu_seqlens if packing != "position_ids" else None}
    changed = ids.clone()
    changed[0, 5:12] = (changed[0, 5:12] + 1 + torch.arange(7)) % model.cfg.vocab_size  # the middle document
    with torch.no_grad():
        before, after = model(ids, **kwargs), model(changed, **kwargs)
    torch.testing.assert_close(after[0, :5], before[0, :5], rtol=0, atol=1e-6)
    torch.testing.assert_close(after[0, 12:], before[0, 12:], rtol=0, atol=1e-6)
    assert (after[0, 5:12] - before[0, 5:12]).abs().max() > 1e-3
    # without document information the last document does see the changed one
    with torch.no_grad():
        assert (model(changed)[0, 12:] - model(ids)[0, 12:]).abs().max() > 1e-3


@pytest.mark.parametrize("packing", ["position_ids", "cu_seqlens"])
def test_packed_row_equals_each_document_alone(packing):
    model = build(seed=4)
    docs, ids, position_ids, cu_seqlens = packed_row(model.cfg.vocab_size, torch.Generator().manual_seed(1))
    kwargs = {"position_ids": position_ids} if packing == "position_ids" else {"cu_seqlens": cu_seqlens}
    with torch.no_grad():
        packed = model(ids, **kwargs)[0]
        alone = torch.cat([model(doc.unsqueeze(0))[0] for doc in docs])
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)


def test_cu_seqlens_over_several_rows_and_one_document_per_row():
    model = build(seed=6)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 8), generator=gen)
    # row 0 holds documents of 3 and 5 tokens, row 1 one document of 8
    cu = torch.tensor([0, 3, 8, 16], dtype=torch.int32)
    with torch.no_grad():
        out = model(ids, cu_seqlens=cu, max_seqlen=8)
        torch.testing.assert_close(out[0, 3:], model(ids[:1, 3:])[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[1], model(ids[1:])[0], rtol=1e-5, atol=1e-5)
        # B + 1 boundaries: every row is one document, the plain causal path
        torch.testing.assert_close(model(ids, cu_seqlens=torch.tensor([0, 8, 16], dtype=torch.int32)), model(ids),
                                   rtol=0, atol=0)


def test_kv_cache_prefill_then_decode_gives_the_full_forward_logits():
    """Two prompts prefilled as one packed row into cache slots 1 and 0, then decoded a token at a time together:
    every step's logits are the full forward pass's at that position."""
    model = build(seed=7)
    gen = torch.Generator().manual_seed(3)
    rows = [torch.randint(0, model.cfg.vocab_size, (n,), generator=gen) for n in (9, 6)]
    prompt_lengths = [5, 3]
    cache = KVCache(model.cfg, slots=2, capacity=16, device=torch.device("cpu"), dtype=torch.float32)
    with torch.no_grad():
        full = [model(row.unsqueeze(0))[0] for row in rows]
        ids = torch.cat([row[:n] for row, n in zip(rows, prompt_lengths)]).unsqueeze(0)
        positions = torch.cat([torch.arange(n) for n in prompt_lengths])
        cu = torch.tensor([0, 5, 8], dtype=torch.int32)
        logits = model(ids, position_ids=positions[None], cu_seqlens=cu, max_seqlen=5,
                       kv_cache=cache.prefill(torch.tensor([1] * 5 + [0] * 3), positions), logits_at=cu[1:].long() - 1)
        torch.testing.assert_close(logits, torch.stack([full[0][4], full[1][2]]), rtol=1e-5, atol=1e-5)
        for step in range(3):  # slot 0 holds the second prompt, slot 1 the first
            positions = torch.tensor([3 + step, 5 + step])
            tokens = torch.stack([rows[1][3 + step], rows[0][5 + step]])[:, None]
            logits = model(tokens, position_ids=positions[:, None], kv_cache=cache.decode(positions, 5 + step))[:, 0]
            torch.testing.assert_close(logits, torch.stack([full[1][3 + step], full[0][5 + step]]), rtol=1e-5, atol=1e-5)


def test_flash_path_allocates_no_seqlen_squared_tensor(monkeypatch):
    """With the flash path taken (forced on CPU, the kernel replaced by a stand-in that records its calls), a packed
    forward and backward at S = 2048 creates no tensor of S² elements: no dense or causal mask is built."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    import seedcoder.model as model_module

    seqlen = 2048
    calls = []

    def flash_stand_in(q, k, v, *, causal, cu_seqlens, max_seqlen):
        calls.append((tuple(q.shape), cu_seqlens.tolist(), max_seqlen, causal))
        return q * 1.0

    monkeypatch.setattr(model_module, "attention_backend", lambda *args, **kwargs: "flash")
    monkeypatch.setattr(model_module, "flash_attention", flash_stand_in)

    class LargestTensor(TorchDispatchMode):
        largest = (0, None)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.numel() > self.largest[0]:
                    self.largest = (t.numel(), str(func))
            return out

    model = build(seed=1)
    ids = torch.randint(0, model.cfg.vocab_size, (1, seqlen), generator=torch.Generator().manual_seed(0))
    cu_seqlens = torch.tensor([0, 700, 1700, seqlen], dtype=torch.int32)
    with LargestTensor() as mode:
        model(ids, cu_seqlens=cu_seqlens, max_seqlen=1000, labels=ids).backward()
    assert calls == [((seqlen, model.cfg.n_heads, model.cfg.head_dim), [0, 700, 1700, seqlen], 1000, True)] * model.cfg.n_layers
    assert mode.largest[0] < seqlen * seqlen, f"{mode.largest[1]} created a tensor of {mode.largest[0]} elements"


def test_sdpa_path_masks_documents_like_a_hand_built_mask():
    """On CPU attend picks SDPA; its mask (from cu_seqlens or from position_ids) is causal within each document,
    so the output equals SDPA with a mask built here token by token."""
    from seedcoder.model import attend, attention_backend, build_attention_mask

    batch, seqlen, n_heads, n_kv_heads, head_dim = 2, 8, 4, 2, 16
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(batch, seqlen, n_heads, head_dim, generator=gen)
    k, v = (torch.randn(batch, seqlen, n_kv_heads, head_dim, generator=gen) for _ in range(2))
    docs = [[0, 0, 0, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 2, 2]]  # row 0: documents of 3 and 5 tokens; row 1: one
    keep = torch.tensor([[[docs[b][i] == docs[b][j] and j <= i for j in range(seqlen)] for i in range(seqlen)]
                         for b in range(batch)]).unsqueeze(1)
    expected = F.scaled_dot_product_attention(q.transpose(1, 2), k.repeat_interleave(2, 2).transpose(1, 2),
                                              v.repeat_interleave(2, 2).transpose(1, 2), attn_mask=keep).transpose(1, 2)
    ids = torch.zeros(batch, seqlen, dtype=torch.long)
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4], list(range(8))])
    for source in ({"cu_seqlens": torch.tensor([0, 3, 8, 16], dtype=torch.int32), "position_ids": None},
                   {"cu_seqlens": None, "position_ids": position_ids}):
        mask = build_attention_mask(ids, max_seqlen=None, **source)
        assert attention_backend(q, mask) == "sdpa"
        torch.testing.assert_close(attend(q, k, v, mask), expected, rtol=1e-6, atol=1e-6)


def test_kernels_option_reaches_every_norm_and_rotary():
    """Transformer(kernels=...) picks the GPU kernels of RMSNorm and rotary ("cuda": the CUDA C++ extension; checked
    against the CPU path on a GPU below); on CPU both options run the torch reference, so outputs are identical."""
    from seedcoder.model import KERNELS, _backend
    from seedcoder.train_config import CHOICES

    assert CHOICES[("model", "kernels")] == KERNELS  # the config's choices are the model's
    model = build(seed=5)
    cuda_kernels = Transformer(model.cfg, kernels="cuda")
    cuda_kernels.load_state_dict(model.state_dict())
    owners = [m for m in cuda_kernels.modules() if hasattr(m, "kernels")]
    assert len(owners) == 3 * model.cfg.n_layers + 1 and {m.kernels for m in owners} == {"cuda"}
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(cuda_kernels(ids), model(ids), rtol=0, atol=0)
    assert _backend(ids, "cuda") == "torch"
    with pytest.raises(ValueError, match="kernels: expected one of 'triton', 'cuda', got 'cutlass'"):
        Transformer(model.cfg, kernels="cutlass")


def test_packed_forward_builds_one_dense_mask_for_every_layer(monkeypatch):
    """The SDPA path's (B, 1, S, S) mask is built once per forward and shared by the layers (SDPA saves it for
    backward: one per layer would hold n_layers copies); rows known to be one document each build none."""
    import seedcoder.model as model_module

    built = []
    original = model_module.dense_attention_mask
    monkeypatch.setattr(model_module, "dense_attention_mask", lambda *a, **k: built.append(1) or original(*a, **k))
    model = build(seed=2)
    assert model.cfg.n_layers > 1
    docs, ids, position_ids, cu_seqlens = packed_row(model.cfg.vocab_size, torch.Generator().manual_seed(3))
    model(ids, cu_seqlens=cu_seqlens, labels=ids).backward()
    assert len(built) == 1
    model(ids)
    model(ids, cu_seqlens=torch.tensor([0, ids.shape[1]], dtype=torch.int32))
    assert len(built) == 1


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(("overrides", "message"), [
    ({"n_heads": 6, "n_kv_heads": 4, "dim": 96}, "n_heads \\(6\\) must be a multiple of n_kv_heads \\(4\\)"),
    ({"n_heads": 5}, "dim \\(64\\) must be divisible by n_heads \\(5\\)"),
    ({"n_kv_heads": 0}, "n_kv_heads must be a positive integer"),
    ({"dim": 12, "n_heads": 4, "n_kv_heads": 2}, "head_dim .* must be even"),
    ({"vocab_size": True}, "vocab_size must be a positive integer"),
    ({"rope_theta": "1e4"}, "rope_theta must be a positive finite number"),
    ({"norm_eps": -1.0}, "norm_eps must be a positive finite number"),
])
def test_bad_config_values_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        model_config("debug", **overrides)


def test_config_dict_round_trip_and_key_errors():
    cfg = model_config("tiny", vocab_size=1000)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert model_config({"preset": "tiny", "vocab_size": 1000}) == cfg
    assert model_config(cfg.to_dict()) == cfg
    assert model_config("debug", rope_theta=10000).rope_theta == 10000.0
    with pytest.raises(ValueError, match="unknown key\\(s\\) 'n_layer'"):
        model_config("debug", n_layer=3)
    with pytest.raises(ValueError, match="unknown key\\(s\\) 'hidden'"):
        ModelConfig.from_dict({**cfg.to_dict(), "hidden": 1})
    with pytest.raises(ValueError, match="missing key\\(s\\) 'ffn_dim'"):
        ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "ffn_dim"})
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        model_config("huge")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dim = 3


def test_bad_inputs_are_rejected():
    model = build()
    ids = torch.zeros(2, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="input_ids"):
        model(ids[0])
    with pytest.raises(ValueError, match="labels"):
        model(ids, labels=ids[:, :4])
    with pytest.raises(ValueError, match="loss_reduction"):
        model(ids, labels=ids, loss_reduction="avg")
    with pytest.raises(ValueError, match="position_ids"):
        model(ids, position_ids=torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="cu_seqlens: must rise from 0 to B\\*S = 16"):
        model(ids, cu_seqlens=torch.tensor([0, 5, 12], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens: a document crosses a row end: every multiple of S = 8"):
        model(ids, cu_seqlens=torch.tensor([0, 5, 12, 16], dtype=torch.int32))
    with pytest.raises(ValueError, match="max_seqlen: 4 is shorter than the longest document in cu_seqlens \\(5 tokens\\)"):
        model(ids, cu_seqlens=torch.tensor([0, 3, 8, 12, 16], dtype=torch.int32), max_seqlen=4)


def test_check_cu_seqlens_checks_host_batches_and_never_reads_device_values():
    """The training loop validates its host batch before the copy (on the GPU, reading the values would sync);
    a tensor that is not on the host gets the shape and dtype checks only: its values are never read."""
    from seedcoder.model import check_cu_seqlens

    host = torch.tensor([0, 3, 8, 16], dtype=torch.int32)
    check_cu_seqlens(host, 2, 8, max_seqlen=8)
    with pytest.raises(ValueError, match="max_seqlen: 4 is shorter"):
        check_cu_seqlens(host, 2, 8, max_seqlen=4)
    with pytest.raises(ValueError, match="must rise from 0 to B\\*S = 16"):
        check_cu_seqlens(torch.tensor([0, 9, 8, 16], dtype=torch.int32), 2, 8)
    with pytest.raises(ValueError, match="expected a 1-D int32/int64 tensor"):
        check_cu_seqlens(host.float(), 2, 8)
    device_tensor = torch.empty(4, dtype=torch.int32, device="meta")  # reading a value would raise
    check_cu_seqlens(device_tensor, 2, 8, max_seqlen=1)
    with pytest.raises(ValueError, match="expected a 1-D int32/int64 tensor"):
        check_cu_seqlens(device_tensor[:1], 2, 8)


# ------------------------------------------------------------------------------------------ benchmark
def test_train_benchmark_runs_and_writes_its_report(tmp_path, capsys):
    import json

    from benchmarks import train

    argv = ["--preset", "debug", "--seq-len", "32", "--batch", "2", "--steps", "2", "--warmup", "1",
            "--impl", "seedcoder", "seedcoder (packed docs)", "--out", str(tmp_path)]
    assert train.main(argv) == 0
    report = json.loads((tmp_path / "train.json").read_text())
    rows = {row["impl"]: row for row in report["rows"]}
    assert set(rows) == {"seedcoder", "seedcoder (packed docs)"}
    assert all(row["skip"] is None and row["tokens_per_s"] > 0 and 4 < row["final_loss"] < 7 for row in rows.values())
    assert (tmp_path / "train.md").read_text().startswith("# seedcoder training-step benchmark")
    assert (tmp_path / "train.csv").read_text().splitlines()[0].startswith("impl,preset,batch,seq_len")
    if not torch.cuda.is_available():
        assert "GPU figures need a GPU" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["triton", "cuda"])
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_kernels_match_the_cpu_reference_path(packed, kernels):
    """The model on the GPU (with either kernels option for RMSNorm and rotary) against the CPU reference path."""
    if kernels == "cuda":
        try:
            import seedcoder._cuda  # noqa: F401
        except ImportError:
            pytest.skip("seedcoder._cuda is not built here (setup.py builds it where torch has CUDA and nvcc)")
    model = build(seed=3)
    cuda_model = Transformer(model.cfg, kernels=kernels)
    cuda_model.load_state_dict(model.state_dict())
    cuda_model.cuda()
    assert {m.kernels for m in cuda_model.modules() if hasattr(m, "kernels")} == {kernels}
    docs, ids, position_ids, cu_seqlens = packed_row(model.cfg.vocab_size, torch.Generator().manual_seed(3))
    ids, position_ids = ids.expand(2, -1).contiguous(), position_ids.expand(2, -1).contiguous()
    cu_seqlens = torch.tensor([0, 5, 12, 16, 21, 28, 32], dtype=torch.int32)
    labels = torch.roll(ids, -1, dims=1)
    kwargs = {"position_ids": position_ids, "cu_seqlens": cu_seqlens} if packed else {}
    loss = model(ids, labels=labels, **kwargs)
    cuda_loss = cuda_model(ids.cuda(), labels=labels.cuda(), **{k: v.cuda() for k, v in kwargs.items()})
    torch.testing.assert_close(cuda_loss.cpu(), loss, rtol=1e-4, atol=1e-4)
    loss.backward()
    cuda_loss.backward()
    for (name, param), cuda_param in zip(model.named_parameters(), cuda_model.parameters()):
        torch.testing.assert_close(cuda_param.grad.cpu(), param.grad, rtol=1e-3, atol=1e-5, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(cuda_model(ids.cuda(), **{k: v.cuda() for k, v in kwargs.items()}).cpu(),
                                   model(ids, **kwargs), rtol=1e-4, atol=1e-4)

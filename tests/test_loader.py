"""The C++ data loader (seedcoder._C via seedcoder.data.loader): plans, packing, ranks, resume, errors, FIM wiring.

Shards here hold "numbered" documents: token = global document id * 1000 + position, so every output token
says where it came from. The C++ unit tests (csrc/loader/tests, ctest) cover the same ground on smaller inputs.
"""

import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch

from seedcoder.data.loader import IGNORE_INDEX, ShardLoader, parse_mixture
from seedcoder.data.manifest import build_manifest, write_manifest
from seedcoder.data.shard_reader import ShardReader
from seedcoder.data.shard_writer import ShardWriter
from seedcoder.data.shards import DocFlag, Language, ShardError, Source, file_sha256

_C = pytest.importorskip("seedcoder._C", reason="the C++ loader extension is not built (pip install --no-build-isolation -e .)")

VOCAB = 1 << 20
PAD = VOCAB - 1  # no numbered token reaches it
TOKENIZER_SHA = "ab" * 32
SOURCES = ["file", "repo", "commit"]
LANGUAGES = ["python", "cpp", "rust"]


def numbered_dataset(directory, *, shards=3, per_shard=70, max_length=400, seed=0, masks=False):
    """Shards of numbered documents plus manifest.json; returns (directory, list of per-document dicts)."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    documents = []
    for shard in range(shards):
        shard_path = os.path.join(directory, f"part-{shard:05d}.scs")
        with ShardWriter(shard_path, vocab_size=VOCAB, tokenizer_sha256=TOKENIZER_SHA) as writer:
            for _ in range(per_shard):
                doc_id = len(documents)
                length = int(rng.integers(1, max_length))
                tokens = doc_id * 1000 + np.arange(length)
                mask = None
                if masks and doc_id % 5 == 0 and length > 2:
                    mask = np.ones(length, dtype=np.uint8)
                    mask[: length // 2] = 0
                info = {
                    "tokens": tokens,
                    "score": float(np.float32(rng.uniform(0, 10))),
                    "source": SOURCES[doc_id % 3],
                    "language": LANGUAGES[(doc_id // 3) % 3],
                    "flags": int(DocFlag.REPO_LEVEL) if doc_id % 7 == 0 else 0,
                    "mask": mask,
                }
                writer.add(tokens, score=info["score"], language=info["language"], source=info["source"], content_hash=doc_id,
                           flags=info["flags"], loss_mask=mask)
                documents.append(info)
    write_manifest(directory, build_manifest(directory))
    return str(directory), documents


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return numbered_dataset(tmp_path_factory.mktemp("loader") / "data")


def make_loader(path, **options):
    options.setdefault("seq_len", 128)
    options.setdefault("batch_size", 4)
    options.setdefault("pad_id", PAD)
    options.setdefault("threads", 2)
    options.setdefault("rank", 0)
    options.setdefault("world_size", 1)
    return ShardLoader(path, **options)


def take(loader, steps=None):
    batches = []
    for batch in loader:
        batches.append({key: value.clone() if torch.is_tensor(value) else value for key, value in batch.items()})
        if steps is not None and len(batches) == steps:
            break
    return batches


def check_batch_structure(batch, seq_len):
    input_ids, labels, positions, loss_mask = batch["input_ids"], batch["labels"], batch["position_ids"], batch["loss_mask"]
    rows = input_ids.shape[0]
    cu = batch["cu_seqlens"]
    assert cu.dtype == torch.int32 and cu[0] == 0 and cu[-1] == rows * seq_len
    lengths = (cu[1:] - cu[:-1]).tolist()
    assert min(lengths) > 0 and batch["max_seqlen"] == max(lengths)
    flat_positions = positions.flatten()
    for begin, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        assert begin // seq_len == (end - 1) // seq_len, "a segment crosses a row"
        assert torch.equal(flat_positions[begin:end], torch.arange(end - begin, dtype=flat_positions.dtype))
    assert torch.equal(loss_mask, labels != IGNORE_INDEX)


# -- plans -------------------------------------------------------------------------------------------------
def test_plan_is_deterministic_and_seeded(dataset):
    path, documents = dataset
    with make_loader(path, seed=5) as a, make_loader(path, seed=5) as b, make_loader(path, seed=6) as c:
        plan_a, plan_b = a.plan(0), b.plan(0)
        assert torch.equal(plan_a["documents"], plan_b["documents"])
        assert not torch.equal(plan_a["documents"], c.plan(0)["documents"])
        assert not torch.equal(plan_a["documents"], a.plan(1)["documents"])
        assert sorted(plan_a["documents"].tolist()) == list(range(len(documents)))  # plain policy: a permutation
        assert torch.equal(take(a, 3)[2]["input_ids"], take(b, 3)[2]["input_ids"])


def test_concat_every_token_exactly_once_per_epoch(dataset):
    path, documents = dataset
    with make_loader(path, epochs=1, seq_len=96, batch_size=3) as loader:
        seen = Counter()
        for batch in take(loader):
            check_batch_structure(batch, 96)
            tokens, labels = batch["input_ids"].flatten(), batch["labels"].flatten()
            real = tokens != PAD
            assert (labels[~real] == IGNORE_INDEX).all()
            seen.update(tokens[real].tolist())
            doc, position = tokens[real] // 1000, tokens[real] % 1000
            lengths = torch.tensor([len(d["tokens"]) for d in documents])[doc]
            expected = torch.where(position + 1 == lengths, torch.full_like(tokens[real], IGNORE_INDEX), tokens[real] + 1)
            assert torch.equal(labels[real], expected)  # next token of the same document, -100 at its end
    expected_tokens = [int(t) for d in documents for t in d["tokens"]]
    assert len(seen) == len(expected_tokens) and set(seen) == set(expected_tokens) and set(seen.values()) == {1}


def test_best_fit_never_cuts_a_document(dataset):
    path, documents = dataset
    with make_loader(path, epochs=1, mode="best_fit", seq_len=512, batch_size=2, best_fit_window=64) as loader:
        whole = Counter()
        padding = total = 0
        for batch in take(loader):
            check_batch_structure(batch, 512)
            flat = batch["input_ids"].flatten()
            cu = batch["cu_seqlens"].tolist()
            for begin, end in zip(cu[:-1], cu[1:]):
                if flat[begin] == PAD:
                    padding += end - begin
                    continue
                doc = int(flat[begin]) // 1000
                assert int(flat[begin]) % 1000 == 0 and end - begin == len(documents[doc]["tokens"])  # whole, uncut
                assert torch.equal(flat[begin:end], torch.as_tensor(documents[doc]["tokens"]))
                whole[doc] += 1
            total += flat.numel()
    assert sorted(whole) == list(range(len(documents))) and set(whole.values()) == {1}
    assert padding / total < 0.1


def test_score_threshold_and_drop_bottom(dataset):
    path, documents = dataset
    scores = np.array([d["score"] for d in documents], dtype=np.float32)
    with make_loader(path, min_score=4.0) as loader:
        kept = set(loader.kept_documents().tolist())
        assert kept == {i for i, s in enumerate(scores) if s >= np.float32(4.0)}
        assert set(loader.plan(0)["documents"].tolist()) == kept
    with make_loader(path, min_score=4.0, drop_bottom=0.3) as loader:
        kept_after = set(loader.kept_documents().tolist())
    assert len(kept_after) == len(kept) - int(np.floor(0.3 * len(kept)))
    assert max(scores[sorted(kept - kept_after)]) <= min(scores[sorted(kept_after)])


def test_mixture_proportions_track_the_weights(dataset):
    path, documents = dataset
    weights = {"file": 0.6, "repo/*": 0.3, "commit": 0.1}
    with make_loader(path, mixture=weights) as loader:
        plan = loader.plan(0)
        lengths = (plan["stream_begin"][1:] - plan["stream_begin"][:-1]).tolist()
        by_source = Counter()
        total = 0
        for doc, length in zip(plan["documents"].tolist(), lengths):
            by_source[documents[doc]["source"]] += length
            total += length
            for key, source in (("file", "file"), ("repo/*", "repo"), ("commit", "commit")):
                assert abs(by_source[source] - weights[key] * total) <= 2 * 400  # within a document or two, all along
        groups = {key: (weight, count) for key, weight, count, _ in loader.kept_groups()}
        assert groups["file"][0] == pytest.approx(0.6)
        # "file" is up-weighted (a third of the data at 60%): it ran out and started fresh passes.
        entries = zip(plan["documents"].tolist(), plan["occurrences"].tolist())
        file_docs = [(d, o) for d, o in entries if documents[d]["source"] == "file"]
        assert max(o for _, o in file_docs) >= 1
        first_pass = sorted(d for d, o in file_docs if o == 0)
        assert first_pass == sorted(i for i, d in enumerate(documents) if d["source"] == "file")


def test_mixture_keys():
    assert parse_mixture({"file": 1, "python": 2, "commit/rust": 3, "*/cpp": 4, "web/*": 5, "*": 6}) == [
        ("file", int(Source.FILE), -1, 1.0),
        ("python", -1, int(Language.PYTHON), 2.0),
        ("commit/rust", int(Source.COMMIT), int(Language.RUST), 3.0),
        ("*/cpp", -1, int(Language.CPP), 4.0),
        ("web/*", int(Source.WEB), -1, 5.0),
        ("*", -1, -1, 6.0),
    ]
    for bad, message in (({"klingon": 1}, "unknown language"), ({"nope/python": 1}, "unknown source"),
                         ({"file": -1}, ">= 0"), ({"file": 1, "file/*": 1}, "same group"), ({"file": 0}, "positive")):
        with pytest.raises(ValueError, match=message):
            parse_mixture(bad)


def test_score_weighted_sampling(dataset):
    path, documents = dataset
    with make_loader(path, score_temperature=1.0, seed=3) as loader:
        drawn = loader.plan(0)["documents"].tolist()
    scores = np.array([d["score"] for d in documents])
    assert scores[drawn].mean() > scores.mean() + 2  # exp(score / 1) strongly favours high scores
    assert len(set(drawn)) < len(drawn)  # with replacement


# -- ranks and resume --------------------------------------------------------------------------------------
def global_stream(path, phases, **options):
    """Rows of the global stream (row_epoch, row_index, tokens) over phases of (world_size, steps), each phase
    resuming from the state the previous one ended at (the state of rank 0, which all ranks share)."""
    rows, state = [], None
    for world_size, steps in phases:
        loaders = [make_loader(path, rank=r, world_size=world_size, **options) for r in range(world_size)]
        if state is not None:
            for loader in loaders:
                loader.load_state_dict(state)
        iterators = [iter(loader) for loader in loaders]
        for _ in range(steps):
            for iterator in iterators:
                batch = next(iterator)
                for r in range(batch["input_ids"].shape[0]):
                    rows.append((int(batch["row_epoch"][r]), int(batch["row_index"][r]), batch["input_ids"][r].clone()))
            states = [loader.state_dict() for loader in loaders]
            assert all(s == states[0] for s in states)
        state = states[0]
        for loader in loaders:
            loader.close()
    return rows, state


def assert_same_rows(a, b):
    assert len(a) == len(b)
    for (ea, ra, ta), (eb, rb, tb) in zip(a, b):
        assert (ea, ra) == (eb, rb) and torch.equal(ta, tb)


@pytest.mark.parametrize("mode", ["concat", "best_fit"])
def test_resume_equals_uninterrupted_also_across_world_sizes(dataset, mode):
    path, _ = dataset
    options = {"mode": mode, "batch_size": 2, "seq_len": 64, "score_temperature": 2.0 if mode == "best_fit" else None}
    reference, _ = global_stream(path, [(1, 60)], **options)
    resumed, _ = global_stream(path, [(1, 7), (1, 53)], **options)
    assert_same_rows(reference, resumed)  # kill at step 7, resume
    changed, state = global_stream(path, [(2, 5), (3, 10), (1, 10)], **options)  # 20 + 60 + 20 rows
    assert_same_rows(reference[: len(changed)], changed)
    assert len(changed) == 100 and state["epoch"] * 10**6 + state["row"] > 0


def test_resume_crosses_epochs(dataset):
    path, _ = dataset
    with make_loader(path, seq_len=256, batch_size=8) as loader:
        rows_per_epoch = loader.row_count(0)
        steps = rows_per_epoch // 8 + 3  # past the first epoch's end
        reference = take(loader, steps + 2)
    assert reference[steps - 1]["row_epoch"].max() == 1  # the stream ran into epoch 1
    with make_loader(path, seq_len=256, batch_size=8) as first:
        take(first, steps)
        state = first.state_dict()
    assert state["epoch"] == 1
    with make_loader(path, seq_len=256, batch_size=8) as second:
        second.load_state_dict(state)
        for expected, got in zip(reference[steps:], take(second, 2)):
            assert torch.equal(expected["input_ids"], got["input_ids"]) and torch.equal(expected["labels"], got["labels"])


def test_ranks_are_disjoint_and_cover_the_epoch(dataset):
    path, _ = dataset
    seen = []
    for rank in range(3):
        with make_loader(path, rank=rank, world_size=3, epochs=1, batch_size=2, seq_len=100) as loader:
            rows_total = loader.row_count(0)
            batches = take(loader)
            seen.append([int(r) for b in batches for r in b["row_index"] if r >= 0])
            steps = len(batches)
    assert all(len(set(a) & set(b)) == 0 for i, a in enumerate(seen) for b in seen[i + 1 :])
    assert sorted(sum(seen, [])) == list(range(rows_total))
    assert steps == -(-rows_total // 6)  # every rank makes the same number of steps (the last padded)


def test_state_is_checked(dataset):
    path, _ = dataset
    with make_loader(path) as loader:
        take(loader, 2)
        state = loader.state_dict()
    assert set(state) == {"format", "version", "epoch", "row", "fingerprint"}
    with make_loader(path, batch_size=3, threads=1) as other_batching:  # batch size and threads do not matter
        other_batching.load_state_dict(state)
    with make_loader(path, seq_len=64) as other:
        with pytest.raises(ValueError, match="other shards or options"):
            other.load_state_dict(state)
        other.load_state_dict(state, strict=False)
    with pytest.raises(ValueError, match="not a loader state"):
        loader.load_state_dict({"epoch": 0})


# -- outputs -----------------------------------------------------------------------------------------------
def test_loss_mask_eos_and_int32(tmp_path):
    path, documents = numbered_dataset(tmp_path / "masked", shards=1, per_shard=30, max_length=60, masks=True)
    eos = VOCAB - 2
    with make_loader(path, epochs=1, seq_len=64, eos_id=eos, index_dtype=torch.int32, threads=0) as loader:
        batches = take(loader)
    assert batches[0]["input_ids"].dtype == torch.int32 and batches[0]["labels"].dtype == torch.int32
    tokens = torch.cat([b["input_ids"].flatten() for b in batches]).long()
    labels = torch.cat([b["labels"].flatten() for b in batches]).long()
    for batch in batches:
        check_batch_structure(batch, 64)
    assert int((tokens == eos).sum()) == len(documents)  # one <eos> appended to every document
    for doc_id, document in enumerate(documents):
        if document["mask"] is None:
            continue
        where = torch.isin(tokens, torch.as_tensor(document["tokens"]))
        targets = torch.as_tensor(document["mask"][1:], dtype=torch.bool)  # the label of token i is token i + 1
        got = labels[where][:-1] != IGNORE_INDEX
        assert torch.equal(got, targets), doc_id


def test_pinned_memory_when_cuda(dataset):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA: batches are plain CPU tensors (pin_memory defaults to torch.cuda.is_available())")
    path, _ = dataset
    with make_loader(path, pin_memory=None) as loader:
        batch = next(iter(loader))
    assert batch["input_ids"].is_pinned() and batch["input_ids"].cuda(non_blocking=True).is_cuda


# -- errors and lifecycle ----------------------------------------------------------------------------------
def test_damaged_shards_raise_shard_error(tmp_path):
    path, _ = numbered_dataset(tmp_path / "d", shards=1, per_shard=10)
    shard = os.path.join(path, "part-00000.scs")
    good = open(shard, "rb").read()
    with ShardReader(shard) as reader:
        tokens_offset, tokens_length, _ = reader.header.sections[5]
    cases = {
        "truncated inside section 'tokens'": good[: tokens_offset + tokens_length // 2],
        "checksum mismatch in section 'tokens'": (
            good[: tokens_offset + 5] + bytes([good[tokens_offset + 5] ^ 1]) + good[tokens_offset + 6 :]
        ),
        "not a shard: bad magic": b"XXXX" + good[4:],
        "header checksum mismatch": good[:30] + bytes([good[30] ^ 1]) + good[31:],
    }
    for problem, content in cases.items():
        broken = os.path.join(tmp_path, "broken.scs")
        with open(broken, "wb") as file:
            file.write(content)
        with pytest.raises(ShardError, match=problem) as error:
            make_loader([broken])
        assert error.value.path == broken
    with pytest.raises(ShardError, match="tokenizer mismatch"):
        make_loader([shard], expected_tokenizer_sha256="cd" * 32)
    tokenizer_file = tmp_path / "tokenizer.json"
    tokenizer_file.write_text("{}")
    with pytest.raises(ShardError, match="tokenizer mismatch"):
        make_loader([shard], expected_tokenizer_sha256=file_sha256(tokenizer_file))


def test_bad_options_are_value_errors(dataset):
    path, _ = dataset
    for options, message in (({"mode": "zigzag"}, "mode"), ({"rank": 3, "world_size": 2}, "rank"), ({"seq_len": 0}, "seq_len"),
                             ({"mixture": {"web": 1.0}}, "no document"), ({"drop_bottom": 1.0}, "drop_bottom"),
                             ({"min_score": 11.0}, "no document")):
        with pytest.raises(ValueError, match=message):
            make_loader(path, **options)


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0


def _thread_names() -> list[str]:
    names = []
    for task in sorted(os.listdir("/proc/self/task")):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # exited meanwhile
            pass
    return names


def _thread_count_settles_at(expected: int, seconds: float = 5.0) -> int:
    """The thread count once it reaches `expected`, or the last count after `seconds`: a joined thread can stay
    listed in /proc/self/task for a moment after pthread_join returns (the kernel finishes its exit
    asynchronously), which a loaded machine stretches. A leaked thread never leaves, so it still fails."""
    deadline = time.monotonic() + seconds
    while (count := _thread_count()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return count


def test_close_and_exit_never_hang(dataset):
    path, _ = dataset
    threads_before = _thread_count()
    loader = make_loader(path, threads=2, prefetch=2)
    next(iter(loader))
    assert _thread_count() >= threads_before + 2
    loader.close()
    loader.close()
    assert _thread_count_settles_at(threads_before) == threads_before, _thread_names()  # workers joined, none leaked
    with pytest.raises(RuntimeError, match="closed"):
        next(loader)
    # An interpreter that exits with live loaders (workers blocked on a full ring) must exit promptly and cleanly.
    script = (
        "from seedcoder.data.loader import ShardLoader\n"
        f"a = ShardLoader({path!r}, seq_len=64, batch_size=2, threads=2, prefetch=2, rank=0, world_size=1)\n"
        "b = ShardLoader(a.dataset.shard_path(0), seq_len=32, threads=2, rank=0, world_size=1)\n"
        "next(a); next(b)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# -- fill-in-the-middle wiring (the transform itself is tested with csrc/loader/fim.cpp) ---------------------
FIM_SPECIALS = ["<[end▁of▁sentence]>", "<[fim-suffix]>", "<[fim-prefix]>", "<[fim-middle]>"]


def code_texts(count, seed=0):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "δέλτα", "total", "count", "naïve", "value", "→", "items", "résumé", "x", "y"]
    texts = []
    for index in range(count):
        lines = [f"def f{index}({rng.choice(words)}, {rng.choice(words)}):"]
        for _ in range(int(rng.integers(1, 8))):
            lines.append(f"    {rng.choice(words)} = {rng.choice(words)} + {int(rng.integers(0, 999))}  # {rng.choice(words)} ✓")
        lines.append(f"    return {rng.choice(words)}\n")
        texts.append("\n".join(lines))
    return texts


@pytest.fixture(scope="module")
def fim_dataset(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory = tmp_path_factory.mktemp("fim") / "data"
    directory.mkdir()
    texts = code_texts(240)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=FIM_SPECIALS, initial_alphabet=alphabet)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer_path = directory / "tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    sha = file_sha256(tokenizer_path)
    eos = tokenizer.token_to_id(FIM_SPECIALS[0])
    documents = []
    with ShardWriter(directory / "part-00000.scs", vocab_size=tokenizer.get_vocab_size(), tokenizer_sha256=sha) as writer:
        for index, text in enumerate(texts):
            ids = tokenizer.encode(text).ids + ([eos] if index % 3 == 0 else [])  # some documents carry their own <eos>
            repo_level = index % 4 == 1
            writer.add(ids, score=5.0, language="python", source="repo" if repo_level else "file", content_hash=index,
                       flags=int(DocFlag.REPO_LEVEL) if repo_level else 0)
            documents.append({"text": text, "ids": ids, "repo_level": repo_level})
    write_manifest(directory, build_manifest(directory, tokenizer_path=tokenizer_path))
    return str(directory), documents, tokenizer


def epoch_stream(loader, epoch=0):
    rows = loader.row_count(epoch)
    return loader.rows(epoch, 0, rows)["input_ids"].flatten()


def test_fim_is_wired_and_exact(fim_dataset):
    path, documents, tokenizer = fim_dataset
    names = ("<[fim-suffix]>", "<[fim-prefix]>", "<[fim-middle]>", FIM_SPECIALS[0])
    suffix, prefix, middle, eos = (tokenizer.token_to_id(name) for name in names)
    with make_loader(path, fim_rate=0.5, seed=7, seq_len=128, pad_id=None) as loader:
        assert loader.fim_token_ids == (suffix, prefix, middle) and loader.eos_id == eos
        plan = loader.plan(0)
        stream = epoch_stream(loader).tolist()
        bpe = _C.ByteLevelBPE(*_tables(path))
        spec = _C.FimSpec(suffix, prefix, middle, eos, 0.5)
        fim_seed = _C.loader_fim_seed(7)
        begins = plan["stream_begin"].tolist()
        id_to_bytes = _tables(path)[0]
        cuts = 0
        fim_flags = plan["fim"].tolist()
        for entry, (doc, occurrence) in enumerate(zip(plan["documents"].tolist(), plan["occurrences"].tolist())):
            document = documents[doc]
            piece = stream[begins[entry] : begins[entry + 1]]
            if not fim_flags[entry]:
                assert not _C.fim_decision(0.5, fim_seed, 0, (occurrence << 32) | doc) or document["repo_level"]
                assert piece == document["ids"] + ([] if document["ids"][-1] == eos else [eos])
                assert tokenizer.decode(piece, skip_special_tokens=True) == document["text"]
                continue
            assert not document["repo_level"]
            full = _C.fim_apply_spm(document["ids"], bpe, spec, fim_seed, 0, (occurrence << 32) | doc)
            assert full is not None and full[0] == suffix and full[-1] == eos
            # The loader's sample is exactly apply_spm's, with any surplus over text + 4 cut from the end of S,
            # then from the start of P, then from the end of M.
            text_tokens = len(document["ids"]) - (document["ids"][-1] == eos)
            assert len(piece) == text_tokens + 4
            assert piece == fit_fim_sample(full, text_tokens + 4, prefix, middle)
            cut = len(full) - len(piece)
            cuts += cut > 0
            # Un-permuted and decoded: the document's text (less the cut tokens at its very end).
            at_prefix, at_middle = piece.index(prefix), piece.index(middle)
            s, p, m = piece[1:at_prefix], piece[at_prefix + 1 : at_middle], piece[at_middle + 1 : -1]
            if cut == 0:
                assert tokenizer.decode(p + m + s, skip_special_tokens=False) == document["text"]
            else:  # what is left of the text, in order, is a piece of it (bytes: a cut token may hold half a character)
                text_bytes = document["text"].encode()
                assert b"".join(id_to_bytes[t] for t in p + m + s) in text_bytes
        assert cuts < sum(fim_flags)  # most samples fit text + 4 exactly
        eligible = [flag for flag, doc in zip(fim_flags, plan["documents"].tolist()) if not documents[doc]["repo_level"]]
        assert 0.35 < sum(eligible) / len(eligible) < 0.65  # rate 0.5 over ~180 documents
        assert not any(flag for flag, doc in zip(fim_flags, plan["documents"].tolist()) if documents[doc]["repo_level"])


def fit_fim_sample(full, target, prefix, middle):
    """The loader's length rule for a FIM sample (csrc/loader/packer.h), in Python."""
    excess = len(full) - target
    at = full.index(prefix)
    suffix_cut = min(excess, at - 1)
    out = full[: at - suffix_cut] + full[at:]
    excess -= suffix_cut
    at = out.index(prefix)
    prefix_cut = min(excess, out.index(middle) - at - 1)
    out = out[: at + 1] + out[at + 1 + prefix_cut :]
    excess -= prefix_cut
    return out[: len(out) - 1 - excess] + out[-1:] if excess else out


def _tables(path):
    from seedcoder.data.tokenizer_tables import load_tokenizer_tables

    tables = load_tokenizer_tables(os.path.join(path, "tokenizer.json"))
    return tables.id_to_bytes, tables.merges, tables.ignore_merges


@pytest.mark.parametrize("options", [{"fim_token_level": True}, {"mode": "best_fit", "score_temperature": 1.0}])
def test_fim_variants_keep_the_layout(fim_dataset, options):
    path, documents, tokenizer = fim_dataset
    suffix = tokenizer.token_to_id("<[fim-suffix]>")
    with make_loader(path, fim_rate=0.5, seq_len=256, batch_size=2, epochs=1, **options) as loader:
        plan = loader.plan(0)
        assert 0.3 < plan["fim"].float().mean() < 0.7 * 3 / 4 + 0.1
        starts = 0
        for batch in take(loader):
            check_batch_structure(batch, 256)
            flat = batch["input_ids"].flatten()
            starts += int((flat == suffix).sum())
    assert starts == int(plan["fim"].sum())  # every FIM sample made it into the batches once


def test_worker_errors_surface_in_python(fim_dataset, tmp_path):
    """A FIM table that does not cover a document's ids fails inside a worker thread: next() raises it, every time."""
    path, documents, tokenizer = fim_dataset
    vocab = tokenizer.get_vocab_size()
    shard = tmp_path / "wide.scs"
    with ShardWriter(shard, vocab_size=vocab + 100, tokenizer_sha256="cd" * 32) as writer:
        for index in range(20):
            ids = documents[index]["ids"][:-1] + [vocab + 5]
            writer.add(ids, score=1.0, language="python", source="file", content_hash=index)
    tokenizer_path = os.path.join(path, "tokenizer.json")
    threads_before = _thread_count()
    loader = ShardLoader([shard], tokenizer=tokenizer_path, seq_len=64, fim_rate=1.0, threads=2, rank=0, world_size=1)
    for _ in range(2):
        with pytest.raises(ValueError, match=str(vocab + 5)):
            next(loader)
    loader.close()
    assert _thread_count_settles_at(threads_before) == threads_before, _thread_names()


def test_a_list_of_datasets_is_one_dataset_and_the_mixture_selects_hq(tmp_path):
    """Continued pretraining draws on the curated set and the high-quality set (source "hq") together."""
    main, main_documents = numbered_dataset(tmp_path / "main", shards=2, per_shard=30)
    hq = tmp_path / "hq"
    os.makedirs(hq)
    with ShardWriter(str(hq / "part-00000.scs"), vocab_size=VOCAB, tokenizer_sha256=TOKENIZER_SHA) as writer:
        for doc in range(10):
            writer.add(900_000 + doc * 1000 + np.arange(50), score=9.0, language="python", source="hq", content_hash=doc)
    write_manifest(str(hq), build_manifest(str(hq)))
    with make_loader([main, str(hq)]) as loader:
        assert len(loader.plan(0)["documents"]) == len(main_documents) + 10  # every document once per epoch
    with make_loader([main, str(hq)], mixture={"hq": 0.5, "*": 0.5}) as loader:
        groups = {key: count for key, _, count, _ in loader.kept_groups()}
        assert groups["hq"] == 10 and groups["*"] == len(main_documents)
    other = tmp_path / "other"
    os.makedirs(other)
    with ShardWriter(str(other / "part-00000.scs"), vocab_size=VOCAB, tokenizer_sha256="cd" * 32) as writer:
        writer.add(np.arange(5), score=1.0, language="python", source="file", content_hash=0)
    write_manifest(str(other), build_manifest(str(other)))
    with pytest.raises(ValueError, match="another tokenizer"):
        make_loader([main, str(other)])
    with pytest.raises(ValueError, match="not both"):
        make_loader([main, str(other / "part-00000.scs")])

"""vLLM behind our engine's interface (`generate`, `chat`, SamplingParams in, Completions out), for GPU machines
with vllm installed, and the HF tokenizer files vLLM (and transformers) need next to a converted checkpoint.

    from seedcoder.vllm_engine import VLLMEngine
    engine = VLLMEngine.from_checkpoint("runs/demo/checkpoints")     # ours is converted to an HF folder first

`seedcoder.generate.load_engine(path, backend="auto")` picks this engine when vLLM can run here.

Weight updates for RL (`VLLMEngine.load_weights`, UNTESTED: vLLM is not installed where our tests run) use vLLM's
own mechanism, as TRL does: the model's `load_weights` with Hugging Face tensor names, run in every worker through
`LLM.collective_rpc`, then the prefix cache reset (its K/V came from the old weights). Our server's HTTP protocol
(seedcoder/serve.py, /v1/weights) is the tested path; `vllm serve` has no such endpoint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seedcoder.chat_template import CHAT_TEMPLATE_JINJA, tokenize_chat
from seedcoder.checkpoint import find_tokenizer, read_model_config, resolve_checkpoint
from seedcoder.data.tokenizer_tables import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN
from seedcoder.fileio import atomic_write_text
from seedcoder.hf_convert import convert_to_hf
from seedcoder.hf_format import to_hf_name
from seedcoder.sampling import Completion, SamplingParams
from seedcoder.tokenizer import load_tokenizer


class BackendUnavailable(RuntimeError):
    """A generation backend (vLLM) that cannot run here; the message says why (missing package, no GPU)."""


def vllm_unavailable_reason() -> str | None:
    """Why the vLLM backend cannot run here, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "the 'vllm' package is not installed (pip install vllm, on a machine with a CUDA GPU)"
    if not torch.cuda.is_available():
        return "vllm is installed but no CUDA GPU is visible"
    return None


def write_hf_tokenizer_files(hf_dir: str | os.PathLike, max_seq_len: int | None = None) -> None:
    """tokenizer_config.json (Seed-Coder's specials, no automatic bos, the chat template) and
    generation_config.json (bos / eos / pad ids) for an HF folder holding our tokenizer.json, so transformers'
    AutoTokenizer, `vllm serve` and VLLMEngine read our tokenizer and chat format correctly."""
    hf_dir = Path(hf_dir)
    tokenizer = load_tokenizer(hf_dir)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
              "chat_template": CHAT_TEMPLATE_JINJA, "clean_up_tokenization_spaces": False}
    generation = {}
    for key, token in (("bos", BOS_TOKEN), ("eos", EOS_TOKEN), ("pad", PAD_TOKEN)):
        if tokenizer.token_to_id(token) is not None:
            config[f"{key}_token"] = token
            generation[f"{key}_token_id"] = tokenizer.token_to_id(token)
    if max_seq_len:
        config["model_max_length"] = max_seq_len
    atomic_write_text(hf_dir / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(hf_dir / "generation_config.json", json.dumps(generation, indent=2) + "\n")


def _load_weights_in_worker(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside each vLLM worker (LLM.collective_rpc passes the worker first)."""
    worker.model_runner.model.load_weights(weights=weights)


class VLLMEngine:
    """vLLM behind the Engine interface (`generate`, `chat`), for GPU machines with vllm installed.

    hf_dir: a Hugging Face folder (`seedcoder convert --to-hf`, or `VLLMEngine.from_checkpoint` converts ours).
    Reported log-probabilities: vLLM returns one kind per engine; `model_logprobs` holds vLLM's raw log-probs
    (logprobs_mode "raw_logprobs", its default: log_softmax of the raw logits) and `logprobs` is None.
    Raises BackendUnavailable (naming the missing package, or the missing GPU) where vLLM cannot run.
    """

    def __init__(self, hf_dir: str | os.PathLike, *, dtype: str = "auto", seed: int = 0, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.85, **llm_kwargs: Any):
        reason = vllm_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"VLLMEngine: {reason}")
        import vllm

        self._vllm = vllm
        self.llm = vllm.LLM(model=str(hf_dir), dtype=dtype, seed=seed, max_model_len=max_model_len,
                            gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs)
        self.hf_tokenizer = self.llm.get_tokenizer()
        self.tokenizer = getattr(self.hf_tokenizer, "backend_tokenizer", self.hf_tokenizer)
        self.eos_id = self.hf_tokenizer.eos_token_id
        self.weights_version = 0

    def load_weights(self, state: dict[str, torch.Tensor]) -> int:
        """UNTESTED until a GPU run with vLLM exercises it (module docstring). Swap the served weights for `state`
        (the whole model, our parameter names: seedcoder.posttrain.policy.full_state_dict) between generate calls;
        returns the new weights version."""
        weights = [(to_hf_name(name), tensor) for name, tensor in state.items()]
        self.llm.collective_rpc(_load_weights_in_worker, args=(weights,))
        self.llm.reset_prefix_cache()
        self.weights_version += 1
        return self.weights_version

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, hf_dir: str | os.PathLike | None = None,
                        tokenizer: str | os.PathLike | None = None, dtype: torch.dtype = torch.bfloat16,
                        **kwargs: Any) -> VLLMEngine:
        """An HF folder is used as it is; our checkpoint is converted (to hf_dir, default a temporary folder)."""
        reason = vllm_unavailable_reason()
        if reason is not None:  # before converting anything
            raise BackendUnavailable(f"VLLMEngine: {reason}")
        directory, kind = resolve_checkpoint(path)
        if kind == "ours":
            tokenizer_path = Path(tokenizer) if tokenizer is not None else find_tokenizer(directory)
            out = Path(hf_dir) if hf_dir is not None else Path(tempfile.mkdtemp(prefix="seedcoder-vllm-")) / "hf"
            convert_to_hf(directory, out, dtype=dtype, tokenizer=tokenizer_path, log=lambda *_: None)
            write_hf_tokenizer_files(out, read_model_config(directory).max_seq_len)
            directory = out
        return cls(directory, **kwargs)

    def _sampling_params(self, params: SamplingParams) -> Any:
        return self._vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k if params.top_k else -1,
            repetition_penalty=params.repetition_penalty, max_tokens=params.max_tokens, stop=list(params.stop),
            stop_token_ids=list(params.stop_token_ids or ()), ignore_eos=params.stop_token_ids == (), seed=params.seed,
            logprobs=params.top_logprobs if params.logprobs or params.top_logprobs else None)

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
                 | None = None, *, progress: bool = False) -> list[list[Completion]]:
        prompts = list(prompts)
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        inputs = [p if isinstance(p, str) else {"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(inputs, [self._sampling_params(p) for p in params], use_tqdm=progress)
        results = []
        for output, sp in zip(outputs, params):
            completions = []
            for sample in sorted(output.outputs, key=lambda o: o.index):
                token_ids = list(sample.token_ids)
                model_logprobs = top = None
                if sample.logprobs is not None:
                    model_logprobs = [float(step[t].logprob) for t, step in zip(token_ids, sample.logprobs)]
                    if sp.top_logprobs:
                        top = [{t: float(lp.logprob) for t, lp in step.items() if lp.rank <= sp.top_logprobs}
                               for step in sample.logprobs]
                completions.append(Completion(sample.text, token_ids, None, model_logprobs if sp.logprobs else None,
                                              "stop" if sample.finish_reason == "stop" else "length", top))
            results.append(completions)
        return results

    def chat(self, conversations: Sequence[Sequence[dict]], params: SamplingParams | Sequence[SamplingParams] | None = None,
             **kwargs: Any) -> list[list[Completion]]:
        return self.generate([tokenize_chat(m, self.tokenizer).input_ids for m in conversations], params, **kwargs)


__all__ = ["BackendUnavailable", "VLLMEngine", "vllm_unavailable_reason", "write_hf_tokenizer_files"]

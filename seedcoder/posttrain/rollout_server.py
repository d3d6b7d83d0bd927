"""GRPO's rollouts from an OpenAI-compatible server instead of the embedded engine, with weight updates pushed
after every step (the `[rollout]` section of `seedcoder train rl`: backend = "server", base_url = ...).

    rollouts = ServerRollouts("http://127.0.0.1:8000/v1", tokenizer, weights_dir="runs/rl/rollout_weights")
    grpo_train(model, tokenizer, problems, reward_fn, config, engine=rollouts)   # pushes, then samples, each step

The protocol is our server's (seedcoder/serve.py): `push_weights(model)` writes the model's whole state dict
(all-gathered from FSDP2 shards when sharded: collective) to one safetensors file under `weights_dir`, which must
be a filesystem the server sees, and POSTs {"path", "version"} to /v1/weights; the server swaps the weights in
between requests and answers once they serve. `generate` sends one /v1/completions request per call (token-id
prompts, n samples each, the sampling fields of SamplingParams including the seed, logprobs 0 for the sampled
tokens' log-probs and vLLM's return_token_ids for their ids) and returns Completions like Engine.generate. Every
answer names its "weights_version"; one other than the last pushed is an error (stale rollouts are the bug the
protocol exists to prevent), and the trainer's log-prob parity monitor compares the server's log-probs with its own.

On many ranks every rank requests its own groups; rank 0 alone writes the file and POSTs, between two barriers.
`vllm serve` has no such endpoint: seedcoder.vllm_engine holds the vLLM side (untested here).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from seedcoder.posttrain.policy import full_state_dict, is_distributed
from seedcoder.sampling import Completion, SamplingParams


class RolloutServerError(RuntimeError):
    """The server refused a request, could not be reached, or answered from other weights than the pushed ones."""


class ServerRollouts:
    """Engine.generate's interface over HTTP, plus `push_weights` (module docstring)."""

    def __init__(self, base_url: str, tokenizer: Any, *, weights_dir: str | os.PathLike, model: str | None = None,
                 timeout: float = 600.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: expected http(s)://host:port/v1, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.weights_dir = os.fspath(weights_dir)
        self.timeout = timeout
        self.model = model or self._request("GET", "/models")["data"][0]["id"]
        self.version = int(self._request("GET", "/weights")["version"])

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise RolloutServerError(f"{method} {self.base_url}{path}: HTTP {error.code}: {detail}") from None
        except urllib.error.URLError as error:
            raise RolloutServerError(f"{method} {self.base_url}{path}: {error.reason}") from None

    def encode_prompt(self, prompt: str | Sequence[int], where: str = "prompt") -> list[int]:
        """A prompt's token ids with the trainer's tokenizer (the server's must be the same)."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt).ids
        elif isinstance(prompt, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = list(prompt)
        else:
            raise ValueError(f"{where}: expected a string or a list of token ids, got {type(prompt).__name__}")
        if not ids:
            raise ValueError(f"{where}: the prompt is empty")
        return ids

    @torch.no_grad()
    def push_weights(self, model: torch.nn.Module) -> int:
        """Send `model`'s current weights as version + 1 (collective on many ranks); returns the new version."""
        state = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in full_state_dict(model).items()}
        version = self.version + 1
        rank = dist.get_rank() if is_distributed() else 0
        if rank == 0:
            os.makedirs(self.weights_dir, exist_ok=True)
            path = os.path.abspath(os.path.join(self.weights_dir, f"weights-{version:08d}.safetensors"))
            temp = path + ".tmp"
            save_file(state, temp)
            os.replace(temp, path)  # the server never reads a half-written file
            answer = self._request("POST", "/weights", {"path": path, "version": version})
            if answer["version"] != version:
                raise RolloutServerError(f"POST /weights: the server serves version {answer['version']}, not {version}")
            previous = os.path.join(self.weights_dir, f"weights-{version - 1:08d}.safetensors")
            if os.path.exists(previous):
                os.remove(previous)  # loaded by the server already: one file on disk at a time
        if is_distributed():
            dist.barrier()  # no rank samples before the new weights serve
        self.version = version
        return version

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        """params.n completions of each prompt (token ids), sampled by the server from the pushed weights."""
        if not prompts:
            return []
        body = {"model": self.model, "prompt": [list(p) for p in prompts], "n": params.n, "temperature": params.temperature,
                "top_p": params.top_p, "top_k": params.top_k, "repetition_penalty": params.repetition_penalty,
                "max_tokens": params.max_tokens, "seed": params.seed, "logprobs": 0, "return_token_ids": True}
        if params.stop_token_ids is not None:  # exactly these (the engine's meaning): vLLM's ignore_eos + stop_token_ids
            body.update(ignore_eos=True, stop_token_ids=list(params.stop_token_ids))
        answer = self._request("POST", "/completions", body)
        if answer.get("weights_version") != self.version:
            raise RolloutServerError(f"the server sampled from weights version {answer.get('weights_version')}, "
                                     f"not the pushed {self.version}")
        out: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        for choice in answer["choices"]:
            prompt_index, sample = divmod(int(choice["index"]), params.n)
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
            out[prompt_index][sample] = Completion(text=choice["text"], token_ids=list(choice["token_ids"]),
                                                   logprobs=logprobs, model_logprobs=logprobs,
                                                   finish_reason=choice["finish_reason"])
        if any(c is None for row in out for c in row):
            raise RolloutServerError(f"POST /completions: {len(answer['choices'])} choices for {len(prompts)} x {params.n}")
        return out  # type: ignore[return-value]


__all__ = ["RolloutServerError", "ServerRollouts"]

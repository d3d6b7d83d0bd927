"""Seed-Coder's chat template: messages -> prompt text, or token ids with the mask of assistant tokens.

    from seedcoder.chat_template import render_chat, tokenize_chat
    text = render_chat([{"role": "user", "content": "Write fib(n)."}])          # a string, for any tokenizer
    chat = tokenize_chat(messages, tokenizer, add_generation_prompt=False)      # ids + assistant mask (SFT)
    chat.input_ids, chat.assistant_mask                                          # equal lengths

The format (Seed-Coder-8B-Instruct's): every turn is

    <bos> ROLE "\\n" CONTENT <eos>          bos = <[begin▁of▁sentence]>, eos = <[end▁of▁sentence]>

with ROLE one of system / user / assistant, and the generation prompt is `<bos> "assistant\\n"`: the model
writes the answer and ends it with <eos>. A conversation that does not start with a system message gets
`DEFAULT_SYSTEM_PROMPT`, the system prompt Seed-Coder-8B-Instruct ships with ("You are an AI programming
assistant, utilizing the Seed-Coder model, developed by ByteDance Seed, ..."); pass `system_prompt=None` to
leave it out. CONTENT is used as given (not stripped). A system message may only come first.
`CHAT_TEMPLATE_JINJA` is the same template in the Jinja form Hugging Face tokenizers and vLLM read from
`tokenizer_config.json` ("chat_template"), so `vllm serve` on a converted folder formats chats identically.

Token-level rendering (`tokenize_chat`) encodes the pieces separately: the special tokens by id, each
"ROLE\\n" header, and each content. So the ids a model is trained on end an assistant header exactly the way
the generation prompt does at inference (encoding the rendered string as a whole would let byte-level BPE
merge the header's newline with whitespace that starts the content). The assistant mask is True on the
content tokens and the closing <eos> of assistant turns (what SFT trains the model to write) and False on
everything else (system and user turns, every <bos> and "ROLE\\n" header, the generation prompt).
`decode(input_ids)` gives back `render_chat(...)` exactly. As with every tokenizer-based template (HF, vLLM),
text inside a message that spells a special token is encoded as that token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seedcoder.data.tokenizer_tables import BOS_TOKEN, EOS_TOKEN

ROLES = ("system", "user", "assistant")
DEFAULT_SYSTEM_PROMPT = (
    "You are an AI programming assistant, utilizing the Seed-Coder model, developed by ByteDance Seed, and you only "
    "answer questions related to computer science. For politically sensitive questions, security and privacy issues, "
    "and other non-computer science questions, you will refuse to answer.\n\n"
)

# The same template for Hugging Face tokenizer_config.json / vLLM (tested against transformers' renderer).
CHAT_TEMPLATE_JINJA = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_message = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_message = " + repr(DEFAULT_SYSTEM_PROMPT) + " -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{{- bos_token + 'system\\n' + system_message + eos_token -}}"
    "{%- for message in loop_messages -%}"
    "{{- bos_token + message['role'] + '\\n' + message['content'] + eos_token -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- bos_token + 'assistant\\n' -}}{%- endif -%}"
)


class ChatTemplateError(ValueError):
    """A conversation the template cannot render; the message names the message index and the problem."""


@dataclass(frozen=True)
class ChatTokens:
    """A rendered conversation: token ids, the assistant mask (same length) and the text they decode to."""

    input_ids: list[int]
    assistant_mask: list[bool]
    text: str


def message_text(message: Any, index: int) -> tuple[str, str]:
    """(role, content) of one message; content may be a string or a list of OpenAI text parts."""
    if not isinstance(message, Mapping):
        raise ChatTemplateError(f"messages[{index}]: expected a mapping with 'role' and 'content', got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        raise ChatTemplateError(f"messages[{index}]: role must be one of {', '.join(ROLES)}, got {role!r}")
    content = message.get("content")
    if isinstance(content, str):
        return role, content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts = []
        for part_index, part in enumerate(content):  # OpenAI content parts: [{"type": "text", "text": "..."}]
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ChatTemplateError(f"messages[{index}].content[{part_index}]: only text parts "
                                        f"({{'type': 'text', 'text': ...}}) are supported, got {part!r:.80}")
            texts.append(part["text"])
        return role, "".join(texts)
    raise ChatTemplateError(f"messages[{index}]: content must be a string or a list of text parts, got "
                            f"{type(content).__name__}")


def chat_turns(messages: Sequence[Any], *, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> list[tuple[str, str]]:
    """The (role, content) turns to render: the default system turn added when the first message is not one."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatTemplateError(f"messages: expected a list of messages, got {type(messages).__name__}")
    turns = [message_text(message, index) for index, message in enumerate(messages)]
    for index, (role, _) in enumerate(turns):
        if role == "system" and index > 0:
            raise ChatTemplateError(f"messages[{index}]: a system message may only be the first message")
    if (not turns or turns[0][0] != "system") and system_prompt is not None:
        turns.insert(0, ("system", system_prompt))
    return turns


def render_chat(messages: Sequence[Any], add_generation_prompt: bool = True, *, bos_token: str = BOS_TOKEN,
                eos_token: str = EOS_TOKEN, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> str:
    """The prompt text of a conversation (see the module docstring for the format)."""
    turns = chat_turns(messages, system_prompt=system_prompt)
    text = "".join(f"{bos_token}{role}\n{content}{eos_token}" for role, content in turns)
    return text + (f"{bos_token}assistant\n" if add_generation_prompt else "")


def _backend_tokenizer(tokenizer: Any) -> Any:
    """A `tokenizers.Tokenizer` from itself or a transformers fast tokenizer."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def special_token_id(tokenizer: Any, token: str, what: str) -> int:
    token_id = _backend_tokenizer(tokenizer).token_to_id(token)
    if token_id is None:
        raise ChatTemplateError(f"tokenizer: has no {what} token {token!r}, which the chat template needs")
    return token_id


def tokenize_chat(messages: Sequence[Any], tokenizer: Any, add_generation_prompt: bool = True, *,
                  bos_token: str = BOS_TOKEN, eos_token: str = EOS_TOKEN,
                  system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> ChatTokens:
    """Token ids of the conversation and which of them belong to assistant turns (content + closing <eos>).

    tokenizer: a `tokenizers.Tokenizer` (or a transformers fast tokenizer). Pieces are encoded separately
    (module docstring), without the tokenizer's own special-token post-processing.
    """
    backend = _backend_tokenizer(tokenizer)
    bos = special_token_id(backend, bos_token, "begin-of-sentence")
    eos = special_token_id(backend, eos_token, "end-of-sentence")

    def encode(text: str) -> list[int]:
        return backend.encode(text, add_special_tokens=False).ids if text else []

    ids: list[int] = []
    mask: list[bool] = []
    for role, content in chat_turns(messages, system_prompt=system_prompt):
        header = [bos] + encode(f"{role}\n")
        body = encode(content) + [eos]
        ids += header + body
        mask += [False] * len(header) + [role == "assistant"] * len(body)
    if add_generation_prompt:
        prompt = [bos] + encode("assistant\n")
        ids += prompt
        mask += [False] * len(prompt)
    text = render_chat(messages, add_generation_prompt, bos_token=bos_token, eos_token=eos_token, system_prompt=system_prompt)
    return ChatTokens(ids, mask, text)


__all__ = [
    "CHAT_TEMPLATE_JINJA",
    "DEFAULT_SYSTEM_PROMPT",
    "ROLES",
    "ChatTemplateError",
    "ChatTokens",
    "chat_turns",
    "message_text",
    "render_chat",
    "special_token_id",
    "tokenize_chat",
]

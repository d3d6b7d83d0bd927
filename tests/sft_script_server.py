"""A scripted OpenAI-compatible chat server for the SFT synthesis tests (issue [14]): real HTTP (FastAPI + uvicorn on
a free local port), playing a generator whose behaviour is known, so the steps' mechanics are tested exactly.

    with ScriptServer() as server:                        # server.base_url: http://127.0.0.1:PORT/v1
        generator = make_generator({"backend": "openai", "base_url": server.base_url, "model": "script"})
        ...
        server.calls["solve"]                              # requests per task (cache tests)

What it answers depends on the conversation's last user message: its first line names the task, `TASK: NAME`
(every prompt of the SFT steps starts that way), and a behaviour marker `script:BEHAVIOUR` anywhere in the
conversation picks the script (default "good"). Synthesis copies the marker into the instruction, so every later
step's prompt carries it. The answer formats are the SFT steps' contract (docs: seedcoder/curate/sft_*.py):

    synthesize   "[Instruction]\\n<text>\\n[Verifiable]\\nyes|no"
    restyle      "[Instruction]\\n<text>"
    respond      the response (Markdown, code in ``` fences)
    solve        "[Solution]\\n```python\\n...\\n```\\n[Tests]\\n```python\\n...\\n```"
    revise       the same as solve (the prompt holds the failing code and its error)
    judge        an explanation, then "Rating: [[X]]" (0-10)
    tag          "Topic: <tag>\\nDifficulty: [[X]]" (0-10)

Behaviours: good; broken_then_fixed (solve wrong, revise right); never_fixed (always wrong); off_format (every
answer without its headers); forkbomb (solve/revise fork without end); loop (solve/revise never end); easy
(difficulty 1); bad_judge (rating 2); syntax (respond with a Python block that does not parse); prose
(synthesize says [Verifiable] no: no code to run); slow (sleeps `slow_s` before answering: past a client's
timeout); error (HTTP 500 every time); empty (an empty answer).
"""

from __future__ import annotations

import collections
import re
import socket
import threading
import time

BEHAVIOURS = ("good", "broken_then_fixed", "never_fixed", "off_format", "forkbomb", "loop", "easy", "bad_judge",
              "syntax", "prose", "slow", "error", "empty")
_MARKER = re.compile(r"script:([a-z_]+)")

GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
FORKBOMB = "import os\n\ndef add(a, b):\n    while True:\n        os.fork()\n"
LOOP = "def add(a, b):\n    while True:\n        pass\n"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def _solution(code: str) -> str:
    return f"[Solution]\n```python\n{code}```\n[Tests]\n```python\n{TESTS}```"


def scripted_answer(messages: list[dict]) -> tuple[str, str, str]:
    """(task, behaviour, answer) for a conversation."""
    last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    first = last.split("\n", 1)[0]
    task = first.removeprefix("TASK:").strip().lower() if first.startswith("TASK:") else "unknown"
    found = _MARKER.findall("\n".join(str(m.get("content", "")) for m in messages))
    behaviour = found[-1] if found and found[-1] in BEHAVIOURS else "good"
    marker = f"script:{behaviour}"
    if behaviour == "off_format":
        return task, behaviour, f"Sure! Here you go ({marker}): something without the headers you asked for."
    if behaviour == "empty":
        return task, behaviour, ""
    if task == "synthesize":
        verifiable = "no" if behaviour == "prose" else "yes"
        text = ("Explain when a list comprehension reads better than a loop" if behaviour == "prose" else
                "Write a Python function add(a, b) that returns the sum of two numbers")
        return task, behaviour, f"[Instruction]\n{text} ({marker}).\n[Verifiable]\n{verifiable}"
    if task == "restyle":
        body = last.split("[Instruction]", 1)[-1].strip() if "[Instruction]" in last else f"Add two numbers ({marker})."
        return task, behaviour, f"[Instruction]\nPlease, in a friendly tone: {body.splitlines()[0]}"
    if task == "respond":
        if behaviour == "syntax":
            return task, behaviour, "Here it is:\n\n```python\ndef add(a, b)\n    return a + b\n```\n"
        if behaviour == "prose":
            return task, behaviour, "A comprehension reads better when it builds one list from one loop."
        return task, behaviour, f"Here it is:\n\n```python\n{GOOD}```\n\nIt returns the sum."
    if task in ("solve", "revise"):
        code = {"good": GOOD, "never_fixed": WRONG, "forkbomb": FORKBOMB, "loop": LOOP}.get(behaviour, GOOD)
        if behaviour == "broken_then_fixed":
            code = WRONG if task == "solve" else GOOD
        return task, behaviour, _solution(code)
    if task == "judge":
        rating = 2 if behaviour == "bad_judge" else 8
        return task, behaviour, f"The response is {'wrong' if rating < 5 else 'correct and clear'}.\nRating: [[{rating}]]"
    if task == "tag":
        difficulty = 1 if behaviour == "easy" else 5
        return task, behaviour, f"Topic: arithmetic\nDifficulty: [[{difficulty}]]"
    return task, behaviour, f"I do not know the task {task!r} ({marker})."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScriptServer:
    """The scripted server on a free local port, in a background thread (a context manager)."""

    def __init__(self, slow_s: float = 3.0, model: str = "script"):
        self.slow_s, self.model = slow_s, model
        self.calls: collections.Counter[str] = collections.Counter()
        self.behaviours: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def app(self):
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        app = FastAPI()

        @app.get("/v1/models")
        def models():
            return {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "tests"}]}

        @app.post("/v1/chat/completions")
        def chat(body: dict):
            task, behaviour, answer = scripted_answer(body.get("messages") or [])
            with self._lock:
                self.calls[task] += 1
                self.behaviours[behaviour] += 1
            if behaviour == "error":
                return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}}, status_code=500)
            if behaviour == "slow":
                time.sleep(self.slow_s)
            return {"id": "chatcmpl-script", "object": "chat.completion", "created": int(time.time()),
                    "model": self.model, "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

        return app

    def __enter__(self) -> ScriptServer:
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 20
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError("the scripted server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

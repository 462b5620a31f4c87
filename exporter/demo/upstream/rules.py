"""The deterministic token rules of the demo upstream (see the package docstring for the list).

Everything here is a pure function of the request body, so the integration tests can compute the
numbers a response will carry, and two identical requests get identical response bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

DEFAULT_OUTPUT_TOKENS = 12
# Where a request sets its output budget; the first positive integer found wins.
OUTPUT_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens", "n_predict")
# Families that report reasoning tokens for a model whose name contains "reason".
REASONING_FAMILIES = frozenset({"openai_chat", "openai_completions", "openai_responses", "gemini_generate",
                                "gemini_stream_generate"})
# Families whose streams are on unless the request says "stream": false.
STREAM_BY_DEFAULT = frozenset({"ollama_chat", "ollama_generate"})
# Families whose path, not the body, says whether the answer streams.
STREAM_BY_PATH = {"gemini_generate": False, "gemini_stream_generate": True}
EMBEDDING_FAMILIES = frozenset({"openai_embeddings", "ollama_embed"})

# The fake model's vocabulary; a response's words are picked from it by the request's hash.
VOCABULARY = (
    "the", "proxy", "measures", "every", "token", "as", "it", "streams", "through", "a",
    "small", "quiet", "gateway", "while", "prometheus", "scrapes", "latency", "and", "cost",
    "dashboards", "glow", "green", "until", "an", "alert", "wakes", "someone", "who", "reads",
    "the", "runbook", "calmly",
)
EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z: ids and timestamps are offsets from it


def words(text: str) -> int:
    """A token is a whitespace-separated word."""
    return len(text.split())


def text_of(content: Any) -> str:
    """The text of a message content: a string, or a list of parts that carry a `text` string."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part["text"] for part in content
                        if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


@dataclass(frozen=True)
class Prompt:
    """The prompt as word counts per message; a system prompt counts as a leading message."""

    segments: tuple[int, ...]
    conversational: bool  # a message list (cacheable prefix), not a prompt string
    texts: tuple[str, ...] = ()

    @property
    def input(self) -> int:
        return sum(self.segments)

    @property
    def cached(self) -> int:
        """The conversation prefix: every message but the last."""
        return sum(self.segments[:-1]) if self.conversational else 0

    @property
    def last(self) -> int:
        return self.segments[-1] if self.segments else 0


def _messages(system: Any, messages: Any) -> Prompt:
    texts = [text_of(system)] if text_of(system) else []
    if isinstance(messages, list):
        texts += [text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    return Prompt(tuple(words(t) for t in texts), True, tuple(texts))


def _strings(*values: Any) -> Prompt:
    """Prompt-string requests: strings, lists of strings, and token-id lists (one token per id)."""
    counts, texts = [], []
    for value in values:
        items = value if isinstance(value, list) and not _is_token_ids(value) else [value]
        for item in items:
            if isinstance(item, str):
                counts.append(words(item))
                texts.append(item)
            elif _is_token_ids(item):
                counts.append(len(item))
    return Prompt(tuple(counts), False, tuple(texts))


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in value)


def _gemini_prompt(body: JSON) -> Prompt:
    """Gemini: systemInstruction then contents, each a {parts: [{text}]}."""
    def text(content: Any) -> str:
        return text_of(content.get("parts")) if isinstance(content, dict) else ""

    contents = body.get("contents")
    messages = [{"content": text(c)} for c in contents] if isinstance(contents, list) else []
    return _messages(text(body.get("systemInstruction")), messages)


def _responses_prompt(body: JSON) -> Prompt:
    given = body.get("input")
    messages = [{"content": given}] if isinstance(given, str) else given
    return _messages(body.get("instructions"), messages)


PROMPT_READERS: dict[str, Callable[[JSON], Prompt]] = {
    "openai_chat": lambda b: _messages(None, b.get("messages")),
    "openai_completions": lambda b: _strings(b.get("prompt")),
    "openai_embeddings": lambda b: _strings(b.get("input")),
    "openai_responses": _responses_prompt,
    "anthropic_messages": lambda b: _messages(b.get("system"), b.get("messages")),
    "ollama_chat": lambda b: _messages(None, b.get("messages")),
    "ollama_generate": lambda b: _strings(b.get("system"), b.get("prompt")),
    "ollama_embed": lambda b: _strings(b.get("input")),
    "llamacpp_completion": lambda b: _strings(b.get("input_prefix"), b.get("prompt"),
                                              b.get("input_suffix")),
    "gemini_generate": _gemini_prompt,
    "gemini_stream_generate": _gemini_prompt,
}


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def output_budget(body: JSON) -> int:
    """The first positive output limit the request sets, else DEFAULT_OUTPUT_TOKENS."""
    options, config = body.get("options"), body.get("generationConfig")
    candidates = [body.get(key) for key in OUTPUT_KEYS]
    candidates.append(options.get("num_predict") if isinstance(options, dict) else None)
    candidates.append(config.get("maxOutputTokens") if isinstance(config, dict) else None)
    for value in candidates:
        if _positive_int(value):
            return value
    return DEFAULT_OUTPUT_TOKENS


def has_key(value: Any, key: str) -> bool:
    """Does `key` appear anywhere in a decoded JSON value (Anthropic's cache_control)?"""
    if isinstance(value, dict):
        return key in value or any(has_key(v, key) for v in value.values())
    if isinstance(value, list):
        return any(has_key(v, key) for v in value)
    return False


def request_digest(path: str, body: JSON) -> str:
    """A hash of the request that ignores how it is delivered, whitespace and key order.

    A proxy may add stream_options.include_usage on the client's behalf or re-serialize the body;
    ids derived from this hash stay the same, so a direct and a proxied call can be compared.
    `stream` is left out too, so a streamed answer has the same words as the JSON one.
    """
    canonical = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{path}\n{text}".encode()).hexdigest()


@dataclass(frozen=True)
class Call:
    """One generation request, reduced to what the response is computed from."""

    family: str
    path: str
    body: JSON
    model: str
    stream: bool
    prompt: Prompt
    output: int
    reasoning: int
    cache_write: int  # Anthropic cache_creation_input_tokens
    digest: str
    # OpenAI streams as llama-server sends them: `timings` on the last chunk (x-demo-backend)
    llamacpp: bool = False
    sse: bool = True  # Gemini streams: SSE with ?alt=sse, else a streamed JSON array

    @property
    def visible(self) -> int:
        """Output tokens that appear as text (reasoning tokens are reported, not shown)."""
        return self.output - self.reasoning

    @property
    def created(self) -> int:
        return EPOCH + int(self.digest[:8], 16) % 31_536_000

    def token_words(self) -> list[str]:
        start = int(self.digest[8:16], 16)
        return [VOCABULARY[(start + 7 * i) % len(VOCABULARY)] for i in range(self.visible)]

    def text(self) -> str:
        return " ".join(self.token_words())

    def deltas(self) -> list[str]:
        """One token per stream chunk; joined they give exactly text()."""
        return [w if i == 0 else " " + w for i, w in enumerate(self.token_words())]

    def ident(self, start: int = 0, length: int = 24) -> str:
        return self.digest[start:start + length]


def make_call(family: str, path: str, body: JSON, default_model: str) -> Call:
    """Apply the token rules to one decoded request body."""
    model = body.get("model") if isinstance(body.get("model"), str) and body.get("model") else default_model
    stream = body.get("stream")
    if family in STREAM_BY_PATH:
        stream = STREAM_BY_PATH[family]
    elif family in EMBEDDING_FAMILIES or not isinstance(stream, bool):
        stream = family in STREAM_BY_DEFAULT
    prompt = PROMPT_READERS[family](body)
    output = 0 if family in EMBEDDING_FAMILIES else output_budget(body)
    reasoning = output // 4 if family in REASONING_FAMILIES and "reason" in model.lower() else 0
    cache_write = 0
    if family == "anthropic_messages" and has_key(body, "cache_control"):
        cache_write = prompt.last
    return Call(family, path, body, model, stream, prompt, output, reasoning, cache_write,
                request_digest(path, body))

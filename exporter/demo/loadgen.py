"""A load generator for the demo: steady, mixed traffic so that every dashboard panel fills.

Every API family, several models each, about half of the calls streamed, conversations long
enough to hit the demo's prompt cache, and a small share of errors (upstream 5xx and 429,
asked of the demo upstream with its x-demo-status header): by default 0.1%, a fifth of the
99.5% availability SLO's budget, so the error panels move and the demo never pages itself.

Demo traffic is for the demo upstream only: where LLM_UPSTREAM points the exporter at a real
backend (docker-compose.yml passes it on), the load generator stays off (`off_reason`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from exporter.demo.upstream import DEMO_MODELS, HEADER_STATUS

ERROR_STATUSES = (500, 503, 429)
# The compose setting that sends the exporter's traffic to a real backend.
REAL_UPSTREAM_ENV = "LLM_UPSTREAM"
PROMPT = "Summarise the latest observability report for the platform team in three sentences"


@dataclass(frozen=True)
class Call:
    path: str
    body: dict
    headers: dict[str, str]


def _conversation(rng: random.Random) -> list[dict]:
    """One to four user turns: later turns hit the demo upstream's prompt cache."""
    turns = rng.randint(1, 4)
    messages = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"{PROMPT} (turn {turn})"})
        if turn < turns - 1:
            messages.append({"role": "assistant", "content": "Here is the summary you asked for."})
    return messages


def _cache_marked(messages: list[dict]) -> list[dict]:
    """Anthropic prompt caching: a cache_control breakpoint on the last message."""
    last = messages[-1]
    block = {"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}
    return [*messages[:-1], {**last, "content": [block]}]


def _gemini(messages: list[dict], output: int) -> dict:
    return {"systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
                         for m in messages],
            "generationConfig": {"maxOutputTokens": output}}


# api -> (path, body(model, stream, messages, output tokens)); one row per API family.
# A path with {model} names the model there (Gemini).
REQUEST_TEMPLATES: dict[str, tuple[str, Callable[[str, bool, list[dict], int], dict]]] = {
    "openai_chat": ("/v1/chat/completions", lambda model, stream, messages, output: {
        "model": model, "stream": stream, "max_tokens": output,
        "messages": [{"role": "system", "content": "Be brief."}, *messages]}),
    "openai_completions": ("/v1/completions", lambda model, stream, messages, output: {
        "model": model, "stream": stream, "max_tokens": output, "prompt": PROMPT}),
    "openai_embeddings": ("/v1/embeddings", lambda model, stream, messages, output: {
        "model": model, "input": [PROMPT] * len(messages)}),
    "openai_responses": ("/v1/responses", lambda model, stream, messages, output: {
        "model": model, "stream": stream, "max_output_tokens": output, "instructions": "Be brief.",
        "input": messages}),
    "anthropic_messages": ("/v1/messages", lambda model, stream, messages, output: {
        "model": model, "stream": stream, "max_tokens": output, "system": "Be brief.",
        "messages": _cache_marked(messages)}),
    "ollama_chat": ("/api/chat", lambda model, stream, messages, output: {
        "model": model, "stream": stream, "messages": messages, "options": {"num_predict": output}}),
    "ollama_generate": ("/api/generate", lambda model, stream, messages, output: {
        "model": model, "stream": stream, "prompt": PROMPT, "options": {"num_predict": output}}),
    "ollama_embed": ("/api/embed", lambda model, stream, messages, output: {"model": model, "input": PROMPT}),
    "llamacpp_completion": ("/completion", lambda model, stream, messages, output: {
        "stream": stream, "prompt": PROMPT, "n_predict": output, "cache_prompt": True}),
    "gemini_generate": ("/v1beta/models/{model}:generateContent",
                        lambda model, stream, messages, output: _gemini(messages, output)),
    "gemini_stream_generate": ("/v1beta/models/{model}:streamGenerateContent?alt=sse",
                               lambda model, stream, messages, output: _gemini(messages, output)),
}


def off_reason(environ: Mapping[str, str]) -> str | None:
    """Why the load generator must not send anything: its target proxies to a real backend, which
    would get (and bill) made-up traffic, some of it asking for errors. None: go ahead."""
    if not environ.get(REAL_UPSTREAM_ENV, "").strip():
        return None
    # Not the URL itself: it may carry credentials.
    return f"loadgen: {REAL_UPSTREAM_ENV} is set: the exporter sends to a real backend, so the demo load stays off"


def next_call(rng: random.Random, error_share: float) -> Call:
    api = rng.choice(tuple(REQUEST_TEMPLATES))
    path, body = REQUEST_TEMPLATES[api]
    model = rng.choice(DEMO_MODELS[api])
    body = body(model, rng.random() < 0.5, _conversation(rng), rng.randint(8, 64))
    headers = {HEADER_STATUS: str(rng.choice(ERROR_STATUSES))} if rng.random() < error_share else {}
    return Call(path.replace("{model}", model), body, headers)


async def run(target: str, rate: float, concurrency: int, duration: float, error_share: float,
              seed: int | None = None) -> dict[int, int]:
    """Send about `rate` requests per second for `duration` seconds (0: until cancelled).

    Returns how many responses had each status (0 for transport errors).
    """
    rng = random.Random(seed)
    statuses: dict[int, int] = {}
    slots = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + duration if duration else None
    async with httpx.AsyncClient(base_url=target.rstrip("/"), timeout=120) as client:

        async def one(call: Call) -> None:
            try:
                async with client.stream("POST", call.path, json=call.body, headers=call.headers) as response:
                    await response.aread()
                    status = response.status_code
            except httpx.HTTPError:
                status = 0
            finally:
                slots.release()
            statuses[status] = statuses.get(status, 0) + 1

        tasks: set[asyncio.Task] = set()
        while deadline is None or time.monotonic() < deadline:
            await slots.acquire()
            task = asyncio.create_task(one(next_call(rng, error_share)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    return statuses

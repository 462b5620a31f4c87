"""What the proxy learned about one request: the single record that feeds metrics and the log."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Usage:
    """Token usage as the backend reported it, already mapped to the shared token types.

    None means "not reported", which is different from 0: a response with no usage at all
    counts towards llm_usage_missing_total and adds no tokens. So does a response with an
    implausible count (exporter.families.MAX_TOKENS): one absurd number makes all of its
    numbers untrustworthy, and none of them may reach a counter or the request log.
    """

    input: int | None = None
    cached_input: int | None = None
    cache_write_input: int | None = None
    output: int | None = None
    reasoning: int | None = None
    # The backend's own generation speed (llama.cpp timings, Ollama eval_count/eval_duration).
    output_tokens_per_second: float | None = None
    # Time the backend spent loading the model for this request (Ollama load_duration).
    load_seconds: float | None = None
    implausible: bool = False  # a count was out of range: nothing here is reported

    def merge(self, other: Usage) -> None:
        """Take every field `other` reports; later events carry the more complete numbers.
        Once any part of a response was implausible, the whole response reports nothing."""
        if self.implausible:
            return
        if other.implausible:
            for name in vars(self):
                setattr(self, name, None)
            self.implausible = True
            return
        for name, value in vars(other).items():
            if value is not None:
                setattr(self, name, value)

    def add(self, other: Usage) -> None:
        """Add the report of another result of the same response (prompt lists, n > 1).

        Counts add up where either reports them; the speed and load time are the last ones reported. One
        implausible result makes the whole response implausible, as in merge().
        """
        if self.implausible or other.implausible:
            self.merge(Usage(implausible=True))
            return
        for name, value in vars(other).items():
            if value is None or name == "implausible":
                continue
            mine = getattr(self, name)
            if name in ("output_tokens_per_second", "load_seconds") or mine is None:
                setattr(self, name, value)
            else:
                setattr(self, name, min(mine + value, 2**53))  # exact in a float, like each count

    @property
    def reported(self) -> bool:
        return self.input is not None or self.output is not None


@dataclass
class Observation:
    """One proxied request, from the request received to the last byte sent.

    The request log's `requests` columns take its fields' names, except: model_label is a metric
    label only, each Usage count becomes `<type>_tokens` (input_tokens, ...), and the log stores
    the output_tokens_per_second property (exporter.requestlog.row_of).
    """

    request_id: str
    ts: float  # unix seconds when the request was received
    upstream: str
    api: str
    model: str  # the requested model, as the client sent it ("unknown" when absent)
    model_label: str  # the bounded value used as the `model` label
    stream: bool
    request_bytes: int
    status_code: int = 0  # the status the client got; 499 when it went away
    error_type: str | None = None  # one of catalog.ERROR_TYPES
    response_model: str | None = None
    duration_seconds: float = 0.0
    ttft_seconds: float | None = None
    response_bytes: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    key_id: str | None = None
    user: str | None = None
    session_id: str | None = None

    @property
    def output_tokens_per_second(self) -> float | None:
        """The backend's own figure where it reports one, else output tokens over generation time."""
        if self.usage.output_tokens_per_second:
            return self.usage.output_tokens_per_second
        output = self.usage.output
        if not output:
            return None
        generating = self.duration_seconds - (self.ttft_seconds or 0.0)
        return output / generating if generating > 0 else None

    @property
    def time_per_output_token(self) -> float | None:
        """(duration - ttft) / (output - 1), defined for streams with at least two output tokens."""
        output = self.usage.output
        if self.ttft_seconds is None or not output or output < 2:
            return None
        return max(self.duration_seconds - self.ttft_seconds, 0.0) / (output - 1)

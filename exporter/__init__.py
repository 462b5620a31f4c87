"""llm-exporter: a streaming proxy that measures every LLM call."""

__version__ = "0.1.0"
